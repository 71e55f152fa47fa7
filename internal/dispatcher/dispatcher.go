// Package dispatcher runs campaigns: it publishes one call request per
// contact on agent.dispatch.<campaign>, keeps every contact's state in a
// JetStream key-value bucket, follows the callers' outcomes on agent.call.>,
// re-queues contacts that were busy, unanswered or skipped by an open breaker
// (as JetStream message schedules on CALLS, which fire with no dispatcher
// running: see requeue.go), holds contacts outside their calling window until
// it opens, and reports progress and a final summary.
//
// Nobody is called twice because a process restarted or a campaign was run
// again: the state bucket says what each contact already had (written with
// optimistic concurrency), and each request's Nats-Msg-Id names its attempt,
// so the stream stores a re-sent attempt once.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/resilience"
)

// Defaults of Settings.
const (
	DefaultMaxAttempts        = 3
	DefaultNoAnswerRetryDelay = 4 * time.Hour
	DefaultStateBucket        = "campaigns"
	DefaultReconcileInterval  = 30 * time.Second
	DefaultCatchUpTimeout     = 10 * time.Second
)

// outcomeHandlers is how many call outcomes are applied to the state at once.
const outcomeHandlers = 16

// Errors returned by Run and Publish, matched with errors.Is.
var (
	// ErrUnfinished means following stopped (timeout, signal) before every
	// contact reached a terminal state. The state is durable: run again to resume.
	ErrUnfinished = errors.New("campaign not finished")
	// ErrNoContacts means there was nothing to dispatch.
	ErrNoContacts = errors.New("no contacts to dispatch")
)

// Settings configure a Dispatcher. The zero value of every field but Campaign
// means its documented default.
type Settings struct {
	// Campaign names the campaign: a subject token, and part of every key,
	// call id and message id. Required.
	Campaign string
	// MaxAttempts caps each contact's attempts across re-queues. Default 3.
	MaxAttempts int
	// NoAnswerRetryDelay re-queues busy and unanswered contacts. Default 4h.
	NoAnswerRetryDelay time.Duration
	// SkippedRetryDelay re-queues a contact skipped by an open breaker, but
	// never earlier than the retry_in_ms the skip carried. Default: that
	// retry_in_ms, or one minute if the event has none.
	SkippedRetryDelay time.Duration
	// CallingWindow is when contacts may be called, in their local time.
	// Default 08:00-21:00.
	CallingWindow string
	// DefaultTimezone applies to contacts without a zone. Default UTC.
	DefaultTimezone string
	// StateBucket is the key-value bucket of campaign state. Default "campaigns".
	StateBucket string
	// Progress receives live progress while following; nil reports nothing.
	Progress io.Writer
	// ProgressMode says how: a bar on a terminal, lines otherwise, by default.
	ProgressMode ProgressMode
	// Clock is the time source, faked in tests. Default the system clock.
	Clock resilience.Clock
	// Log receives operational messages. Default: discarded.
	Log *slog.Logger
	// ReconcileInterval is how often a request that may have been lost is
	// looked for. Default 30s.
	ReconcileInterval time.Duration
	// CatchUpTimeout bounds how long Publish reads outcomes already on the
	// bus before it publishes. Default 10s.
	CatchUpTimeout time.Duration
}

// SettingsFrom maps the dispatcher section of the configuration.
func SettingsFrom(cfg config.Dispatcher) Settings {
	return Settings{
		Campaign:           cfg.Campaign,
		MaxAttempts:        cfg.MaxAttempts,
		NoAnswerRetryDelay: cfg.NoAnswerRetryDelay,
		SkippedRetryDelay:  cfg.SkippedRetryDelay,
		CallingWindow:      cfg.CallingWindow,
		DefaultTimezone:    cfg.DefaultTimezone,
		StateBucket:        cfg.StateBucket,
	}
}

func (s Settings) withDefaults() (Settings, error) {
	if err := events.ValidToken(s.Campaign); err != nil || contacts.SafeID(s.Campaign) != s.Campaign {
		return s, fmt.Errorf("campaign %q: must be letters, digits, '-' and '_'", s.Campaign)
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.NoAnswerRetryDelay <= 0 {
		s.NoAnswerRetryDelay = DefaultNoAnswerRetryDelay
	}
	if s.CallingWindow == "" {
		s.CallingWindow = DefaultCallingWindow
	}
	if s.DefaultTimezone == "" {
		s.DefaultTimezone = "UTC"
	}
	if s.StateBucket == "" {
		s.StateBucket = DefaultStateBucket
	}
	if s.Clock == nil {
		s.Clock = resilience.SystemClock{}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.ReconcileInterval <= 0 {
		s.ReconcileInterval = DefaultReconcileInterval
	}
	if s.CatchUpTimeout <= 0 {
		s.CatchUpTimeout = DefaultCatchUpTimeout
	}
	return s, nil
}

// Dispatcher runs one campaign over a bus connection.
type Dispatcher struct {
	conn   *bus.Conn
	kv     jetstream.KeyValue
	store  store
	set    Settings
	window Window
	policy policy
	log    *slog.Logger
}

// New opens (or creates) the state bucket and returns a dispatcher for
// s.Campaign.
func New(ctx context.Context, conn *bus.Conn, s Settings) (*Dispatcher, error) {
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	w, err := ParseWindow(s.CallingWindow)
	if err != nil {
		return nil, err
	}
	if _, err := time.LoadLocation(s.DefaultTimezone); err != nil {
		return nil, fmt.Errorf("default time zone: %w", err)
	}
	kv, err := conn.KeyValue(ctx, s.StateBucket, 0)
	if err != nil {
		return nil, err
	}
	return &Dispatcher{
		conn:   conn,
		kv:     kv,
		store:  store{kv: kv},
		set:    s,
		window: w,
		policy: policy{maxAttempts: s.MaxAttempts, noAnswerDelay: s.NoAnswerRetryDelay, skippedDelay: s.SkippedRetryDelay},
		log:    s.Log.With("campaign", s.Campaign),
	}, nil
}

// Run dispatches the contacts and follows the campaign until every one of
// them is completed, failed or exhausted, re-queueing and postponing as it
// goes. It returns the summary of these contacts. If ctx ends first, it
// returns the summary so far and an error matching ErrUnfinished; running
// again with the same contacts resumes where this run stopped.
func (d *Dispatcher) Run(ctx context.Context, list []contacts.Contact) (*Summary, error) {
	return d.run(ctx, list, true)
}

// Publish records the contacts in the campaign, reads the outcomes already on
// the bus, publishes every contact that is due now, and returns without
// following. Contacts waiting for a retry or their calling window are
// published by a later Run or Publish.
func (d *Dispatcher) Publish(ctx context.Context, list []contacts.Contact) (*Summary, error) {
	return d.run(ctx, list, false)
}

// Status summarizes every contact the campaign's state holds.
func (d *Dispatcher) Status(ctx context.Context) (*Summary, error) {
	return Summarize(ctx, d.kv, d.set.Campaign)
}

// Durable is the name of a campaign's consumer of call outcomes.
func Durable(campaign string) string { return "dispatcher-" + campaign }

// outcomeSubjects are the call events a campaign follows.
func outcomeSubjects() []string {
	return []string{
		events.CallSubject(events.CallStarted),
		events.CallSubject(events.CallCompleted),
		events.CallSubject(events.CallFailed),
		events.CallSubject(events.CallSkipped),
		events.CallSubject(events.CallCancelled),
		events.CallSubject(events.CallSuppressed),
	}
}

func (d *Dispatcher) run(ctx context.Context, list []contacts.Contact, follow bool) (*Summary, error) {
	if len(list) == 0 {
		return nil, ErrNoContacts
	}
	r, err := d.newRun(list)
	if err != nil {
		return nil, err
	}
	camp, err := d.campaign(ctx)
	if err != nil {
		return nil, err
	}
	calls, err := d.conn.Stream(ctx, events.StreamCalls)
	if err != nil {
		return nil, err
	}
	r.calls = calls
	if dup := calls.CachedInfo().Config.Duplicates; dup > 0 {
		r.dupWindow = dup
	}

	// The watcher keeps r.view in step with the bucket, whoever writes it:
	// this process, or another dispatcher of the same campaign.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	w, err := d.kv.Watch(wctx, d.set.Campaign+".*")
	if err != nil {
		return nil, fmt.Errorf("watch campaign state: %w", err)
	}
	defer func() { _ = w.Stop() }()
	ready := make(chan struct{})
	go r.watch(w, ready)
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := r.watchControl(wctx); err != nil {
		return nil, err
	}
	if err := r.register(ctx); err != nil {
		return nil, err
	}

	// Outcomes are read from when the campaign began, so a consumer created
	// by a later run (or after the last one deleted it) misses none of them.
	start := camp.CreatedAt.Add(-time.Minute)
	spec := bus.ConsumerSpec{
		Stream:         events.StreamEvents,
		Durable:        Durable(d.set.Campaign),
		FilterSubjects: outcomeSubjects(),
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		Batch:          16,
		// Outcomes of one contact may then be handled out of order; policy.apply
		// gives the same state either way, and writes are conditional.
		Concurrency: outcomeHandlers,
		Grace:       5 * time.Second,
	}
	r.cons, err = d.conn.Consumer(ctx, spec)
	if err != nil {
		return nil, err
	}
	cctx, stopConsume := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() { consumed <- d.conn.Consume(cctx, spec, r.handle) }()

	r.progress.begin(r.snapshotTally())
	if follow {
		err = r.follow(ctx)
	} else {
		err = r.once(ctx)
	}
	stopConsume()
	<-consumed
	r.progress.end()

	sum := r.summary()
	if sum.Finished {
		// The consumer is recreated (and replays from the campaign's start)
		// if the campaign ever runs again; an idle durable per finished
		// campaign would otherwise accumulate on EVENTS.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if derr := d.conn.DeleteConsumer(dctx, events.StreamEvents, spec.Durable); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
			d.log.Warn("delete finished campaign's consumer", "consumer", spec.Durable, "err", derr)
		}
		cancel()
		return sum, nil
	}
	if err != nil && follow {
		return sum, fmt.Errorf("%w: %d of %d contacts still open: %w", ErrUnfinished, sum.Total-sum.done(), sum.Total, err)
	}
	return sum, err
}

// campaign returns the campaign's record, creating it on the first run.
func (d *Dispatcher) campaign(ctx context.Context) (*Campaign, error) {
	// The wall clock, not Settings.Clock: this time is compared with the
	// stream's timestamps to start the outcome consumer.
	return loadCampaign(ctx, d.kv, d.set.Campaign, time.Now())
}
