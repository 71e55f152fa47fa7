package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/events"
)

// ConsumerSpec describes a durable pull consumer and how this process runs it.
type ConsumerSpec struct {
	Stream  string
	Durable string
	// FilterSubjects narrows the consumer; empty takes the whole stream.
	FilterSubjects []string
	// AckWait is how long a message may go without an ack or a sign of life
	// before the server redelivers it. Default 30s.
	AckWait time.Duration
	// MaxDeliver caps deliveries; default -1, unlimited.
	MaxDeliver int
	// MaxAckPending caps unacknowledged messages across every process that
	// shares the durable: a fleet-wide limit on work in flight.
	MaxAckPending int
	// Concurrency is how many handlers this process runs at once. Default 1.
	Concurrency int
	// Batch is how many messages one worker fetches at a time and handles in
	// order. Default 1; raise it for short handlers and high rates.
	Batch int
	// BatchWait is how long ConsumeBatch gathers the rest of a batch once
	// its first message has come; zero batches adaptively: each batch is
	// what has arrived by the time the handler is free (see ConsumeBatch).
	BatchWait time.Duration
	// IdleWait is how long one pull of ConsumeBatch waits for a first
	// message before pulling again. Default 30s.
	IdleWait      time.Duration
	DeliverPolicy jetstream.DeliverPolicy
	OptStartTime  *time.Time
	// Backoff is the redelivery delay after a retryable error, given the
	// delivery count. Default 1s doubling to 1m.
	Backoff func(delivered uint64) time.Duration
	// Grace is how long in-flight handlers keep their context after ctx is
	// done; then it is cancelled and an unfinished message is handed back.
	Grace time.Duration
	// AckAsync sends the ack of a handled message without waiting for the
	// server's reply, and confirms the acks of each fetched batch with one
	// round trip (a flush) after its last message, rather than one round
	// trip per message (DoubleAck). For batch consumers of short handlers.
	// JetStream acks are per message either way; what is given up is only
	// learning at once that one ack was lost: such a message comes back
	// after AckWait, as one whose DoubleAck failed does, and handlers must
	// tolerate a redelivery in any case. Leave it off where each handled
	// message is expensive to repeat (a call).
	AckAsync bool
	// AfterBatch, if set, runs after the messages of each fetched batch are
	// handled and their acks sent, before the acks are confirmed: the place
	// for a batch consumer to persist what its handlers did, once per batch.
	// An error is logged; the messages stay acknowledged. With Concurrency
	// above 1 it runs on several workers at once.
	AfterBatch func(ctx context.Context) error
	// ReadAhead keeps a pull running ahead of the handlers (up to Batch
	// messages), so the next batch is on its way while one is handled
	// instead of a round trip after each; a batch is then what has come,
	// up to Batch. For a single consumer of a high rate (the observer).
	// Leave it off where processes share the work (callers): a message read
	// ahead waits in this process while another may be idle.
	ReadAhead bool
}

// Handler handles one message. See Consume for what its error means.
type Handler func(ctx context.Context, m *Msg) error

// Msg is one delivered message.
type Msg struct {
	Subject   string
	Data      []byte
	Header    nats.Header
	Delivered uint64
	StreamSeq uint64
	Time      time.Time
	raw       jetstream.Msg
}

func newMsg(raw jetstream.Msg) *Msg {
	m := &Msg{Subject: raw.Subject(), Data: raw.Data(), Header: raw.Headers(), raw: raw}
	if md, err := raw.Metadata(); err == nil {
		m.Delivered = md.NumDelivered
		m.StreamSeq = md.Sequence.Stream
		m.Time = md.Timestamp
	}
	return m
}

// InProgress tells the server the message is still being worked on, resetting
// its ack wait. Consume does this by itself while a handler runs.
func (m *Msg) InProgress() error { return m.raw.InProgress() }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth redelivering: the message is terminated.
func Permanent(err error) error { return &permanentError{err} }

type retryError struct {
	err   error
	after time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Retry asks for redelivery after the given delay.
func Retry(err error, after time.Duration) error { return &retryError{err, after} }

// IsPermanent reports whether the handler error terminates the message:
// marked Permanent, or a malformed payload.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) ||
		errors.Is(err, events.ErrMalformed) ||
		errors.Is(err, events.ErrUnknownType) ||
		errors.Is(err, events.ErrMissing) ||
		errors.Is(err, events.ErrInvalid) ||
		errors.Is(err, events.ErrTooLarge)
}

// DefaultBackoff is 1s doubling with each delivery, capped at one minute.
func DefaultBackoff(delivered uint64) time.Duration {
	return backoff.Exponential(int(min(delivered, 64)), time.Second, time.Minute, 2)
}

// Consumer creates or updates the durable consumer of spec. Where a durable
// starts is decided once, when it is created: an existing one keeps its
// deliver policy and start (JetStream refuses to change them, and keeps its
// position anyway), so spec's DeliverPolicy and OptStartTime only shape a
// new consumer.
func (c *Conn) Consumer(ctx context.Context, spec ConsumerSpec) (jetstream.Consumer, error) {
	spec = spec.withDefaults()
	existing, err := c.js.Consumer(ctx, spec.Stream, spec.Durable)
	switch {
	case err == nil:
		have := existing.CachedInfo().Config
		spec.DeliverPolicy, spec.OptStartTime = have.DeliverPolicy, have.OptStartTime
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("consumer %s on %s: %w", spec.Durable, spec.Stream, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        spec.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		MaxDeliver:     spec.MaxDeliver,
		MaxAckPending:  spec.MaxAckPending,
		DeliverPolicy:  spec.DeliverPolicy,
		OptStartTime:   spec.OptStartTime,
		FilterSubjects: spec.FilterSubjects,
	}
	if len(cfg.FilterSubjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = cfg.FilterSubjects[0], nil
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, spec.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", spec.Durable, spec.Stream, err)
	}
	return cons, nil
}

func (s ConsumerSpec) withDefaults() ConsumerSpec {
	if s.AckWait <= 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxDeliver == 0 {
		s.MaxDeliver = -1
	}
	if s.Concurrency < 1 {
		s.Concurrency = 1
	}
	if s.Batch < 1 {
		s.Batch = 1
	}
	if s.Backoff == nil {
		s.Backoff = DefaultBackoff
	}
	if s.IdleWait <= 0 {
		s.IdleWait = 30 * time.Second
	}
	return s
}

// Consume runs h for every message of the durable consumer of spec until ctx
// is done; then it stops fetching and waits for in-flight handlers (drain).
// The one ack policy of the project:
//
//   - h returns nil: the message is acknowledged (and the ack confirmed: at
//     once, or with spec.AckAsync once for the whole batch);
//   - h returns an error marked Permanent, or a malformed-event error from
//     package events: the message is terminated with the error as reason;
//   - h returns an error from Retry: it is redelivered after that delay;
//   - any other error: it is redelivered after spec.Backoff(delivery count).
//
// While h runs, Consume reports progress every AckWait/3 so a long handler
// keeps its message; a process that dies stops doing so and the message goes
// to another consumer after the ack wait.
func (c *Conn) Consume(ctx context.Context, spec ConsumerSpec, h Handler) error {
	return c.run(ctx, spec, func(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, log *slog.Logger) {
		c.work(ctx, hctx, cons, spec, h, log)
	})
}

// run is what Consume and ConsumeBatch share: the consumer, the handlers'
// context that outlives ctx by spec.Grace, and spec.Concurrency workers.
func (c *Conn) run(ctx context.Context, spec ConsumerSpec, work func(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, log *slog.Logger)) error {
	spec = spec.withDefaults()
	cons, err := c.Consumer(ctx, spec)
	if err != nil {
		return err
	}
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	stop := context.AfterFunc(ctx, func() {
		if spec.Grace <= 0 {
			cancelHandlers()
			return
		}
		time.AfterFunc(spec.Grace, cancelHandlers)
	})
	defer stop()

	log := c.log.With("stream", spec.Stream, "consumer", spec.Durable)
	var wg sync.WaitGroup
	for range spec.Concurrency {
		wg.Go(func() { work(ctx, hctx, cons, spec, log) })
	}
	wg.Wait()
	return nil
}

func (c *Conn) work(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, h Handler, log *slog.Logger) {
	if spec.ReadAhead {
		c.workAhead(ctx, hctx, cons, spec, h, log)
		return
	}
	var inHand atomic.Pointer[[]*Msg]
	pctx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { keepInProgress(pctx, spec.AckWait/3, &inHand, log) })
	defer wg.Wait()
	defer stopProgress()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(spec.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("fetch", "err", err)
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		n := 0
		for raw := range batch.Messages() {
			c.handle(hctx, raw, spec, h, &inHand, log)
			n++
		}
		if n > 0 {
			c.settleBatch(hctx, spec, log)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			log.Warn("fetch batch", "err", err)
			sleep(ctx, 500*time.Millisecond)
		}
	}
}

// workAhead is work with spec.ReadAhead: each batch is what was read
// ahead, handled one message at a time, and ends as a fetched one does.
func (c *Conn) workAhead(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, h Handler, log *slog.Logger) {
	c.readAhead(ctx, cons, spec, log, func(batch []*Msg, inHand *atomic.Pointer[[]*Msg]) {
		for _, m := range batch {
			if hctx.Err() != nil {
				_ = m.raw.Nak()
				continue
			}
			inHand.Store(&[]*Msg{m})
			err := safeCall(hctx, h, m)
			inHand.Store(nil)
			settle(hctx, m, err, spec, spec.AckAsync, log)
		}
		c.settleBatch(hctx, spec, log)
	})
}

// keepInProgress reports the messages in hand, if any, as in progress every
// period: one goroutine per worker rather than one per message. A message
// is reported within a period of its handler starting, and never after its
// handler has returned but for one report racing the ack, which the server
// ignores.
func keepInProgress(ctx context.Context, every time.Duration, inHand *atomic.Pointer[[]*Msg], log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b := inHand.Load()
			if b == nil {
				continue
			}
			for _, m := range *b {
				if err := m.raw.InProgress(); err != nil {
					log.Warn("in progress", "subject", m.Subject, "err", err)
				}
			}
		}
	}
}

func (c *Conn) handle(ctx context.Context, raw jetstream.Msg, spec ConsumerSpec, h Handler, inHand *atomic.Pointer[[]*Msg], log *slog.Logger) {
	m := newMsg(raw)
	if ctx.Err() != nil {
		// Shutting down: hand it back at once.
		_ = raw.Nak()
		return
	}

	inHand.Store(&[]*Msg{m})
	err := safeCall(ctx, h, m)
	inHand.Store(nil)
	settle(ctx, m, err, spec, spec.AckAsync, log)
}

// settle applies the ack policy (see Consume) to one handled message. With
// async the ack is sent without waiting for the server's reply; the caller
// confirms it with a flush.
func settle(ctx context.Context, m *Msg, err error, spec ConsumerSpec, async bool, log *slog.Logger) {
	raw := m.raw
	var retry *retryError
	switch {
	case err == nil && async:
		if err := raw.Ack(); err != nil {
			log.Warn("ack", "subject", m.Subject, "seq", m.StreamSeq, "err", err)
		}
		return
	case err == nil:
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		defer cancel()
		if err := raw.DoubleAck(actx); err != nil {
			log.Warn("ack", "subject", m.Subject, "seq", m.StreamSeq, "err", err)
		}
		return
	case IsPermanent(err):
		log.Error("message terminated", "subject", m.Subject, "seq", m.StreamSeq, "delivered", m.Delivered, "reason", err)
		err = raw.TermWithReason(truncate(err.Error(), 256))
	case errors.As(err, &retry):
		log.Info("message redelivery requested", "subject", m.Subject, "seq", m.StreamSeq, "delay", retry.after, "reason", err)
		err = raw.NakWithDelay(retry.after)
	case ctx.Err() != nil:
		log.Info("message handed back on shutdown", "subject", m.Subject, "seq", m.StreamSeq)
		err = raw.Nak()
	default:
		delay := spec.Backoff(m.Delivered)
		log.Warn("handler failed, will redeliver", "subject", m.Subject, "seq", m.StreamSeq, "delivered", m.Delivered, "delay", delay, "err", err)
		err = raw.NakWithDelay(delay)
	}
	if err != nil {
		log.Warn("nak/term", "subject", m.Subject, "seq", m.StreamSeq, "err", err)
	}
}

// ackTimeout bounds each wait for the server's answer to an ack, and a
// batch's AfterBatch: they run during a drain too, when ctx is done.
const ackTimeout = 5 * time.Second

// settleBatch ends a fetched batch: AfterBatch, then in AckAsync mode one
// flush, a round trip that returns once the server has read everything this
// connection sent before it, the batch's acks included (a server reads a
// connection in order).
func (c *Conn) settleBatch(ctx context.Context, spec ConsumerSpec, log *slog.Logger) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	if spec.AfterBatch != nil {
		if err := spec.AfterBatch(actx); err != nil {
			log.Warn("after batch", "err", err)
		}
	}
	if spec.AckAsync {
		if err := c.nc.FlushWithContext(actx); err != nil {
			log.Warn("confirm batch acks: unconfirmed messages come back after the ack wait", "err", err)
		}
	}
}

// safeCall turns a handler panic into an ordinary error so one poison message
// cannot crash the process. The message is redelivered with backoff rather
// than terminated: a panic is our bug, and the work it carries must not be lost.
func safeCall(ctx context.Context, h Handler, m *Msg) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, m)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
