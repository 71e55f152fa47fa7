// Package observer is the observer daemon's live side: the pipeline that
// consumes the EVENTS stream on a durable consumer, runs the status and alert
// rules (package rules) on it, publishes what they derive on agent.status.*
// and agent.alert.*, and keeps its state in the key-value buckets
// "service_status" and "alert_state"; and the HTTP server with /healthz,
// /readyz, /status and /metrics. Sink delivery is the delivery manager's; the
// post-mortem replay is package replay's.
//
// # Nothing lost, nothing twice
//
// The saved state carries the stream sequence of the last event applied (the
// cursor), and every derived event has an id computed from what it says. An
// event is acknowledged only after what it caused is stored in its stream.
// The state is saved after each fetched batch of events that caused
// something, at least every SaveEvery events or SaveInterval otherwise, and
// at once when the passing of time caused something (a tick: that cannot be
// re-derived from the stream) or before the first event is acknowledged
// (until then a successor starts from the durable's ack floor). When the
// observer dies, the next one loads the saved state and re-applies, in
// stream order, every event after the cursor: those the durable redelivers
// and, read directly from the stream, those it had acknowledged since the
// last save or that another delivery left behind. Re-applying the same events
// to the same state derives the same ids, which JetStream's duplicate window
// drops; so a crash repeats nothing as long as the next observer starts
// within that window (2 minutes by default) or the crash did not fall between
// a batch's publishes and its save. One observer process is active per
// durable: others stand by (package lease elects it). Should two ever
// overlap (a deposed one finishing the event in hand), the state cannot go
// backwards: each save is a compare-and-set on the revision of the state it
// loaded or last saved, so the one whose state another has moved past
// fails to save, reloads, and re-applies from the newer cursor, deriving
// only ids already stored.
package observer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/rules"
)

// Key-value buckets the observer keeps its state in; nats.conf allows the
// observer role exactly these names.
const (
	StatusBucket = "service_status"
	StateBucket  = "alert_state"
)

// RecentAlerts is how many of the latest alerts /status lists.
const RecentAlerts = 50

// InputSubjects are the subjects the rules consume: the callers' events.
var InputSubjects = []string{events.CallAll, events.AttemptAll, events.RetryAll, events.BreakerAll, events.HealthAll}

// Options configure a Pipeline. Zero fields take the defaults documented on each.
type Options struct {
	Rules config.Rules
	// Consumer is the durable consumer's name, also the key of the saved
	// state in alert_state. Default "observer".
	Consumer string
	// Batch is how many events one batch takes at most (read ahead while
	// the one before is handled). Default 500: a save per batch.
	Batch int
	// AckWait is the durable's ack wait. Default 30s.
	AckWait time.Duration
	// Tick is how often the clock is advanced while no event arrives (group
	// flushes, down-for timers) and the backlog measured. Default 1s.
	Tick time.Duration
	// Now is the wall clock the ticker reads. Default time.Now.
	Now func() time.Time
	// SaveEvery and SaveInterval bound how far the saved state may lag
	// behind when events cause nothing: that many events or that much time
	// (events that cause something are saved at the end of their batch).
	// Whatever they lag is re-read from the stream after a restart. Defaults
	// 500 events, 1s.
	SaveEvery    int
	SaveInterval time.Duration
	// Metrics, if not nil, are updated as events are consumed and derived.
	Metrics *Metrics
	// RecoveryTimeout is each service's breaker recovery_timeout, for the
	// time to half-open of a breaker whose transition did not say.
	RecoveryTimeout map[string]time.Duration
	// OnChange, if not nil, is called (without blocking) after events are
	// applied or the clock advanced: the status page's live updates.
	OnChange func()
	Log      *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Consumer == "" {
		o.Consumer = config.Default().Observer.Consumer
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = 500
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	return o
}

// Pipeline is the live observer. Create it with New, run it with Run.
type Pipeline struct {
	opts     Options
	conn     *bus.Conn
	log      *slog.Logger
	stream   jetstream.Stream
	statusKV jetstream.KeyValue
	stateKV  jetstream.KeyValue

	mu     sync.Mutex
	engine *rules.Engine
	seq    uint64 // stream sequence of the last event applied
	// rev is the revision of the saved state this one follows (loaded or
	// last saved; 0: none): a save succeeds only if it is still the latest.
	rev     uint64
	counted uint64 // highest sequence counted in metrics by this process
	recent  []*events.Alert
	// recentJSON is recent encoded, kept between saves: it changes only
	// with an alert, the engine's state with every event.
	recentJSON []byte
	unsaved    int
	// caused is set when events applied since the last save published
	// something: the end of their batch saves the state.
	caused   bool
	hasSaved bool // a state with a cursor is saved: a successor starts there
	savedAt  time.Time
	stale    bool // memory is ahead of what was published or saved: reload
	lastInfo *jetstream.ConsumerInfo
	// openUntil is, per service, when its open breaker lets a probe
	// through, from the latest transition (in memory: for the page).
	openUntil map[string]time.Time

	running atomic.Bool
	// afterPublish, in tests, runs after an event's outputs are published
	// and before the state is saved and the event acknowledged.
	afterPublish func(ctx context.Context, outs []rules.Output) error
}

// ErrStateMoved is returned (wrapped) by a save when the saved state is no
// longer the one this pipeline loaded or last saved: another observer
// saved since. The pipeline reloads it before going on.
var ErrStateMoved = errors.New("the saved state was changed by another observer")

// New opens the key-value buckets and loads the saved state.
func New(ctx context.Context, conn *bus.Conn, opts Options) (*Pipeline, error) {
	opts = opts.withDefaults()
	p := &Pipeline{opts: opts, conn: conn, log: opts.Log.With("consumer", opts.Consumer), openUntil: map[string]time.Time{}}
	var err error
	if p.stream, err = conn.Stream(ctx, events.StreamEvents); err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if p.statusKV, err = conn.KeyValue(ctx, StatusBucket, 0); err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if p.stateKV, err = conn.KeyValue(ctx, StateBucket, 0); err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if err := p.load(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// saved is the state kept under the consumer's key in alert_state.
type saved struct {
	V      int             `json:"v"`
	Seq    uint64          `json:"seq"`
	Engine json.RawMessage `json:"engine"`
	Recent []*events.Alert `json:"recent,omitempty"`
}

// load replaces the state in memory with the saved one (a fresh one if
// nothing is saved). On an error the memory is left as it was, still marked
// stale if it was.
func (p *Pipeline) load(ctx context.Context) error {
	engine := rules.New(p.opts.Rules)
	var s saved
	found := false
	var rev uint64
	entry, err := p.stateKV.Get(ctx, p.opts.Consumer)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("observer: load state: %w", err)
	default:
		err := json.Unmarshal(entry.Value(), &s)
		if err == nil {
			err = json.Unmarshal(s.Engine, engine)
		}
		if err != nil {
			// Starting afresh would resend or lose alerts: an operator decides.
			return fmt.Errorf("observer: load state (key %q of bucket %s; delete it to start afresh): %w", p.opts.Consumer, StateBucket, err)
		}
		found, rev = true, entry.Revision()
		p.log.Info("state loaded", "seq", s.Seq, "clock", engine.Clock(), "active_alerts", len(engine.Active()))
	}
	p.engine, p.seq, p.rev, p.recent, p.recentJSON = engine, s.Seq, rev, s.Recent, nil
	p.hasSaved = found && s.Seq > 0
	p.unsaved, p.caused, p.stale, p.savedAt = 0, false, false, p.opts.Now()
	return nil
}

func (p *Pipeline) save(ctx context.Context) error {
	data, err := p.encode()
	if err != nil {
		return fmt.Errorf("observer: save state: %w", err)
	}
	var rev uint64
	if p.rev == 0 {
		rev, err = p.stateKV.Create(ctx, p.opts.Consumer, data)
	} else {
		rev, err = p.stateKV.Update(ctx, p.opts.Consumer, data, p.rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		p.stale = true
		return fmt.Errorf("observer: save state: %w: %w", ErrStateMoved, err)
	}
	if err != nil {
		return fmt.Errorf("observer: save state: %w", err)
	}
	p.rev = rev
	p.unsaved, p.caused, p.hasSaved = 0, false, true
	p.savedAt = p.opts.Now()
	return nil
}

// encode writes the state as json.Marshal would write saved, without
// re-validating the engine's JSON (json.Marshal made it) or re-encoding the
// recent alerts when none came since the last save.
func (p *Pipeline) encode() ([]byte, error) {
	eng, err := p.engine.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if p.recentJSON == nil && len(p.recent) > 0 {
		if p.recentJSON, err = json.Marshal(p.recent); err != nil {
			return nil, err
		}
	}
	data := make([]byte, 0, len(eng)+len(p.recentJSON)+64)
	data = append(data, `{"v":1,"seq":`...)
	data = strconv.AppendUint(data, p.seq, 10)
	data = append(data, `,"engine":`...)
	data = append(data, eng...)
	if len(p.recent) > 0 {
		data = append(data, `,"recent":`...)
		data = append(data, p.recentJSON...)
	}
	return append(data, '}'), nil
}

// Run loads the saved state (which another observer may have moved on
// since New), consumes events until ctx is done, then finishes the event in
// hand, saves the state and returns. Run may be called again after it
// returned: an observer that stood by and becomes active again.
func (p *Pipeline) Run(ctx context.Context) error {
	p.mu.Lock()
	var err error
	for range 5 {
		if err = p.load(ctx); err == nil {
			err = p.catchUp(ctx)
		}
		if !errors.Is(err, ErrStateMoved) {
			break
		}
		p.log.Warn("the saved state moved while catching up: reloading", "err", err)
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	tctx, stopTicker := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.tick(tctx) })

	p.running.Store(true)
	err = p.conn.Consume(ctx, bus.ConsumerSpec{
		Stream:         events.StreamEvents,
		Durable:        p.opts.Consumer,
		FilterSubjects: InputSubjects,
		AckWait:        p.opts.AckWait,
		MaxAckPending:  max(1000, 2*p.opts.Batch),
		Batch:          p.opts.Batch,
		Grace:          5 * time.Second,
		// A redelivered event is skipped by its sequence, so an ack lost
		// costs nothing but the redelivery: one round trip per batch.
		AckAsync:   true,
		AfterBatch: p.afterBatch,
		// The next batch is pulled while this one is handled: ingest is
		// not one round trip per batch.
		ReadAhead: true,
	}, p.handle)
	p.running.Store(false)
	stopTicker()
	wg.Wait()

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stale && p.unsaved > 0 {
		if serr := p.save(sctx); serr != nil {
			p.log.Warn("final state save", "err", serr)
		}
	}
	return err
}

// Ready reports whether the pipeline is connected and consuming.
func (p *Pipeline) Ready() bool {
	return p.running.Load() && p.conn.Connected()
}

// catchUp applies what the stream holds past the saved cursor, so effects
// not yet saved when the last observer stopped are restored before anything
// new is derived.
func (p *Pipeline) catchUp(ctx context.Context) error {
	if p.seq == 0 {
		return nil
	}
	info, err := p.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("observer: stream info: %w", err)
	}
	if info.State.LastSeq < p.seq {
		// The stream was recreated: its sequences start over, and a cursor
		// past its end would skip every new event.
		p.log.Warn("EVENTS holds fewer events than the saved state has applied: the stream was reset; following it from here",
			"saved_seq", p.seq, "stream_last_seq", info.State.LastSeq)
		p.seq, p.hasSaved = 0, false
		return nil
	}
	if info.State.LastSeq > p.seq {
		p.log.Info("catching up from the stream", "from", p.seq+1, "to", info.State.LastSeq)
		if err := p.fill(ctx, info.State.LastSeq); err != nil {
			return err
		}
		if err := p.save(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pipeline) handle(ctx context.Context, m *bus.Msg) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		if err := p.load(ctx); err != nil {
			return err
		}
	}
	if p.seq == 0 {
		// No saved state: the first observer, or one that died before its
		// first save. Events its predecessor was handed stay pending on the
		// durable until the ack wait; start after what the durable has
		// acknowledged, so the gap below is filled now, in order, rather
		// than those events being skipped as applied when they come back.
		floor, err := p.ackFloor(ctx)
		if err != nil {
			return err
		}
		p.seq = floor
	}
	if p.seq > 0 && m.StreamSeq <= p.seq {
		return nil // applied already: a redelivery, or read from the stream in a fill
	}
	if m.StreamSeq > p.seq+1 {
		// Events between the cursor and this one are still pending on the
		// durable (left by a dead observer) or were acknowledged before the
		// last save: apply them first, in order.
		if err := p.fill(ctx, m.StreamSeq-1); err != nil {
			return err
		}
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		p.seq = m.StreamSeq
		p.unsaved++
		return bus.Permanent(err)
	}
	return p.apply(ctx, m.StreamSeq, ev)
}

// afterBatch saves the state once for a batch of events that caused
// something, rather than once per such event.
func (p *Pipeline) afterBatch(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale || !p.caused {
		return nil
	}
	if err := p.save(ctx); err != nil {
		p.stale = true
		return err
	}
	return nil
}

// ackFloor is the stream sequence below which the durable has every event
// acknowledged, and at least the last one the stream no longer holds.
func (p *Pipeline) ackFloor(ctx context.Context) (uint64, error) {
	ci, err := p.conn.ConsumerInfo(ctx, events.StreamEvents, p.opts.Consumer)
	if err != nil {
		return 0, fmt.Errorf("observer: %w", err)
	}
	si, err := p.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("observer: stream info: %w", err)
	}
	floor := ci.AckFloor.Stream
	if si.State.FirstSeq > 0 {
		floor = max(floor, si.State.FirstSeq-1)
	}
	return floor, nil
}

// fill applies the stream's events from the cursor up to seq, read directly.
func (p *Pipeline) fill(ctx context.Context, upTo uint64) error {
	for s := p.seq + 1; s <= upTo; s++ {
		raw, err := p.stream.GetMsg(ctx, s)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			p.seq = s // deleted or aged out
			continue
		case err != nil:
			return fmt.Errorf("observer: read event %d: %w", s, err)
		}
		if !isInput(raw.Subject) {
			p.seq = s
			continue
		}
		ev, err := events.Decode(raw.Data)
		if err != nil {
			p.log.Warn("skipping malformed event", "seq", s, "subject", raw.Subject, "err", err)
			p.seq = s
			continue
		}
		if err := p.apply(ctx, s, ev); err != nil {
			return err
		}
	}
	return nil
}

func isInput(subject string) bool {
	for _, prefix := range []string{events.CallPrefix, events.AttemptPrefix, events.RetryPrefix, events.BreakerPrefix, events.HealthPrefix} {
		if strings.HasPrefix(subject, prefix) {
			return true
		}
	}
	return false
}

// apply runs one event through the rules and publishes what it causes. On an
// error the state in memory may be ahead of what was published or saved, so
// it is reloaded before the next event.
func (p *Pipeline) apply(ctx context.Context, seq uint64, ev events.Event) error {
	outs := p.engine.Apply(ev)
	p.seq = seq
	if b, ok := ev.(*events.Breaker); ok {
		if b.To == events.BreakerOpen && b.OpenUntil != nil {
			p.openUntil[b.Service] = *b.OpenUntil
		} else if b.To != events.BreakerOpen {
			delete(p.openUntil, b.Service)
		}
	}
	defer p.opts.OnChange()
	p.unsaved++
	if seq > p.counted {
		p.opts.Metrics.observe(ev)
		p.counted = seq
	}
	return p.commit(ctx, outs, false)
}

// commit publishes outputs and saves the state when it must: now if
// saveOutputs and there are outputs, or nothing is saved yet; else when it
// lags too far (see Options.SaveEvery). Outputs left unsaved are saved by
// afterBatch.
func (p *Pipeline) commit(ctx context.Context, outs []rules.Output, saveOutputs bool) error {
	if err := p.publish(ctx, outs); err != nil {
		p.stale = true
		return err
	}
	if p.afterPublish != nil {
		if err := p.afterPublish(ctx, outs); err != nil {
			p.stale = true
			return err
		}
	}
	if len(outs) > 0 {
		p.caused = true
	}
	if (saveOutputs && len(outs) > 0) || !p.hasSaved || p.unsaved >= p.opts.SaveEvery || p.opts.Now().Sub(p.savedAt) >= p.opts.SaveInterval {
		if err := p.save(ctx); err != nil {
			p.stale = true
			return err
		}
	}
	return nil
}

func (p *Pipeline) publish(ctx context.Context, outs []rules.Output) error {
	for _, o := range outs {
		switch {
		case o.Status != nil:
			if err := p.publishStatus(ctx, o.Status); err != nil {
				return err
			}
			p.opts.Metrics.published(o.Status)
			p.log.Info("service status", "service", o.Status.Service, "from", o.Status.From, "to", o.Status.To, "why", o.Status.Message)
		case o.Alert != nil:
			if err := p.conn.Emit(ctx, o.Alert); err != nil {
				return fmt.Errorf("observer: publish alert: %w", err)
			}
			p.remember(o.Alert)
			p.opts.Metrics.published(o.Alert)
			p.log.Info("alert", "status", o.Alert.Status, "severity", o.Alert.Severity, "rule", o.Alert.Rule,
				"service", o.Alert.Service, "summary", o.Alert.Summary, "count", o.Alert.Count, "id", o.Alert.ID)
		}
	}
	return nil
}

// ServiceStatus is the value kept per service in the service_status bucket.
type ServiceStatus struct {
	Service string    `json:"service"`
	Status  string    `json:"status"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason,omitempty"`
	EventID string    `json:"event_id"`
}

// publishStatus publishes a status change and stores it in service_status
// at the same time: one round trip rather than two. Both are idempotent, so
// when either fails the event is re-derived and both are done again.
func (p *Pipeline) publishStatus(ctx context.Context, s *events.Status) error {
	data, err := json.Marshal(ServiceStatus{Service: s.Service, Status: s.To, Since: s.Time, Reason: s.Message, EventID: s.ID})
	if err != nil {
		return err
	}
	var emitErr error
	var wg sync.WaitGroup
	wg.Go(func() { emitErr = p.conn.Emit(ctx, s) })
	_, putErr := p.statusKV.Put(ctx, s.Service, data)
	wg.Wait()
	if emitErr != nil {
		return fmt.Errorf("observer: publish status: %w", emitErr)
	}
	if putErr != nil {
		return fmt.Errorf("observer: store status of %s: %w", s.Service, putErr)
	}
	return nil
}

func (p *Pipeline) remember(a *events.Alert) {
	// A re-derived alert (after a restart) is already in the list.
	for _, r := range p.recent {
		if r.ID == a.ID {
			return
		}
	}
	p.recent = append(p.recent, a)
	if n := len(p.recent) - RecentAlerts; n > 0 {
		p.recent = append([]*events.Alert(nil), p.recent[n:]...)
	}
	p.recentJSON = nil
}

// tick advances the rules' clock to the wall clock while the consumer has
// nothing waiting (so that a backlog being worked off is judged on its own
// event time), saves the state when it lags, and measures the backlog.
func (p *Pipeline) tick(ctx context.Context) {
	t := time.NewTicker(p.opts.Tick)
	defer t.Stop()
	for {
		idle := false
		{
			if info, err := p.conn.ConsumerInfo(ctx, events.StreamEvents, p.opts.Consumer); err == nil {
				p.opts.Metrics.setBacklog(info.NumPending + uint64(info.NumAckPending))
				idle = info.NumPending == 0 && info.NumAckPending == 0
				p.mu.Lock()
				p.lastInfo = info
				p.mu.Unlock()
			} else if ctx.Err() == nil {
				p.log.Debug("consumer info", "err", err)
			}
		}
		p.advance(ctx, idle)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Pipeline) advance(ctx context.Context, idle bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		if err := p.load(ctx); err != nil {
			p.log.Warn("reload state", "err", err)
			return
		}
	}
	var outs []rules.Output
	if idle {
		outs = p.engine.Advance(p.opts.Now())
	}
	if len(outs) == 0 && p.unsaved == 0 {
		return
	}
	if len(outs) > 0 {
		defer p.opts.OnChange()
	}
	// What the passing of time caused is saved at once: a successor
	// re-applying the stream would not see this tick.
	if err := p.commit(ctx, outs, true); err != nil && ctx.Err() == nil {
		p.log.Warn("commit on tick", "err", err)
	}
}
