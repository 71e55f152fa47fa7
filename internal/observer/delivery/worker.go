package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/sink"
)

// maxReason bounds the reason carried by a dead letter; the full text is in
// the log line written beside it.
const maxReason = 1024

// worker delivers one sink: its consumer, its plugin, its counters.
type worker struct {
	cfg     config.Sink
	plugin  *sink.Supervisor
	conn    *bus.Conn
	log     *slog.Logger
	met     sinkMetrics
	now     func() time.Time
	stream  string
	durable string
	filters []string
	kind    string // the sink.Record kind handed to the plugin
	minRank int

	// deliverMu keeps to one Deliver call at a time, as the Sink interface
	// promises plugins, when DeliverTo runs beside Run.
	deliverMu sync.Mutex

	delivered, retried, dead atomic.Uint64

	mu        sync.Mutex
	started   bool
	pluginErr string // the last health check or transport failure; "" when fine
	batchErr  string // why the last batch delivered nothing; "" when fine
	lastErr   string
}

func newWorker(cfg config.Sink, sup *sink.Supervisor, conn *bus.Conn, log *slog.Logger, met *metrics, now func() time.Time) *worker {
	w := &worker{
		cfg:     cfg,
		plugin:  sup,
		conn:    conn,
		log:     log.With("sink", cfg.Name),
		met:     met.forSink(cfg.Name),
		now:     now,
		durable: "sink-" + cfg.Name,
		minRank: events.SeverityRank(cfg.MinSeverity),
	}
	if cfg.Kind == KindAlert {
		w.stream, w.filters, w.kind = events.StreamAlerts, []string{events.AlertAll}, sink.KindAlert
	} else {
		w.stream, w.filters, w.kind = events.StreamEvents, cfg.Subjects, sink.KindEvent
	}
	return w
}

// start starts the plugin process unless it runs already.
func (w *worker) start(ctx context.Context) error {
	if err := w.plugin.Start(ctx); err != nil {
		w.notePlugin(err)
		return fmt.Errorf("sink %s: %w", w.cfg.Name, err)
	}
	w.mu.Lock()
	w.started = true
	w.pluginErr = ""
	w.mu.Unlock()
	return nil
}

// spec is the consumer of this sink. The ack wait covers gathering a batch
// and one Deliver call with room to settle the results, so a record in hand
// is never redelivered behind the worker's back.
func (w *worker) spec() bus.ConsumerSpec {
	return bus.ConsumerSpec{
		Stream:         w.stream,
		Durable:        w.durable,
		FilterSubjects: w.filters,
		AckWait:        max(30*time.Second, 2*(w.cfg.BatchWait+w.cfg.Timeout)),
		MaxDeliver:     -1, // the worker counts attempts, so the last one ends as a dead letter
		MaxAckPending:  max(1000, 2*w.cfg.BatchSize),
	}
}

// consumer creates the sink's durable consumer, or updates it to the
// configuration while keeping where it started (JetStream keeps its position
// too). A new sink starts where sinks[].start says: by default "now", so a
// sink added to a running system does not replay the stream's 30 days of
// alerts; `observer replay --deliver` or start: all sends older ones.
func (w *worker) consumer(ctx context.Context) (jetstream.Consumer, error) {
	spec := w.spec()
	existing, err := w.conn.JS.Consumer(ctx, w.stream, w.durable)
	switch {
	case err == nil:
		c := existing.CachedInfo().Config
		spec.DeliverPolicy, spec.OptStartTime = c.DeliverPolicy, c.OptStartTime
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		all, from, err := w.cfg.StartFrom(w.now())
		switch {
		case err != nil:
			return nil, fmt.Errorf("sinks.%s.start: %w", w.cfg.Name, err)
		case all:
			spec.DeliverPolicy = jetstream.DeliverAllPolicy
		case from.IsZero():
			spec.DeliverPolicy = jetstream.DeliverNewPolicy
		default:
			from = from.UTC()
			spec.DeliverPolicy, spec.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
		}
	default:
		return nil, fmt.Errorf("consumer %s on %s: %w", w.durable, w.stream, err)
	}
	return w.conn.Consumer(ctx, spec)
}

// run delivers batches until ctx is done. The batch in hand when ctx ends is
// still delivered and settled: that is the drain.
func (w *worker) run(ctx context.Context, cons jetstream.Consumer, idle time.Duration) {
	for ctx.Err() == nil {
		msgs, err := w.fetch(ctx, cons, idle)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.log.Warn("sink fetch failed", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				if c, cerr := w.consumer(ctx); cerr == nil {
					cons = c
				}
			}
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) > 0 {
			w.process(context.WithoutCancel(ctx), msgs)
		}
	}
}

// fetch gathers one batch: it waits (up to idle) for a first record, then up
// to batch_wait from there for the rest of batch_size. Pulling exactly what
// will be delivered, rather than prefetching, keeps every record's ack wait
// running only while the worker holds it.
func (w *worker) fetch(ctx context.Context, cons jetstream.Consumer, idle time.Duration) ([]jetstream.Msg, error) {
	ictx, cancel := context.WithTimeout(ctx, idle)
	first, err := cons.Next(jetstream.FetchContext(ictx))
	cancel()
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
			return nil, nil
		}
		return nil, err
	}
	msgs := []jetstream.Msg{first}
	if w.cfg.BatchSize == 1 {
		return msgs, nil
	}
	b, err := cons.Fetch(w.cfg.BatchSize-1, jetstream.FetchMaxWait(w.cfg.BatchWait))
	if err != nil {
		// Deliver what is in hand; the next pull will tell if it persists.
		w.log.Warn("sink fetch failed", "err", err)
		return msgs, nil
	}
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		w.log.Warn("sink fetch incomplete", "err", err)
	}
	return msgs, nil
}

// item is one fetched message on its way through a batch.
type item struct {
	msg       jetstream.Msg
	delivered uint64 // delivery count, 1 on the first
	seq       uint64
	ev        events.Event
}

func (it *item) refID(stream string) string {
	if it.ev != nil {
		return it.ev.Head().ID
	}
	if id := it.msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	return fmt.Sprintf("%s:%d", stream, it.seq)
}

func (it *item) fingerprint() string {
	if a, ok := it.ev.(*events.Alert); ok {
		return a.Fingerprint
	}
	return ""
}

// process delivers one batch and settles every message of it.
func (w *worker) process(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]*item, 0, len(msgs))
	batch := make([]sink.Record, 0, len(msgs))
	for _, msg := range msgs {
		it := &item{msg: msg}
		if md, err := msg.Metadata(); err == nil {
			it.delivered, it.seq = md.NumDelivered, md.Sequence.Stream
		}
		ev, err := events.Decode(msg.Data())
		if err != nil {
			w.deadLetter(ctx, it, "malformed event: "+err.Error())
			continue
		}
		it.ev = ev
		if a, ok := ev.(*events.Alert); ok && events.SeverityRank(a.Severity) < w.minRank {
			w.met.filtered.Inc()
			_ = msg.Ack()
			continue
		}
		if w.cfg.Kind == KindAlert && ev.Head().Type != events.TypeAlert {
			w.deadLetter(ctx, it, fmt.Sprintf("a %s event on alert subject %s", ev.Head().Type, msg.Subject()))
			continue
		}
		if it.delivered > uint64(w.cfg.MaxAttempts) {
			// Only when the observer died holding it, again and again.
			w.deadLetter(ctx, it, fmt.Sprintf("no answer from the sink in %d deliveries", it.delivered-1))
			continue
		}
		items = append(items, it)
		batch = append(batch, sink.Record{ID: ev.Head().ID, Kind: w.kind, Subject: msg.Subject(), Data: msg.Data()})
	}
	if len(batch) > 0 {
		results := w.deliver(ctx, batch)
		w.noteBatch(results)
		for i, it := range items {
			w.settle(ctx, it, results[i])
		}
	}
	// Acks, naks and terms are sent without waiting one by one; one flush
	// per batch makes sure the server has them all.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := w.conn.NC.FlushWithContext(fctx); err != nil {
		w.log.Warn("sink acks not confirmed; unconfirmed records will be redelivered", "err", err)
	}
}

// deliver makes one Deliver call and returns one result per record, in
// order. A failed call (plugin crashed or restarting, timed out) makes every
// record retryable: its fate is unknown and at-least-once must hold.
func (w *worker) deliver(ctx context.Context, batch []sink.Record) []sink.Result {
	w.deliverMu.Lock()
	defer w.deliverMu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	start := time.Now()
	res, err := w.plugin.Deliver(dctx, batch)
	w.met.latency.Observe(time.Since(start).Seconds())
	w.met.batchSize.Observe(float64(len(batch)))
	switch {
	case err != nil:
		reason := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			reason = fmt.Sprintf("no answer within %s: %s", w.cfg.Timeout, reason)
		}
		if errors.Is(err, sink.ErrUnavailable) {
			w.notePlugin(err)
		}
		w.log.Warn("sink delivery failed", "records", len(batch), "err", reason)
		return sink.Each(batch, sink.Retryable, reason, 0)
	case len(res) != len(batch):
		// The SDK aligns results to the batch; never trust a count blindly.
		return sink.Each(batch, sink.Retryable, fmt.Sprintf("plugin answered %d results for %d records", len(res), len(batch)), 0)
	}
	w.notePlugin(nil)
	return res
}

// settle applies the policy to one record's result.
func (w *worker) settle(ctx context.Context, it *item, r sink.Result) {
	switch r.Status {
	case sink.Delivered:
		if w.cfg.Kind == KindAlert {
			if err := w.emit(ctx, w.receipt(it)); err != nil {
				// Acknowledged only once its events are published: the
				// alert goes again, at least once.
				w.log.Error("delivery receipt not recorded, will redeliver", "ref_id", it.refID(w.stream), "err", err)
				w.retry(it, w.backoff(it.delivered))
				return
			}
		}
		_ = it.msg.Ack()
		w.delivered.Add(1)
		w.met.delivered.Inc()
	case sink.Permanent:
		w.deadLetter(ctx, it, orElse(r.Reason, "permanent failure"))
	default:
		reason := orElse(r.Reason, "retryable failure")
		if it.delivered >= uint64(w.cfg.MaxAttempts) {
			w.deadLetter(ctx, it, fmt.Sprintf("%s (after %d attempts)", reason, it.delivered))
			return
		}
		delay := w.retryDelay(r, it.delivered)
		w.log.Info("sink record will be retried", "ref_id", it.refID(w.stream), "attempt", it.delivered, "delay", delay, "reason", reason)
		w.retry(it, delay)
	}
}

func (w *worker) retry(it *item, delay time.Duration) {
	_ = it.msg.NakWithDelay(delay)
	w.retried.Add(1)
	w.met.retried.Inc()
}

// retryDelay is when a retryable record goes again after its n-th attempt:
// when the sink said (a Retry-After, a Telegram retry_after), since the
// channel knows best when it will take more, else the backoff.
func (w *worker) retryDelay(r sink.Result, n uint64) time.Duration {
	if r.RetryAfter > 0 {
		return r.RetryAfter
	}
	return w.backoff(n)
}

// backoff is the redelivery delay after the n-th delivery failed: backoff
// doubling per delivery, capped at max_backoff.
func (w *worker) backoff(n uint64) time.Duration {
	return backoff.Exponential(int(min(n, 64)), w.cfg.Backoff, w.cfg.MaxBackoff, 2)
}

// deadLetter records it as a dead letter on the bus and in the log, then
// terminates it. If the dead letter cannot be published the message is
// redelivered instead: it is never dropped silently.
func (w *worker) deadLetter(ctx context.Context, it *item, reason string) {
	ref := it.refID(w.stream)
	d := &events.Delivery{
		Sink:        w.cfg.Name,
		Outcome:     events.DeliveryDeadLetter,
		RefID:       ref,
		Fingerprint: it.fingerprint(),
		Attempts:    int(it.delivered),
		Message:     truncate(reason, maxReason),
	}
	if it.ev != nil {
		d.RefType = it.ev.Head().Type
	}
	d.ID = eventID(w.cfg.Name, d.Outcome, ref)
	if err := w.emit(ctx, d); err != nil {
		w.log.Error("dead letter not recorded, will redeliver", "ref_id", ref, "reason", reason, "err", err)
		w.retry(it, w.backoff(it.delivered))
		return
	}
	w.log.Error("dead letter", "ref_id", ref, "ref_type", d.RefType, "fingerprint", d.Fingerprint,
		"subject", it.msg.Subject(), "seq", it.seq, "attempts", it.delivered, "reason", reason)
	_ = it.msg.TermWithReason(truncate(reason, 256))
	w.dead.Add(1)
	w.met.dead.Inc()
	w.noteErr(reason)
}

func (w *worker) receipt(it *item) *events.Delivery {
	ref := it.refID(w.stream)
	d := &events.Delivery{
		Sink:        w.cfg.Name,
		Outcome:     events.DeliveryDelivered,
		RefID:       ref,
		RefType:     it.ev.Head().Type,
		Fingerprint: it.fingerprint(),
		Attempts:    int(it.delivered),
	}
	d.ID = eventID(w.cfg.Name, d.Outcome, ref)
	return d
}

func (w *worker) emit(ctx context.Context, d *events.Delivery) error {
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return w.conn.Emit(ectx, d)
}

// eventID derives a receipt's or dead letter's id from what it is about, so
// that the same record settled twice (redelivered after the observer died
// between publishing and acknowledging) is stored once: the id is the
// Nats-Msg-Id the stream deduplicates on.
func eventID(sinkName, outcome, ref string) string {
	h := sha256.Sum256([]byte(sinkName + "\x00" + outcome + "\x00" + ref))
	return hex.EncodeToString(h[:16])
}

// watch checks the plugin's health every interval until ctx is done. A check
// on a dead plugin restarts it, so a crash between batches is repaired
// before the next batch needs it.
func (w *worker) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, max(every/2, w.cfg.Timeout))
		err := w.plugin.Health(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.log.Warn("sink unhealthy", "err", err)
		}
		w.notePlugin(err)
	}
}

func (w *worker) notePlugin(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.pluginErr = ""
		return
	}
	w.pluginErr = err.Error()
	w.lastErr = w.pluginErr
}

// noteBatch records whether the sink works: a batch that delivered anything
// says yes, one that delivered nothing says no, with the first reason.
func (w *worker) noteBatch(results []sink.Result) {
	failure := ""
	for _, r := range results {
		if r.Status == sink.Delivered {
			failure = ""
			break
		}
		if failure == "" {
			failure = orElse(r.Reason, r.Status.String())
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batchErr = failure
	if failure != "" {
		w.lastErr = failure
	}
}

func (w *worker) noteErr(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = reason
}

func (w *worker) status() SinkStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := SinkStatus{
		Name:        w.cfg.Name,
		Kind:        w.cfg.Kind,
		Healthy:     w.started && w.pluginErr == "" && w.batchErr == "",
		Delivered:   w.delivered.Load(),
		Retried:     w.retried.Load(),
		DeadLetters: w.dead.Load(),
		LastError:   w.lastErr,
	}
	if !w.started && st.LastError == "" {
		st.LastError = "plugin not started"
	}
	return st
}

func (w *worker) backlog(ctx context.Context) (uint64, error) {
	cons, err := w.conn.JS.Consumer(ctx, w.stream, w.durable)
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo()
	return info.NumPending + uint64(max(info.NumAckPending, 0)), nil
}

func orElse(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// truncate cuts s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
