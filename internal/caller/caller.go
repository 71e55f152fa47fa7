// Package caller runs call requests through the call flow (llm -> tts ->
// telephony -> crm) with each service's retry policy and fleet-wide circuit
// breaker, publishes every attempt, retry and outcome, and acknowledges a
// request only once its one terminal event is stored.
package caller

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/provider/crm"
	"github.com/callagent/agent/internal/provider/llm"
	"github.com/callagent/agent/internal/provider/telephony"
	"github.com/callagent/agent/internal/resilience"
)

// ProgressBucket is the key-value bucket holding each call's progress.
const ProgressBucket = "calls"

// The services the flow calls, declared here where they are consumed.
type (
	// Scripter writes the call script.
	Scripter interface {
		Script(ctx context.Context, req llm.ScriptRequest) (string, error)
	}
	// Speaker turns the script into audio.
	Speaker interface {
		Speak(ctx context.Context, callID, text string) ([]byte, error)
	}
	// Dialer places the call, then follows it to its final status. The two
	// are apart so that the call's sid is stored in between: a caller that
	// takes the request over from one that died follows that call rather
	// than ringing the contact a second time. since, when not zero, is when
	// an earlier delivery began dialing without storing a sid: its call may
	// exist, and Dial looks for it before placing one.
	Dialer interface {
		Dial(ctx context.Context, callID, to string, since time.Time) (telephony.Call, error)
		Follow(ctx context.Context, callID, sid, to string) (telephony.Call, error)
	}
	// Recorder records the call in the CRM, idempotently by call id.
	Recorder interface {
		Record(ctx context.Context, rec crm.CallRecord) (string, error)
	}
)

// Services are the clients of the call flow.
type Services struct {
	LLM       Scripter
	TTS       Speaker
	Telephony Dialer
	CRM       Recorder
}

// Caller takes call requests from the shared work queue.
type Caller struct {
	conn     *bus.Conn
	cfg      config.Caller
	svc      Services
	fleet    *resilience.Fleet
	retries  map[string]resilience.Retry
	health   map[string]config.Health
	progress jetstream.KeyValue
	audio    *media.Store
	gates    gates
	clock    resilience.Clock
	log      *slog.Logger
}

// New builds a caller: one breaker (shared with the fleet) and one retry
// policy with its budget per service, the progress bucket and the fleet's
// probe-election bucket.
func New(ctx context.Context, conn *bus.Conn, cfg config.Config, svc Services, clock resilience.Clock, log *slog.Logger) (*Caller, error) {
	if clock == nil {
		clock = resilience.SystemClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Caller{
		conn:    conn,
		cfg:     cfg.Caller,
		svc:     svc,
		fleet:   resilience.NewFleet(conn, clock, log),
		retries: make(map[string]resilience.Retry),
		health:  make(map[string]config.Health),
		clock:   clock,
		log:     log,
	}
	for _, name := range config.Services {
		s := cfg.Services[name]
		if _, err := c.fleet.Add(name, s.Breaker); err != nil {
			return nil, err
		}
		c.retries[name] = resilience.NewRetry(s.Retry, clock)
		c.health[name] = s.Health
	}
	kv, err := conn.KeyValue(ctx, ProgressBucket, 7*24*time.Hour)
	if err != nil {
		return nil, err
	}
	c.progress = kv
	// The fleet elects its half-open probes here, so that a recovering
	// service gets half_open_requests probes, not that many per caller.
	probes, err := conn.KeyValue(ctx, resilience.ProbeBucket, resilience.ProbeBucketTTL)
	if err != nil {
		return nil, err
	}
	c.fleet.CoordinateProbes(probes)
	audio, err := media.Create(ctx, conn, cmp.Or(cfg.Media.AudioMaxAge, config.Default().Media.AudioMaxAge))
	if err != nil {
		return nil, err
	}
	c.audio = audio
	// Campaign control, the do-not-call list and pacing are read right
	// before every dial.
	if c.gates, err = openGates(ctx, conn); err != nil {
		return nil, err
	}
	return c, nil
}

// Fleet returns the caller's fleet of breakers.
func (c *Caller) Fleet() *resilience.Fleet { return c.fleet }

// Run starts the fleet breaker and the health probes and takes requests until
// ctx is done; then it stops taking work and gives in-flight calls the
// shutdown grace to finish before handing them back.
func (c *Caller) Run(ctx context.Context) error {
	if err := c.fleet.Start(ctx); err != nil {
		return err
	}
	probes := map[string]any{
		config.ServiceLLM: c.svc.LLM, config.ServiceElevenLabs: c.svc.TTS,
		config.ServiceTelephony: c.svc.Telephony, config.ServiceCRM: c.svc.CRM,
	}
	for name, client := range probes {
		h, ok := client.(resilience.HealthChecker)
		if !ok || !c.health[name].Enabled {
			continue
		}
		go resilience.NewProber(c.fleet, name, h, c.health[name]).Run(ctx)
	}
	err := c.conn.Consume(ctx, bus.ConsumerSpec{
		Stream:         events.StreamCalls,
		Durable:        c.consumerName(),
		FilterSubjects: []string{events.DispatchAll},
		AckWait:        c.cfg.AckWait,
		MaxAckPending:  c.cfg.FleetMaxInFlight,
		Concurrency:    c.cfg.Concurrency,
		Grace:          c.cfg.ShutdownGrace,
	}, c.Handle)
	<-c.fleet.Done()
	return err
}

func (c *Caller) consumerName() string {
	if c.cfg.Consumer != "" {
		return c.cfg.Consumer
	}
	return "callers"
}

// progress is what survives a caller's death, per call.
type progress struct {
	// SID is set as soon as the call is placed and CallStatus once it has
	// ended, so a caller taking the call over follows the call already
	// placed, or goes straight to the CRM, and never rings the contact again.
	SID        string `json:"sid,omitempty"`
	CallStatus string `json:"call_status,omitempty"`
	Duration   int64  `json:"duration_ms,omitempty"`
	// Dialed is when the first try to place the call began, stored before
	// it: the answer to a create can be lost after the call was placed, or
	// the caller die before storing the sid, and a caller taking over then
	// asks the provider for a call placed since.
	Dialed time.Time `json:"dialed,omitzero"`
	// CRMRecord is the CRM's record id once the write is done, so that a
	// redelivery (its terminal event could not be stored) does not write
	// again.
	CRMRecord string `json:"crm_record_id,omitempty"`
	// Terminal is the outcome once its event is stored.
	Terminal string `json:"terminal,omitempty"`
}

// Handle runs one call request. It is the bus handler: nil acknowledges the
// request, which happens only after the terminal event is stored.
func (c *Caller) Handle(ctx context.Context, m *bus.Msg) error {
	req, err := events.DecodeRequest(m.Data)
	if err != nil {
		return err // malformed: the bus terminates it
	}
	err = c.handle(ctx, m, req)
	if !errors.Is(err, errPaused) {
		return err
	}
	// Paused: park it outside the consumer's window (see PausedRecheck),
	// then acknowledge it. Stored first, so it is always somewhere on CALLS.
	if perr := c.park(ctx, m, req); perr != nil {
		c.log.Warn("park paused request; handing it back", "call_id", req.CallID, "err", perr)
		return bus.Retry(err, PausedRecheck)
	}
	c.log.Debug("campaign paused; request parked", "call_id", req.CallID, "for", PausedRecheck)
	return nil
}

func (c *Caller) handle(ctx context.Context, m *bus.Msg, req *events.CallRequest) error {
	log := c.log.With("call_id", req.CallID, "contact", req.Masked(), "delivery", m.Delivered)
	key := progressKey(req.CallID)
	prog, rev, err := c.loadProgress(ctx, key)
	if err != nil {
		return err
	}
	if prog.Terminal != "" {
		log.Info("call already ended; acknowledging redelivered request", "outcome", prog.Terminal)
		return nil
	}
	start := c.clock.Now()
	var outcome *events.Call
	if rev == 0 {
		// A contact suppressed or a campaign cancelled or paused before the
		// call began has nothing started: no LLM, no TTS, no started event.
		if outcome, _, err = c.gate(ctx, req, false); err != nil {
			return err
		}
	}
	// Progress is only saved once the started event is stored: a request
	// held for the CRM comes back many times, past the stream's duplicate
	// window, and must not start the call again in the history.
	if rev == 0 && outcome == nil {
		if err := c.emit(ctx, &events.Call{Header: events.Header{ID: req.CallID + ".started"}, CallRef: req.Ref(), Outcome: events.CallStarted, Attempt: req.Attempt}); err != nil {
			return err
		}
	}

	if outcome == nil {
		callCtx := ctx
		if c.cfg.CallTimeout > 0 {
			var cancel context.CancelFunc
			callCtx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
			defer cancel()
		}
		outcome, err = c.flow(callCtx, req, &prog, &rev, key)
		if err != nil {
			if ctx.Err() != nil {
				// Shutting down: hand the request back; its progress is kept.
				return fmt.Errorf("call %s interrupted: %w", req.CallID, ctx.Err())
			}
			return err
		}
	}
	outcome.Header = events.Header{ID: req.CallID + ".terminal"}
	outcome.CallRef = req.Ref()
	outcome.Attempt = req.Attempt
	outcome.LatencyMs = c.clock.Now().Sub(start).Milliseconds()

	// The terminal event must be stored even if shutdown began meanwhile:
	// the work is done and only its record is missing.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if outcome.Outcome == events.CallCompleted {
		if n, err := c.audio.Size(fctx, req.CallID); err == nil {
			outcome.AudioBytes = n
		}
	}
	if err := c.emit(fctx, outcome); err != nil {
		return err
	}
	prog.Terminal = outcome.Outcome
	if _, err := c.saveProgress(fctx, key, prog, rev); err != nil {
		// The event's fixed id deduplicates a repeat; the request will be
		// redelivered and end here again.
		log.Warn("save progress", "err", err)
	}
	log.Info("call ended", "outcome", outcome.Outcome, "reason", outcome.Reason, "service", outcome.Service)
	return nil
}

// flow runs the four steps. It returns the terminal event to publish, or an
// error when the request must be handed back (shutdown, bus trouble).
func (c *Caller) flow(ctx context.Context, req *events.CallRequest, prog *progress, rev *uint64, key string) (*events.Call, error) {
	if prog.SID == "" {
		// The CRM comes after the contact is rung, and an open CRM breaker
		// would then hold the call until it closes: skip before any work
		// instead, so that the queue moves on while the CRM is down.
		if b := c.fleet.Breaker(config.ServiceCRM); b.State() == resilience.StateOpen {
			return &events.Call{Outcome: events.CallSkipped, Service: config.ServiceCRM,
				Reason: string(resilience.StopCircuitOpen), ErrorCategory: events.CategoryCircuitOpen,
				Message: "the crm circuit breaker is open", RetryInMs: b.RecoveryTimeout().Milliseconds()}, nil
		}
		if out, err := c.render(ctx, req); out != nil || err != nil {
			return out, err
		}
	}
	if prog.CallStatus == "" {
		since := prog.Dialed // an earlier delivery's, whose call may exist
		release := func() {}
		if prog.SID == "" && since.IsZero() {
			// Right before dialling: a number put on the do-not-call list,
			// or a campaign paused or cancelled, while the script was being
			// written is not rung; pacing takes its slot here.
			out, rel, err := c.gate(ctx, req, true)
			if out != nil || err != nil {
				return out, err
			}
			release = rel
			prog.Dialed = c.clock.Now()
			// Never dial unless this mark is stored: a caller taking the
			// request over (an ack lost with a stream leader, a crash) would
			// find no trace of the call and ring the contact again.
			if err := c.needProgress(ctx, key, *prog, rev, "before the call is placed"); err != nil {
				release()
				return nil, err
			}
		}
		var call telephony.Call
		var lost error
		err := c.step(ctx, req, config.ServiceTelephony, func(ctx context.Context) error {
			if prog.SID == "" {
				placed, err := c.svc.Telephony.Dial(ctx, req.CallID, req.Phone, since)
				if err != nil {
					return err
				}
				prog.SID = placed.SID
				// Stored before the call is followed, which lasts as long
				// as the call: a caller dying meanwhile must not make its
				// successor ring the contact again.
				if lost = c.keepProgress(ctx, key, *prog, rev, "after the call was placed"); lost != nil {
					return nil // placed; the other delivery follows it
				}
			}
			var err error
			call, err = c.svc.Telephony.Follow(ctx, req.CallID, prog.SID, req.Phone)
			return err
		})
		release() // the call has ended (or was never placed): its slot is free
		if lost != nil {
			return nil, lost
		}
		if err != nil {
			return c.failure(ctx, config.ServiceTelephony, err, prog.SID != "")
		}
		prog.CallStatus, prog.Duration = call.Status, call.Duration.Milliseconds()
		if err := c.keepProgress(ctx, key, *prog, rev, "after the call ended"); err != nil {
			return nil, err
		}
	}
	if prog.CRMRecord == "" {
		// From here on the contact has been rung: whatever the CRM does,
		// this call is not failed or skipped (either would have the
		// dispatcher ring them again), it waits for the CRM (see failure).
		var id string
		err := c.step(ctx, req, config.ServiceCRM, func(ctx context.Context) error {
			var err error
			id, err = c.svc.CRM.Record(ctx, crm.CallRecord{
				CallID: req.CallID, Campaign: req.Campaign, ContactID: req.ContactID, Contact: req.Masked(),
				Status: prog.CallStatus, Duration: time.Duration(prog.Duration) * time.Millisecond,
				Body: "Outbound call by the AI call agent", Timestamp: c.clock.Now(),
			})
			return err
		})
		if err != nil {
			return c.failure(ctx, config.ServiceCRM, err, true)
		}
		prog.CRMRecord = id
		if err := c.keepProgress(ctx, key, *prog, rev, "after the crm write"); err != nil {
			return nil, err
		}
	}
	return &events.Call{Outcome: events.CallCompleted, CallStatus: prog.CallStatus, CRMRecordID: prog.CRMRecord}, nil
}

// render writes the script and renders it to audio, stored in the call_audio
// bucket before the call is placed: the provider fetches it once the callee
// answers. Audio stored already means an earlier delivery of the request got
// this far before it died: neither the LLM nor TTS runs again. A crash
// between TTS and the store renders it again, which costs characters but
// never a second call. It returns the terminal event when a step failed,
// nil when the audio is stored.
func (c *Caller) render(ctx context.Context, req *events.CallRequest) (*events.Call, error) {
	switch _, err := c.audio.Size(ctx, req.CallID); {
	case err == nil:
		c.log.Info("audio stored by an earlier delivery; not rendering it again", "call_id", req.CallID)
		return nil, nil
	case !errors.Is(err, media.ErrNotFound):
		// Without the bucket the call could not play its audio anyway.
		return nil, err
	}
	var script string
	err := c.step(ctx, req, config.ServiceLLM, func(ctx context.Context) error {
		s, err := c.svc.LLM.Script(ctx, llm.ScriptRequest{CallID: req.CallID, ContactName: req.Name, Vars: req.Vars, Campaign: req.Campaign})
		script = s
		return err
	})
	if err != nil {
		return c.failure(ctx, config.ServiceLLM, err, false)
	}
	var audio []byte
	err = c.step(ctx, req, config.ServiceElevenLabs, func(ctx context.Context) error {
		a, err := c.svc.TTS.Speak(ctx, req.CallID, script)
		audio = a
		return err
	})
	if err != nil {
		return c.failure(ctx, config.ServiceElevenLabs, err, false)
	}
	if err := c.audio.Put(ctx, req.CallID, audio); err != nil {
		return nil, err
	}
	return nil, nil
}

// step calls one service under its breaker and retry policy, publishing an
// attempt event per try and a retry event per scheduled retry.
func (c *Caller) step(ctx context.Context, req *events.CallRequest, service string, fn func(context.Context) error) error {
	b := c.fleet.Breaker(service)
	retry := c.retries[service]
	maxAttempts := retry.MaxRetries + 1
	var emitErr error
	retry.OnRetry = func(ri resilience.RetryInfo) {
		ev := &events.Retry{CallRef: req.Ref(), Service: service, Attempt: ri.Attempt, MaxAttempts: ri.MaxAttempts,
			RetryInMs: ri.Delay.Milliseconds(), BreakerState: b.State().String()}
		describe(ri.Err, &ev.ErrorCategory, &ev.StatusCode, nil, &ev.Message)
		if err := c.emit(ctx, ev); err != nil && emitErr == nil {
			emitErr = err
		}
	}
	err := retry.Do(ctx, func(ctx context.Context, attempt int) error {
		start := c.clock.Now()
		err := b.Execute(ctx, fn)
		if resilience.Classify(err) == resilience.CircuitOpen && errors.Is(err, resilience.ErrCircuitOpen) {
			return err // refused without calling the service: no attempt to report
		}
		ev := &events.Attempt{CallRef: req.Ref(), Service: service, Attempt: attempt, MaxAttempts: maxAttempts,
			LatencyMs: c.clock.Now().Sub(start).Milliseconds(), BreakerState: b.State().String()}
		switch {
		case err == nil:
			ev.Outcome = events.OutcomeSuccess
		case resilience.Classify(err) == "":
			ev.Outcome = events.OutcomeCanceled
		default:
			ev.Outcome = events.OutcomeFailure
			describe(err, &ev.ErrorCategory, &ev.StatusCode, &ev.ErrorCode, &ev.Message)
		}
		if perr := c.emit(context.WithoutCancel(ctx), ev); perr != nil && emitErr == nil {
			emitErr = perr
		}
		return err
	})
	if emitErr != nil {
		// Events that matter could not be stored: hand the request back
		// rather than end a call whose history is missing.
		return fmt.Errorf("publish %s events: %w", service, emitErr)
	}
	return err
}

// failure turns a step's error into the terminal event, or returns an error
// when the request must go back to the queue instead. placed says the
// contact has been rung already.
func (c *Caller) failure(ctx context.Context, service string, err error, placed bool) (*events.Call, error) {
	var re *resilience.RetryError
	if !errors.As(err, &re) {
		return nil, err // not the policy's verdict: bus trouble
	}
	if re.Reason == resilience.StopCanceled {
		return nil, err
	}
	if placed && (service == config.ServiceCRM || re.Reason == resilience.StopCircuitOpen || re.Reason == resilience.StopBudget) {
		return nil, c.hold(service, re)
	}
	ev := &events.Call{Service: service, Reason: string(re.Reason)}
	describe(re.Err, &ev.ErrorCategory, &ev.StatusCode, nil, &ev.Message)
	switch re.Reason {
	case resilience.StopCircuitOpen, resilience.StopBudget:
		// Degrade gracefully: the contact is skipped now and re-queued by the
		// dispatcher once the service may have recovered.
		ev.Outcome = events.CallSkipped
		ev.RetryInMs = retryIn(re.Err, c.fleet.Breaker(service)).Milliseconds()
		if re.Reason == resilience.StopCircuitOpen {
			ev.ErrorCategory = events.CategoryCircuitOpen
		}
	default: // permanent, retries exhausted, timeout
		ev.Outcome = events.CallFailed
	}
	return ev, nil
}

// hold hands the request of a call already placed back to the queue, to come
// back once service may work again, and the call resumes at the step it
// stopped at (its progress says the contact was rung: they are not rung
// again). The request stays in the CALLS stream meanwhile (NakWithDelay, no
// delivery limit on the callers' consumer), so an outage of any length
// loses nothing, and a caller that dies in between leaves it to another.
// Every delivery makes its attempts again, so the attempt events, and the
// alerts derived from them, go on as long as the outage does.
//
// A failure after placement skipped or failed would have the dispatcher
// queue the contact again, ringing them twice, or lose the call's record.
// That goes for a CRM write that is refused (retries exhausted, timeout,
// breaker, budget) and for a permanent refusal too: every permanent CRM
// error we know of (401 expired key, 403 missing scope, the DAILY limit, a
// 400 for a property missing from the portal, an answer of another shape)
// is the portal's or the deployment's, fixed by an operator, not this
// call's, and once it is fixed the held writes go through by themselves.
// It is logged as an error each time; the fleet's in-flight cap bounds how
// many contacts are rung meanwhile.
func (c *Caller) hold(service string, re *resilience.RetryError) error {
	delay := retryIn(re.Err, c.fleet.Breaker(service))
	if re.Reason == resilience.StopPermanent {
		c.log.Error("call placed but "+service+" refuses to record it; request held until it is fixed (api key, scopes, portal properties)",
			"err", re, "retry_in", delay)
	} else {
		c.log.Warn("call placed but "+service+" unavailable; request held until it recovers", "err", re, "retry_in", delay)
	}
	return bus.Retry(re, delay)
}

func retryIn(err error, b *resilience.Breaker) time.Duration {
	var e *resilience.Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter
	}
	return b.RecoveryTimeout()
}

// describe copies what an error says about the failure into event fields.
func describe(err error, category *string, status *int, code *string, message *string) {
	var e *resilience.Error
	if errors.As(err, &e) {
		*category = string(e.Category)
		*status = e.StatusCode
		if code != nil {
			*code = e.Code
		}
		*message = e.Error()
		return
	}
	if err != nil {
		*category = string(resilience.Classify(err))
		*message = err.Error()
	}
}

func (c *Caller) emit(ctx context.Context, ev events.Event) error {
	if err := c.conn.Emit(ctx, ev); err != nil {
		return fmt.Errorf("emit %s: %w", ev.Subject(), err)
	}
	return nil
}

var keySafe = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// progressKey is the call id when it is a valid key, else its hex encoding.
func progressKey(callID string) string {
	if keySafe.MatchString(callID) && callID[0] != '.' && callID[len(callID)-1] != '.' {
		return callID
	}
	return "x" + hex.EncodeToString([]byte(callID))
}

func (c *Caller) loadProgress(ctx context.Context, key string) (progress, uint64, error) {
	var p progress
	e, err := c.progress.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return p, 0, nil
	}
	if err != nil {
		return p, 0, fmt.Errorf("load call progress: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return progress{}, e.Revision(), nil // unreadable: start over, CRM is idempotent
	}
	return p, e.Revision(), nil
}

// errTakenOver means another delivery of the same request saved the call's
// progress first: the server handed the request out again while this caller
// still worked on it (an ack wait that ran out, a server restart).
var errTakenOver = errors.New("another caller is running this call")

// keepProgress saves the progress and moves rev on. A save that finds the
// progress changed by another delivery of the request returns an error that
// hands the request back: racing that delivery to the CRM and the terminal
// event would make every effect twice. Any other failure is only logged: the
// worst it costs is a step done again after a takeover.
func (c *Caller) keepProgress(ctx context.Context, key string, p progress, rev *uint64, when string) error {
	err := c.needProgress(ctx, key, p, rev, when)
	if err != nil && !errors.Is(err, errTakenOver) {
		c.log.Warn("save progress "+when, "key", key, "err", err)
		return nil
	}
	return err
}

// needProgress saves p, and fails when it could not: the step that follows
// must not run without it (see keepProgress for steps that may). Another
// caller's newer revision hands the request back to it.
func (c *Caller) needProgress(ctx context.Context, key string, p progress, rev *uint64, when string) error {
	r, err := c.saveProgress(ctx, key, p, *rev)
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		// Update finds a newer revision, or Create an existing key.
		c.log.Warn("call progress saved by another caller "+when+"; leaving the call to it", "key", key)
		return bus.Retry(fmt.Errorf("call %s: %w", key, errTakenOver), c.cfg.AckWait)
	case err != nil:
		return fmt.Errorf("call %s: progress %s: %w", key, when, err)
	}
	*rev = r
	return nil
}

func (c *Caller) saveProgress(ctx context.Context, key string, p progress, rev uint64) (uint64, error) {
	data, _ := json.Marshal(p)
	var r uint64
	var err error
	if rev == 0 {
		r, err = c.progress.Create(ctx, key, data)
	} else {
		r, err = c.progress.Update(ctx, key, data, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("save call progress: %w", err)
	}
	return r, nil
}
