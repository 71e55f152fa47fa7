package resilience

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// flushTimeout bounds how long a stopping Fleet keeps publishing the
// transitions still queued.
const flushTimeout = 5 * time.Second

// Fleet shares the breakers of every caller over the bus, so that the fleet
// behaves as one breaker per service: it opens after FailureThreshold
// consecutive failures (or the failure rate) across the fleet, lets
// HalfOpenRequests probes through across the fleet per open period, and
// closes everywhere once they succeed.
//
// Counting: every caller publishes each attempt on agent.attempt.<service>
// (events.Attempt). The fleet subscribes to them and feeds each peer's
// outcome into the local breaker's consecutive count and rate window, by the
// breaker's own rules (a transient error is a failure, a permanent one a
// success, a cancelled attempt nothing). So every breaker sees the fleet's
// failures, and the first to count FailureThreshold of them opens; a breaker
// opened by counting a peer's failure publishes its own open, like one
// opened by its own calls. Attempts are only counted once finished, so calls
// already in flight on other callers when the breaker opens still reach the
// service.
//
// Transitions: each transition of a local breaker is published as an
// events.Breaker on agent.breaker.<service>; each peer's own transition to
// open or closed is adopted by the local breaker of the same service, and so
// is a peer's own half-open of reason health_check. Adopting an open extends
// the local open period to the peer's end, so the fleet's breakers converge
// on the same open_until, which names the open period for the probe
// election below.
//
// Echo loops are avoided by the Origin field: an adopted transition is
// published too (so the event log shows every caller's state), but with
// Origin set to the peer it came from, and events with an Origin are never
// adopted. A process also ignores the events it published itself, and its
// own attempts, which its breaker has counted already.
//
// Probes: with CoordinateProbes, a half-open breaker lets a probe through
// only once it has won one of the HalfOpenRequests slots of the open period
// with a key-value Create in ProbeBucket (key
// <service>.<open_until unix ms>.<round>.<slot>); a caller that finds every
// slot taken refuses the call as the breaker does while its own probes are
// in flight. A probe that fails opens its caller's breaker, which the others
// adopt; a probe that succeeds is counted by every breaker (a peer's success
// while half-open is one of the elected probes), so the breakers close once
// HalfOpenRequests of them have succeeded fleet-wide. A cancelled probe
// gives its slot back. Rounds last one recovery timeout, counted from the
// end of the open period: a probe whose caller died holds its slot until
// its round ends, and then another caller may probe, so the breaker is never
// held half-open forever. If the bucket cannot be reached a caller probes
// without the election (HalfOpenRequests per caller, as without it).
//
// Health checks: a successful health check (HealthSuccess) only ends an
// open period early, into half-open with reason health_check; real calls, as
// probes, decide whether the breaker closes. Peers adopt that half-open:
// their probes then join the same election (same open period, same slots),
// and no caller keeps refusing calls that another has started probing. A
// peer's open that arrives late for the period already left (each breaker
// that counted the failures published one) does not reopen it; a peer's
// failed probe does.
type Fleet struct {
	conn  *bus.Conn
	clock Clock
	log   *slog.Logger

	mu       sync.Mutex
	breakers map[string]*Breaker
	queue    []Transition
	started  bool
	probes   jetstream.KeyValue // the probe election's bucket; nil: none
	peerSeen uint64             // peers' attempts handled, for tests

	wake chan struct{}
	done chan struct{}
}

// NewFleet returns a fleet publishing and listening on conn, whose Source
// names this process on the events. clock may be nil for the system clock
// and log nil to discard logs.
func NewFleet(conn *bus.Conn, clock Clock, log *slog.Logger) *Fleet {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Fleet{
		conn:     conn,
		clock:    clockOr(clock),
		log:      log,
		breakers: make(map[string]*Breaker),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Add creates the breaker of service, wired to the fleet. A service may be
// added once; its name must be a valid subject token.
func (f *Fleet) Add(service string, cfg config.Breaker) (*Breaker, error) {
	if err := events.ValidToken(service); err != nil {
		return nil, fmt.Errorf("fleet breaker: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.breakers[service]; ok {
		return nil, fmt.Errorf("fleet breaker %s: already added", service)
	}
	b := NewBreaker(service, cfg, f.clock, f.enqueue)
	b.gate = f
	f.breakers[service] = b
	return b, nil
}

// Breaker returns the breaker of service, nil if it was not added.
func (f *Fleet) Breaker(service string) *Breaker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.breakers[service]
}

// HealthSuccess ends the open period of service's breaker early after a
// successful health check: the breaker becomes half-open (reason
// health_check), which peers adopt, and real calls decide from there. A
// health check is shallow (an authenticated GET that may answer while the
// real endpoint fails), so it never closes a breaker. A closed or half-open
// breaker is left as it is.
func (f *Fleet) HealthSuccess(service string) {
	if b := f.Breaker(service); b != nil {
		b.ForceHalfOpen("", ReasonHealthCheck)
	}
}

// Start subscribes to the peers' breaker and attempt events and starts
// publishing the local transitions. It returns once the subscription is in place; the fleet
// runs until ctx is done, then publishes what is still queued (for at most a
// few seconds) and closes Done.
//
// The subscriptions are plain NATS ones: peers' transitions and attempts
// only matter live, and the EVENTS stream keeps them for the record anyway.
func (f *Fleet) Start(ctx context.Context) error {
	f.mu.Lock()
	if f.started {
		f.mu.Unlock()
		return errors.New("fleet: already started")
	}
	f.started = true
	f.mu.Unlock()

	var subs []*nats.Subscription
	unsubscribe := func() {
		for _, sub := range subs {
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				f.log.Warn("fleet: unsubscribe", "subject", sub.Subject, "err", err)
			}
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, s := range []struct {
		subject string
		handle  nats.MsgHandler
	}{{events.BreakerAll, f.onPeer}, {events.AttemptAll, f.onAttempt}} {
		sub, err := f.conn.Subscribe(sctx, s.subject, s.handle)
		if err != nil {
			unsubscribe()
			return fmt.Errorf("fleet: %w", err)
		}
		subs = append(subs, sub)
	}
	go func() {
		defer close(f.done)
		f.publish(ctx)
		unsubscribe()
	}()
	return nil
}

// Done is closed once a started fleet has stopped.
func (f *Fleet) Done() <-chan struct{} { return f.done }

// enqueue is every breaker's transition listener. It runs under the
// breaker's lock, so it only queues; the publishing goroutine does the I/O
// in order.
func (f *Fleet) enqueue(t Transition) {
	f.mu.Lock()
	f.queue = append(f.queue, t)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *Fleet) next() (Transition, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return Transition{}, false
	}
	t := f.queue[0]
	f.queue[0] = Transition{}
	f.queue = f.queue[1:]
	return t, true
}

func (f *Fleet) publish(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			defer cancel()
			f.drain(flushCtx)
			return
		case <-f.wake:
			f.drain(ctx)
		}
	}
}

func (f *Fleet) drain(ctx context.Context) {
	for ctx.Err() == nil {
		t, ok := f.next()
		if !ok {
			return
		}
		f.emit(ctx, t)
	}
}

// emit publishes one transition, retrying while the bus is unreachable: the
// event is what lets the peers and the operators know. A republish keeps the
// event id, so the stream stores it once.
func (f *Fleet) emit(ctx context.Context, t Transition) {
	ev := breakerEvent(t)
	f.log.Info("breaker transition", "service", t.Service, "from", t.From.String(), "to", t.To.String(),
		"reason", t.Reason, "origin", t.Origin, "failures", t.Failures)
	wait := 100 * time.Millisecond
	for {
		err := f.conn.Emit(ctx, ev)
		if err == nil {
			return
		}
		if ctx.Err() != nil || errors.Is(err, events.ErrInvalid) || errors.Is(err, events.ErrMissing) {
			f.log.Error("breaker event lost", "service", t.Service, "to", t.To.String(), "err", err)
			return
		}
		f.log.Warn("publish breaker event", "service", t.Service, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func breakerEvent(t Transition) *events.Breaker {
	ev := &events.Breaker{
		Service:      t.Service,
		From:         t.From.String(),
		To:           t.To.String(),
		BreakerState: t.To.String(),
		Reason:       t.Reason,
		Origin:       t.Origin,
		Failures:     t.Failures,
		Message:      describe(t),
	}
	ev.Time = t.At.UTC()
	if !t.OpenUntil.IsZero() {
		u := t.OpenUntil.UTC()
		ev.OpenUntil = &u
	}
	return ev
}

func describe(t Transition) string {
	s := fmt.Sprintf("%s breaker %s -> %s", t.Service, t.From, t.To)
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	if t.Origin != "" {
		s += ", adopted from " + t.Origin
	}
	return s
}

// onPeer adopts a peer's own open or close, and its own half-open from a
// health check. It runs on the NATS
// subscription's goroutine; the breaker calls it makes only queue events.
func (f *Fleet) onPeer(msg *nats.Msg) {
	ev, err := events.DecodeAs[*events.Breaker](msg.Data)
	if err != nil {
		f.log.Warn("fleet: ignoring malformed breaker event", "subject", msg.Subject, "err", err)
		return
	}
	if ev.Source == f.conn.Source || ev.Origin != "" {
		return // our own, or adopted by a peer: adopting it again would echo
	}
	b := f.Breaker(ev.Service)
	if b == nil {
		return
	}
	switch ev.To {
	case events.BreakerOpen:
		var until time.Time
		if ev.OpenUntil != nil {
			until = *ev.OpenUntil
		}
		b.ForceOpen(until, ev.Source, ev.Reason)
	case events.BreakerClosed:
		b.ForceClose(ev.Source, ev.Reason)
	case events.BreakerHalfOpen:
		// A peer's recovery-timeout half-open is its own clock's business;
		// one from a health check is adopted so the fleet probes together.
		if ev.Reason == ReasonHealthCheck {
			b.ForceHalfOpen(ev.Source, ev.Reason)
		}
	}
}

// onAttempt counts a peer's attempt in the local breaker of its service. It
// runs on the NATS subscription's goroutine.
func (f *Fleet) onAttempt(msg *nats.Msg) {
	ev, err := events.DecodeAs[*events.Attempt](msg.Data)
	if err != nil {
		f.log.Warn("fleet: ignoring malformed attempt event", "subject", msg.Subject, "err", err)
		return
	}
	if ev.Source == f.conn.Source {
		return // counted by the breaker that made it
	}
	defer func() {
		f.mu.Lock()
		f.peerSeen++
		f.mu.Unlock()
	}()
	b := f.Breaker(ev.Service)
	if b == nil {
		return
	}
	b.observe(attemptResult(ev))
}

// attemptResult judges a peer's attempt as the breaker judges its own calls.
func attemptResult(ev *events.Attempt) result {
	switch ev.Outcome {
	case events.OutcomeSuccess:
		return resultSuccess
	case events.OutcomeFailure:
		switch ev.ErrorCategory {
		case events.CategoryTransient:
			return resultFailure
		case events.CategoryPermanent:
			return resultSuccess // the service is up and answering
		}
	}
	return resultNeutral // cancelled, or refused by a breaker
}
