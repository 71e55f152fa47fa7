package resilience

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// flushTimeout bounds how long a stopping Fleet keeps publishing the
// transitions still queued.
const flushTimeout = 5 * time.Second

// Fleet shares the breakers of every caller over the bus. Each transition of
// a local breaker is published as an events.Breaker on
// agent.breaker.<service>; each peer's own transition to open or closed is
// adopted by the local breaker of the same service, so one caller finding a
// service down spares the others their own five failures, and one caller
// seeing it recover lets the others back in.
//
// Echo loops are avoided by the Origin field: an adopted transition is
// published too (so the event log shows every caller's state), but with
// Origin set to the peer it came from, and events with an Origin are never
// adopted. A process also ignores the events it published itself.
//
// Only opens and closes are adopted. Half-open is each caller's own
// business: every caller lets its own probes through when its recovery time
// is up, which bounds the fleet's probes to HalfOpenRequests per caller.
type Fleet struct {
	conn  *bus.Conn
	clock Clock
	log   *slog.Logger

	mu       sync.Mutex
	breakers map[string]*Breaker
	queue    []Transition
	started  bool

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
	f.breakers[service] = b
	return b, nil
}

// Breaker returns the breaker of service, nil if it was not added.
func (f *Fleet) Breaker(service string) *Breaker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.breakers[service]
}

// HealthSuccess closes the breaker of service after a successful health
// check, which peers adopt in turn. A closed breaker is left as it is.
func (f *Fleet) HealthSuccess(service string) {
	if b := f.Breaker(service); b != nil {
		b.ForceClose("", ReasonHealthCheck)
	}
}

// Start subscribes to the peers' breaker events and starts publishing the
// local transitions. It returns once the subscription is in place; the fleet
// runs until ctx is done, then publishes what is still queued (for at most a
// few seconds) and closes Done.
//
// The subscription is a plain NATS one: peers' transitions only matter live,
// and the EVENTS stream keeps them for the record anyway.
func (f *Fleet) Start(ctx context.Context) error {
	f.mu.Lock()
	if f.started {
		f.mu.Unlock()
		return errors.New("fleet: already started")
	}
	f.started = true
	f.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sub, err := f.conn.Subscribe(sctx, events.BreakerAll, f.onPeer)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	go func() {
		defer close(f.done)
		f.publish(ctx)
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			f.log.Warn("fleet: unsubscribe", "err", err)
		}
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

// onPeer adopts a peer's own open or close. It runs on the NATS
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
	}
}
