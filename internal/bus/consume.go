package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	Batch         int
	DeliverPolicy jetstream.DeliverPolicy
	OptStartTime  *time.Time
	// Backoff is the redelivery delay after a retryable error, given the
	// delivery count. Default 1s doubling to 1m.
	Backoff func(delivered uint64) time.Duration
	// Grace is how long in-flight handlers keep their context after ctx is
	// done; then it is cancelled and an unfinished message is handed back.
	Grace time.Duration
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
	d := time.Second
	for i := uint64(1); i < delivered && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Consumer creates or updates the durable consumer of spec.
func (c *Conn) Consumer(ctx context.Context, spec ConsumerSpec) (jetstream.Consumer, error) {
	spec = spec.withDefaults()
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
	cons, err := c.JS.CreateOrUpdateConsumer(ctx, spec.Stream, cfg)
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
	return s
}

// Consume runs h for every message of the durable consumer of spec until ctx
// is done; then it stops fetching and waits for in-flight handlers (drain).
// The one ack policy of the project:
//
//   - h returns nil: the message is acknowledged (and the ack confirmed);
//   - h returns an error marked Permanent, or a malformed-event error from
//     package events: the message is terminated with the error as reason;
//   - h returns an error from Retry: it is redelivered after that delay;
//   - any other error: it is redelivered after spec.Backoff(delivery count).
//
// While h runs, Consume reports progress every AckWait/3 so a long handler
// keeps its message; a process that dies stops doing so and the message goes
// to another consumer after the ack wait.
func (c *Conn) Consume(ctx context.Context, spec ConsumerSpec, h Handler) error {
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
		wg.Go(func() {
			c.work(ctx, hctx, cons, spec, h, log)
		})
	}
	wg.Wait()
	return nil
}

func (c *Conn) work(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, h Handler, log *slog.Logger) {
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
		for raw := range batch.Messages() {
			c.handle(hctx, raw, spec, h, log)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			log.Warn("fetch batch", "err", err)
			sleep(ctx, 500*time.Millisecond)
		}
	}
}

func (c *Conn) handle(ctx context.Context, raw jetstream.Msg, spec ConsumerSpec, h Handler, log *slog.Logger) {
	m := &Msg{Subject: raw.Subject(), Data: raw.Data(), Header: raw.Headers(), raw: raw}
	if md, err := raw.Metadata(); err == nil {
		m.Delivered = md.NumDelivered
		m.StreamSeq = md.Sequence.Stream
		m.Time = md.Timestamp
	}
	if ctx.Err() != nil {
		// Shutting down: hand it back at once.
		_ = raw.Nak()
		return
	}

	done := make(chan struct{})
	go func() {
		t := time.NewTicker(spec.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := raw.InProgress(); err != nil {
					log.Warn("in progress", "subject", m.Subject, "err", err)
				}
			}
		}
	}()
	err := safeCall(ctx, h, m)
	close(done)

	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var retry *retryError
	switch {
	case err == nil:
		err = raw.DoubleAck(actx)
		if err != nil {
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
