package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// This breaker is hand-written rather than built on sony/gobreaker: the fleet
// needs to open and close it from outside (a peer's transition, a health
// probe), to open it until a given time, to tell adopted transitions from own
// ones, and to run on a fake clock in tests; gobreaker offers none of these.
// The shape follows gobreaker: typed states, a generation counter so late
// results of an old state are ignored, and lazy open -> half-open.

// State is a breaker state. Its String values are the contract's
// breaker_state strings.
type State int8

// Breaker states.
const (
	StateClosed State = iota
	StateOpen
	StateHalfOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return events.BreakerClosed
	case StateOpen:
		return events.BreakerOpen
	case StateHalfOpen:
		return events.BreakerHalfOpen
	}
	return fmt.Sprintf("state(%d)", int8(s))
}

// ParseState reads a contract breaker_state string.
func ParseState(s string) (State, error) {
	switch s {
	case events.BreakerClosed:
		return StateClosed, nil
	case events.BreakerOpen:
		return StateOpen, nil
	case events.BreakerHalfOpen:
		return StateHalfOpen, nil
	}
	return 0, fmt.Errorf("unknown breaker state %q", s)
}

// Reasons for a transition, carried on breaker events.
const (
	ReasonFailures        = "consecutive_failures"
	ReasonFailureRate     = "failure_rate"
	ReasonRecoveryTimeout = "recovery_timeout"
	ReasonProbeSucceeded  = "probe_succeeded"
	ReasonProbeFailed     = "probe_failed"
	ReasonHealthCheck     = "health_check"
)

// Defaults of a breaker whose configuration fields are zero.
const (
	DefaultFailureThreshold = 5
	DefaultRecoveryTimeout  = 30 * time.Second
	DefaultHalfOpenRequests = 1
	DefaultRateWindow       = time.Minute
	DefaultMinRequests      = 10
)

// halfOpenRetryAfter is the RetryAfter of a call refused because the
// half-open breaker's probes are all in flight: they resolve within one
// request's time, so the caller should come back soon, not after a whole
// recovery timeout.
const halfOpenRetryAfter = time.Second

// Transition is one change of a breaker's state.
type Transition struct {
	Service  string
	From, To State
	Reason   string
	At       time.Time
	// OpenUntil is when an open breaker lets probes through; zero unless To
	// is StateOpen.
	OpenUntil time.Time
	// Failures counts the failures that tripped the breaker: consecutive
	// ones, or those in the rate window.
	Failures int
	// Origin is the source of the peer whose transition this one adopts,
	// empty for the breaker's own.
	Origin string
}

// Breaker is a circuit breaker for one service. While closed it lets every
// call through and counts failures; FailureThreshold consecutive failures, or
// a failure rate of at least FailureRate over Window with MinRequests calls,
// open it. While open it refuses calls without making them, returning an
// *Error of category CircuitOpen whose RetryAfter is the time left. After
// RecoveryTimeout it is half-open: HalfOpenRequests probes go through, and
// when they all succeed it closes; one failure opens it again.
//
// What counts: only a Transient error (5xx, 429, timeouts, network errors)
// is a failure. A Permanent error (400, 401, 404, ...) is evidence that the
// service is up and answering, so it counts as a success: a bad request or a
// bad key is not an outage, and retrying it or failing fast does not help;
// the alert rules deal with it. A call cut short by a cancelled context
// counts as neither, and so does an error of category CircuitOpen.
//
// A breaker made by a Fleet also counts the peers' outcomes and lets a
// half-open probe through only once the fleet has elected it (see Fleet).
//
// Breaker is safe for concurrent use.
type Breaker struct {
	service      string
	threshold    int
	recovery     time.Duration
	probesNeeded int
	rate         float64
	minRequests  int
	clock        Clock
	onTransition func(Transition)
	gate         probeGate // nil: every probe is this process's own business

	mu    sync.Mutex
	state State
	gen   uint64 // changes with every transition
	// openUntil is when the open period ends. It is kept through half-open,
	// where it names the open period the probes are for: the fleet's
	// breakers converge on the same value, so they elect the same probes.
	openUntil   time.Time
	consecutive int
	window      outcomeWindow
	probes      int // probes let through in this half-open state and not yet neutral
	successes   int // probes that succeeded in this half-open state
}

// NewBreaker returns a closed breaker for service configured by cfg (zero
// fields take the Default values above; FailureRate 0 disables the rate
// trip). clock may be nil for the system clock. onTransition, when not nil,
// is called on every transition in order, with the breaker's lock held: it
// must be quick and must not call the breaker.
func NewBreaker(service string, cfg config.Breaker, clock Clock, onTransition func(Transition)) *Breaker {
	b := &Breaker{
		service:      service,
		threshold:    cfg.FailureThreshold,
		recovery:     cfg.RecoveryTimeout,
		probesNeeded: cfg.HalfOpenRequests,
		rate:         cfg.FailureRate,
		minRequests:  cfg.MinRequests,
		clock:        clockOr(clock),
		onTransition: onTransition,
	}
	if b.threshold <= 0 {
		b.threshold = DefaultFailureThreshold
	}
	if b.recovery <= 0 {
		b.recovery = DefaultRecoveryTimeout
	}
	if b.probesNeeded <= 0 {
		b.probesNeeded = DefaultHalfOpenRequests
	}
	if b.minRequests <= 0 {
		b.minRequests = DefaultMinRequests
	}
	window := cfg.Window
	if window <= 0 {
		window = DefaultRateWindow
	}
	b.window.width = max(window/rateBuckets, 1)
	return b
}

// Service is the name of the service the breaker guards.
func (b *Breaker) Service() string { return b.service }

// RecoveryTimeout is how long the breaker stays open after tripping.
func (b *Breaker) RecoveryTimeout() time.Duration { return b.recovery }

// State returns the current state. An open breaker whose recovery timeout has
// passed becomes half-open here, reporting the transition.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refresh(b.clock.Now())
	return b.state
}

// Execute calls fn if the breaker lets the call through and records its
// result; it returns fn's error unchanged. A refused call returns an *Error
// of category CircuitOpen wrapping ErrCircuitOpen, and a context already done
// returns its error; neither calls fn. If fn panics the call counts as a
// failure and the panic goes on.
func (b *Breaker) Execute(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	gen, slot, err := b.allow(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			b.done(gen, resultFailure)
			panic(p)
		}
	}()
	err = fn(ctx)
	r := judge(ctx, err)
	b.done(gen, r)
	if slot != nil && r == resultNeutral {
		// A probe that decided nothing gives its fleet-wide slot back.
		b.gate.release(slot)
	}
	return err
}

// ForceOpen opens the breaker until the given time (zero means the recovery
// timeout from now) on behalf of origin: a peer's source, or "" for this
// process. An open breaker only extends its time; an until already past does
// nothing. A breaker made half-open early (by a health check) ignores an open
// that ends no later than the period it left, unless a probe failed: that is
// a late copy of the open it has already been through (the fleet's breakers
// each publish their own open when they count the same failures), not news.
func (b *Breaker) ForceOpen(until time.Time, origin, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if until.IsZero() {
		until = now.Add(b.recovery)
	}
	if !until.After(now) {
		return
	}
	if b.state == StateHalfOpen && reason != ReasonProbeFailed && !until.After(b.openUntil) {
		return
	}
	if b.state == StateOpen {
		// Open but possibly due for half-open: extending keeps it open
		// without reporting a transition that did not happen.
		if until.After(b.openUntil) {
			b.openUntil = until
		}
		return
	}
	b.openUntil = until
	b.transition(now, StateOpen, reason, origin, 0)
}

// ForceClose closes the breaker on behalf of origin (a peer's source, or ""
// for this process). A closed breaker stays as it is.
func (b *Breaker) ForceClose(origin, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == StateClosed {
		return
	}
	b.transition(b.clock.Now(), StateClosed, reason, origin, 0)
}

// ForceHalfOpen ends an open period early, on behalf of origin (a peer's
// source, or "" for this process): the breaker becomes half-open, where real
// calls decide as after the recovery timeout. A closed or half-open breaker
// stays as it is. It is how a successful health check acts: a cheap probe
// answering says the service may be back, not that the calls will work.
func (b *Breaker) ForceHalfOpen(origin, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != StateOpen {
		return
	}
	b.transition(b.clock.Now(), StateHalfOpen, reason, origin, 0)
}

// observe counts the outcome of a call a peer made (see Fleet). While closed
// it counts as one of this breaker's own; while half-open a success counts
// as a probe's (the fleet's probes are elected, so a peer's success is one
// of them), but a failure is left to the peer that made it, which opens its
// breaker and publishes the open for this one to adopt; while open it is
// ignored.
func (b *Breaker) observe(r result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refresh(b.clock.Now())
	switch b.state {
	case StateClosed:
		b.doneClosed(r)
	case StateHalfOpen:
		if r == resultSuccess {
			b.probeSucceeded()
		}
	}
}

// maxClaims bounds how often allow starts over because the state changed
// while it was asking the fleet for a probe slot.
const maxClaims = 3

func (b *Breaker) allow(ctx context.Context) (uint64, *probeSlot, error) {
	for range maxClaims {
		b.mu.Lock()
		if b.state == StateClosed {
			gen := b.gen
			b.mu.Unlock()
			return gen, nil, nil
		}
		now := b.clock.Now()
		b.refresh(now)
		switch b.state {
		case StateOpen:
			err := b.refusal(b.openUntil.Sub(now), "circuit breaker is open")
			b.mu.Unlock()
			return 0, nil, err
		case StateHalfOpen:
			if b.probes >= b.probesNeeded {
				err := b.refusal(halfOpenRetryAfter, "circuit breaker is half-open and its probes are in flight")
				b.mu.Unlock()
				return 0, nil, err
			}
		}
		b.probes++ // reserved while the fleet is asked
		gen := b.gen
		if b.gate == nil {
			b.mu.Unlock()
			return gen, nil, nil
		}
		want := probeSlot{service: b.service, period: b.openUntil, round: probeRound(now, b.openUntil, b.recovery), slots: b.probesNeeded}
		b.mu.Unlock()

		// The claim is I/O: it runs without the lock.
		slot, ok := b.gate.claim(ctx, want)
		b.mu.Lock()
		if gen != b.gen || ctx.Err() != nil {
			// The state moved on meanwhile (the reservation went with it),
			// or the call was cancelled: give the slot back, start over.
			if gen == b.gen {
				b.probes--
			}
			b.mu.Unlock()
			if ok && slot != nil {
				b.gate.release(slot)
			}
			if err := ctx.Err(); err != nil {
				return 0, nil, err
			}
			continue
		}
		if !ok {
			b.probes--
			err := b.refusal(halfOpenRetryAfter, "circuit breaker is half-open and the fleet's probes are in flight")
			b.mu.Unlock()
			return 0, nil, err
		}
		b.mu.Unlock()
		return gen, slot, nil
	}
	return 0, nil, b.refusal(halfOpenRetryAfter, "circuit breaker is changing state")
}

// probeRound numbers the rounds of the fleet's probe election: rounds of one
// recovery timeout counted from the end of the open period (negative before
// it, when a health check ended the period early). A slot is claimed for a
// round, so a probe whose caller died holds its slot until the round ends
// and not forever.
func probeRound(now, period time.Time, lease time.Duration) int64 {
	d := now.Sub(period)
	r := int64(d / lease)
	if d < 0 && d%lease != 0 {
		r-- // floor, not truncation toward zero
	}
	return r
}

func (b *Breaker) refusal(retryAfter time.Duration, msg string) *Error {
	return &Error{Service: b.service, Category: CircuitOpen, RetryAfter: max(retryAfter, 0), Message: msg, Err: ErrCircuitOpen}
}

type result int8

const (
	resultNeutral result = iota
	resultSuccess
	resultFailure
)

func judge(ctx context.Context, err error) result {
	if err == nil {
		return resultSuccess
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		// Whatever fn made of it, the call was cut short by this process.
		return resultNeutral
	}
	switch Classify(err) {
	case Transient:
		return resultFailure
	case Permanent:
		return resultSuccess
	}
	return resultNeutral
}

func (b *Breaker) done(gen uint64, r result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.gen {
		return // the result of a call let through in an earlier state
	}
	switch b.state {
	case StateClosed:
		b.doneClosed(r)
	case StateHalfOpen:
		switch r {
		case resultSuccess:
			b.probeSucceeded()
		case resultFailure:
			now := b.clock.Now()
			b.openUntil = now.Add(b.recovery)
			b.transition(now, StateOpen, ReasonProbeFailed, "", 1)
		default:
			b.probes-- // give the slot to another probe
		}
	}
}

func (b *Breaker) probeSucceeded() {
	b.successes++
	if b.successes >= b.probesNeeded {
		b.transition(b.clock.Now(), StateClosed, ReasonProbeSucceeded, "", 0)
	}
}

func (b *Breaker) doneClosed(r result) {
	if r == resultNeutral {
		return
	}
	var now time.Time
	if b.rate > 0 || r == resultFailure {
		now = b.clock.Now()
	}
	if b.rate > 0 {
		b.window.add(now, r == resultFailure)
	}
	if r == resultSuccess {
		b.consecutive = 0
		return
	}
	b.consecutive++
	if b.consecutive >= b.threshold {
		b.trip(now, ReasonFailures, b.consecutive)
		return
	}
	if b.rate > 0 {
		total, failures := b.window.totals(now)
		if total >= b.minRequests && float64(failures) >= b.rate*float64(total) {
			b.trip(now, ReasonFailureRate, failures)
		}
	}
}

func (b *Breaker) trip(now time.Time, reason string, failures int) {
	b.openUntil = now.Add(b.recovery)
	b.transition(now, StateOpen, reason, "", failures)
}

// refresh turns an open breaker whose time is up into a half-open one.
func (b *Breaker) refresh(now time.Time) {
	if b.state == StateOpen && !now.Before(b.openUntil) {
		b.transition(now, StateHalfOpen, ReasonRecoveryTimeout, "", 0)
	}
}

func (b *Breaker) transition(now time.Time, to State, reason, origin string, failures int) {
	from := b.state
	b.state = to
	b.gen++
	switch to {
	case StateClosed:
		b.consecutive = 0
		b.window.reset()
	case StateHalfOpen:
		b.probes, b.successes = 0, 0
	}
	if b.onTransition == nil {
		return
	}
	t := Transition{Service: b.service, From: from, To: to, Reason: reason, At: now, Failures: failures, Origin: origin}
	if to == StateOpen {
		t.OpenUntil = b.openUntil
	}
	b.onTransition(t)
}

// rateBuckets is how finely the failure-rate window slides.
const rateBuckets = 10

// outcomeWindow counts successes and failures over a sliding window made of
// rateBuckets buckets of width each.
type outcomeWindow struct {
	width   time.Duration
	buckets [rateBuckets]struct {
		slot            int64
		total, failures int
	}
}

func (w *outcomeWindow) add(now time.Time, failure bool) {
	slot := now.UnixNano() / int64(w.width)
	bk := &w.buckets[slot%rateBuckets]
	if bk.slot != slot {
		bk.slot, bk.total, bk.failures = slot, 0, 0
	}
	bk.total++
	if failure {
		bk.failures++
	}
}

func (w *outcomeWindow) totals(now time.Time) (total, failures int) {
	slot := now.UnixNano() / int64(w.width)
	for i := range w.buckets {
		if bk := &w.buckets[i]; slot-bk.slot < rateBuckets {
			total += bk.total
			failures += bk.failures
		}
	}
	return total, failures
}

func (w *outcomeWindow) reset() {
	for i := range w.buckets {
		w.buckets[i].slot, w.buckets[i].total, w.buckets[i].failures = 0, 0, 0
	}
}
