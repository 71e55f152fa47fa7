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
	// mute, when set, says whether a silence mutes an alert (Manager.Silence).
	mute func(a *events.Alert, now time.Time) (silence string, muted bool)

	// deliverMu keeps to one Deliver call at a time, as the Sink interface
	// promises plugins, when DeliverTo runs beside Run.
	deliverMu sync.Mutex

	delivered, retried, dead, silencedN atomic.Uint64

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
// and two Deliver calls with room to settle the results (with adaptive
// batching a record read ahead waits for the batch in hand and the next),
// so a record is never redelivered behind the worker's back.
func (w *worker) spec() bus.ConsumerSpec {
	return bus.ConsumerSpec{
		Stream:         w.stream,
		Durable:        w.durable,
		FilterSubjects: w.filters,
		AckWait:        max(30*time.Second, 2*(w.cfg.BatchWait+w.cfg.Timeout)+5*time.Second),
		MaxDeliver:     -1, // the worker counts attempts, so the last one ends as a dead letter
		MaxAckPending:  max(1000, 2*w.cfg.BatchSize),
	}
}

// consumerSpec is the sink's durable consumer with where a new one starts:
// where sinks[].start says, by default "now", so a sink added to a running
// system does not replay the stream's 30 days of alerts (`observer replay
// --deliver` or start: all sends older ones). An existing durable keeps its
// start and its position (bus.Conn.Consumer).
//
// "now" is when the observer began to run (started), not when the
// consumer is created after the plugins have started: events published
// while a plugin starts are the sink's.
func (w *worker) consumerSpec(started time.Time) (bus.ConsumerSpec, error) {
	spec := w.spec()
	all, from, err := w.cfg.StartFrom(started)
	switch {
	case err != nil:
		return spec, fmt.Errorf("sinks.%s.start: %w", w.cfg.Name, err)
	case all:
		spec.DeliverPolicy = jetstream.DeliverAllPolicy
	case from.IsZero():
		from = started.UTC()
		spec.DeliverPolicy, spec.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	default:
		from = from.UTC()
		spec.DeliverPolicy, spec.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	return spec, nil
}

// run delivers batches until ctx is done, through the bus's batch
// consumer: with batch_wait 0 (the default) each batch is what has come,
// up to batch_size, by the time the previous Deliver returned (adaptive:
// an idle sink delivers a record at once); with a positive batch_wait it
// pulls a first record (waiting up to idle) and gathers up to batch_size
// for batch_wait. It hands a batch to the plugin in one call and settles
// each record by the one ack policy. The batch in hand when ctx ends is
// still delivered and settled: that is the drain.
func (w *worker) run(ctx context.Context, spec bus.ConsumerSpec, idle time.Duration) error {
	spec.Batch, spec.BatchWait, spec.IdleWait = w.cfg.BatchSize, w.cfg.BatchWait, idle
	spec.Backoff = w.backoff
	spec.Grace = w.cfg.Timeout + 5*time.Second
	return w.conn.ConsumeBatch(ctx, spec, w.process)
}

// item is one fetched message on its way through a batch.
type item struct {
	msg       *bus.Msg
	delivered uint64 // delivery count, 1 on the first
	seq       uint64
	ev        events.Event
}

func (it *item) refID(stream string) string {
	if it.ev != nil {
		return it.ev.Head().ID
	}
	if id := it.msg.Header.Get(jetstream.MsgIDHeader); id != "" {
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

// process delivers one batch and returns the verdict on each message for
// the bus to settle: nil acknowledges, Permanent terminates (a dead letter
// is recorded first), Retry redelivers after the delay the sink or the
// backoff asks for.
func (w *worker) process(ctx context.Context, msgs []*bus.Msg) []error {
	verdicts := make([]error, len(msgs))
	items := make([]*item, 0, len(msgs))
	index := make([]int, 0, len(msgs)) // items[i] is msgs[index[i]]
	batch := make([]sink.Record, 0, len(msgs))
	for i, msg := range msgs {
		it := &item{msg: msg, delivered: msg.Delivered, seq: msg.StreamSeq}
		ev, err := events.Decode(msg.Data)
		if err != nil {
			verdicts[i] = w.deadLetter(ctx, it, "malformed event: "+err.Error())
			continue
		}
		it.ev = ev
		if a, ok := ev.(*events.Alert); ok && events.SeverityRank(a.Severity) < w.minRank {
			w.met.filtered.Inc()
			continue // acknowledged: not for this sink
		}
		if a, ok := ev.(*events.Alert); ok && w.silenced(a) {
			continue // acknowledged: recorded on ALERTS, muted for the sinks
		}
		if w.cfg.Kind == KindAlert && ev.Head().Type != events.TypeAlert {
			verdicts[i] = w.deadLetter(ctx, it, fmt.Sprintf("a %s event on alert subject %s", ev.Head().Type, msg.Subject))
			continue
		}
		if it.delivered > uint64(w.cfg.MaxAttempts) {
			// Only when the observer died holding it, again and again.
			verdicts[i] = w.deadLetter(ctx, it, fmt.Sprintf("no answer from the sink in %d deliveries", it.delivered-1))
			continue
		}
		items = append(items, it)
		index = append(index, i)
		batch = append(batch, sink.Record{ID: ev.Head().ID, Kind: w.kind, Subject: msg.Subject, Data: msg.Data})
	}
	if len(batch) > 0 {
		results := w.deliver(ctx, batch)
		w.noteBatch(results)
		for i, it := range items {
			verdicts[index[i]] = w.settle(ctx, it, results[i])
		}
	}
	return verdicts
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

// settle applies the policy to one record's result and returns the
// verdict on its message.
func (w *worker) settle(ctx context.Context, it *item, r sink.Result) error {
	switch r.Status {
	case sink.Delivered:
		if w.cfg.Kind == KindAlert {
			if err := w.emit(ctx, w.receipt(it)); err != nil {
				// Acknowledged only once its events are published: the
				// alert goes again, at least once.
				w.log.Error("delivery receipt not recorded, will redeliver", "ref_id", it.refID(w.stream), "err", err)
				return w.retry(fmt.Errorf("delivery receipt: %w", err), w.backoff(it.delivered))
			}
		}
		w.delivered.Add(1)
		w.met.delivered.Inc()
		return nil
	case sink.Permanent:
		return w.deadLetter(ctx, it, orElse(r.Reason, "permanent failure"))
	default:
		reason := orElse(r.Reason, "retryable failure")
		if it.delivered >= uint64(w.cfg.MaxAttempts) {
			return w.deadLetter(ctx, it, fmt.Sprintf("%s (after %d attempts)", reason, it.delivered))
		}
		delay := w.retryDelay(r, it.delivered)
		w.log.Info("sink record will be retried", "ref_id", it.refID(w.stream), "attempt", it.delivered, "delay", delay, "reason", reason)
		return w.retry(errors.New(reason), delay)
	}
}

func (w *worker) retry(err error, delay time.Duration) error {
	w.retried.Add(1)
	w.met.retried.Inc()
	return bus.Retry(err, delay)
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
// returns the verdict that terminates it. If the dead letter cannot be
// published the message is redelivered instead: it is never dropped
// silently.
func (w *worker) deadLetter(ctx context.Context, it *item, reason string) error {
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
		return w.retry(fmt.Errorf("dead letter: %w", err), w.backoff(it.delivered))
	}
	w.log.Error("dead letter", "ref_id", ref, "ref_type", d.RefType, "fingerprint", d.Fingerprint,
		"subject", it.msg.Subject, "seq", it.seq, "attempts", it.delivered, "reason", reason)
	w.dead.Add(1)
	w.met.dead.Inc()
	w.noteErr(reason)
	return bus.Permanent(errors.New("dead letter: " + reason))
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
		Silenced:    w.silencedN.Load(),
		LastError:   w.lastErr,
	}
	if !w.started && st.LastError == "" {
		st.LastError = "plugin not started"
	}
	return st
}

func (w *worker) backlog(ctx context.Context) (uint64, error) {
	info, err := w.conn.ConsumerInfo(ctx, w.stream, w.durable)
	if err != nil {
		return 0, err
	}
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
