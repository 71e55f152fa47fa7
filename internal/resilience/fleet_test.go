package resilience_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

var fleetBreaker = config.Breaker{FailureThreshold: 3, RecoveryTimeout: 30 * time.Second, HalfOpenRequests: 1}

// tap records every event published under subject, as any process would see it.
type tap struct {
	mu  sync.Mutex
	evs []events.Event
}

func tapEvents(t *testing.T, c *bus.Conn, subject string) *tap {
	t.Helper()
	tp := &tap{}
	sub, err := c.Subscribe(context.Background(), subject, func(m *nats.Msg) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("malformed event on %s: %v", m.Subject, err)
			return
		}
		tp.mu.Lock()
		tp.evs = append(tp.evs, ev)
		tp.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return tp
}

func (tp *tap) reset() {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.evs = nil
}

func (tp *tap) breakers() []*events.Breaker {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []*events.Breaker
	for _, ev := range tp.evs {
		if b, ok := ev.(*events.Breaker); ok {
			out = append(out, b)
		}
	}
	return out
}

func (tp *tap) health() []*events.Health {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []*events.Health
	for _, ev := range tp.evs {
		if h, ok := ev.(*events.Health); ok {
			out = append(out, h)
		}
	}
	return out
}

// startFleet connects a caller named source and starts its fleet with one
// breaker for the llm service.
func startFleet(t *testing.T, srv *natstest.Server, source string, clock resilience.Clock) (*resilience.Fleet, *bus.Conn) {
	t.Helper()
	conn := srv.Connect(t, config.NATS{}, source)
	f := resilience.NewFleet(conn, clock, natstest.Logger(t))
	f.CoordinateProbes(probeBucket(t, conn))
	if _, err := f.Add("llm", fleetBreaker); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-f.Done()
	})
	return f, conn
}

// probeBucket opens (creating it if needed) the probe election's bucket.
func probeBucket(t *testing.T, conn *bus.Conn) jetstream.KeyValue {
	t.Helper()
	kv, err := conn.KeyValue(t.Context(), resilience.ProbeBucket, resilience.ProbeBucketTTL)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestFleet(t *testing.T) {
	srv := natstest.Start(t)
	admin := srv.Conn(t) // creates the streams
	breakerTap := tapEvents(t, admin, events.BreakerAll)
	healthTap := tapEvents(t, admin, events.HealthAll)
	clock := resiliencetest.NewClock(time.Now().UTC().Truncate(time.Millisecond))
	a, connA := startFleet(t, srv, "caller-a", clock)
	b, connB := startFleet(t, srv, "caller-b", clock)
	ba, bb := a.Breaker("llm"), b.Breaker("llm")
	opened := clock.Now()

	// Caller A finds the service down and opens its breaker.
	for range 3 {
		_ = ba.Execute(t.Context(), fail)
	}
	if ba.State() != resilience.StateOpen {
		t.Fatal("caller A did not open")
	}

	// Caller B adopts the open state without a single failure of its own.
	eventually(t, "caller B to adopt the open breaker", func() bool { return bb.State() == resilience.StateOpen })
	called, err := call(t, bb, succeed)
	var e *resilience.Error
	if called || !errors.As(err, &e) || e.Category != resilience.CircuitOpen {
		t.Fatalf("caller B: called %v, err %v; want refused without calling", called, err)
	}
	if e.RetryAfter != 30*time.Second {
		t.Errorf("caller B refuses with RetryAfter %v, want A's remaining 30s", e.RetryAfter)
	}

	eventually(t, "two breaker events", func() bool { return len(breakerTap.breakers()) == 2 })
	evs := breakerTap.breakers()
	own, adopted := evs[0], evs[1]
	if own.Source != "caller-a" || own.Origin != "" || own.From != events.BreakerClosed || own.To != events.BreakerOpen ||
		own.Reason != resilience.ReasonFailures || own.Failures != 3 || own.OpenUntil == nil || !own.OpenUntil.Equal(opened.Add(30*time.Second)) {
		t.Errorf("A's own event %+v", own)
	}
	if adopted.Source != "caller-b" || adopted.Origin != "caller-a" || adopted.To != events.BreakerOpen || adopted.BreakerState != events.BreakerOpen ||
		adopted.OpenUntil == nil || !adopted.OpenUntil.Equal(*own.OpenUntil) {
		t.Errorf("B's adopted event %+v", adopted)
	}

	// A health probe on B finds the service answering: that ends the open
	// period early, into half-open on both, but closes nothing.
	var probed int
	prober := resilience.NewProber(b, "llm", resilience.HealthCheckFunc(func(ctx context.Context) error {
		probed++
		return nil
	}), config.Health{Timeout: time.Second})
	if err := prober.Probe(t.Context()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if probed != 1 || bb.State() != resilience.StateHalfOpen {
		t.Fatalf("after a successful probe: %d checks, B %s; want 1, half_open", probed, bb.State())
	}
	eventually(t, "caller A to adopt the half-open", func() bool { return ba.State() == resilience.StateHalfOpen })
	eventually(t, "a health event", func() bool { return len(healthTap.health()) == 1 })
	if h := healthTap.health()[0]; h.Source != "caller-b" || h.Service != "llm" || h.Outcome != events.OutcomeSuccess || h.BreakerState != events.BreakerHalfOpen {
		t.Errorf("health event %+v", h)
	}

	// A real call on A is the fleet's one probe: it succeeds, and both close.
	if called, err := call(t, ba, succeed); !called || err != nil {
		t.Fatalf("caller A's probe: called %v, err %v", called, err)
	}
	if ba.State() != resilience.StateClosed {
		t.Fatalf("caller A %s after its probe succeeded, want closed", ba.State())
	}
	eventually(t, "caller B to adopt the close", func() bool { return bb.State() == resilience.StateClosed })

	// No echo: six events in all, and no more once everything has settled.
	eventually(t, "six breaker events", func() bool { return len(breakerTap.breakers()) == 6 })
	for _, c := range []*bus.Conn{connA, connB, admin} {
		if err := c.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for an echo to show up, if there were one
	evs = breakerTap.breakers()
	if len(evs) != 6 {
		for _, ev := range evs {
			t.Logf("%s: %s -> %s origin %q", ev.Source, ev.From, ev.To, ev.Origin)
		}
		t.Fatalf("%d breaker events, want 6", len(evs))
	}
	if h := evs[2]; h.Source != "caller-b" || h.Origin != "" || h.From != events.BreakerOpen || h.To != events.BreakerHalfOpen || h.Reason != resilience.ReasonHealthCheck {
		t.Errorf("B's own half-open %+v", h)
	}
	if h := evs[3]; h.Source != "caller-a" || h.Origin != "caller-b" || h.To != events.BreakerHalfOpen || h.Reason != resilience.ReasonHealthCheck {
		t.Errorf("A's adopted half-open %+v", h)
	}
	if c := evs[4]; c.Source != "caller-a" || c.Origin != "" || c.From != events.BreakerHalfOpen || c.To != events.BreakerClosed || c.Reason != resilience.ReasonProbeSucceeded {
		t.Errorf("A's own close %+v", c)
	}
	if c := evs[5]; c.Source != "caller-b" || c.Origin != "caller-a" || c.To != events.BreakerClosed {
		t.Errorf("B's adopted close %+v", c)
	}

	// The same six are in the EVENTS stream, for the record and for replay.
	stream, err := admin.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(events.BreakerAll))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[events.BreakerSubject("llm")]; n != 6 {
		t.Errorf("EVENTS holds %d breaker events, want 6", n)
	}
}

func TestFleetIgnoresAdoptedAndOwn(t *testing.T) {
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	breakerTap := tapEvents(t, admin, events.BreakerAll)
	clock := resiliencetest.NewClock(time.Now().UTC())
	f, _ := startFleet(t, srv, "caller-a", clock)
	until := clock.Now().Add(time.Minute)
	// admin plays the peers: Emit keeps a source that is already set, and
	// stamps the test's name otherwise.
	peer := func(source, service, origin, to, reason string) *events.Breaker {
		ev := &events.Breaker{Service: service, From: events.BreakerClosed, To: to, BreakerState: to,
			Origin: origin, OpenUntil: &until, Reason: reason}
		ev.Source = source
		return ev
	}
	tests := []struct {
		name string
		ev   *events.Breaker
	}{
		{"a transition a peer adopted", peer("caller-b", "llm", "caller-z", events.BreakerOpen, "ignored")},
		{"its own transition", peer("caller-a", "llm", "", events.BreakerOpen, "ignored")},
		{"a service this caller does not have", peer("caller-b", "crm", "", events.BreakerOpen, "ignored")},
		{"a peer's half-open", peer("caller-b", "llm", "", events.BreakerHalfOpen, "ignored")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := admin.Emit(t.Context(), tt.ev); err != nil {
				t.Fatal(err)
			}
			// The fleet handles messages in order, so once it has adopted a
			// later open the event above was seen; had it been adopted too,
			// the breaker would already be open and the adoption below would
			// carry its reason instead.
			if err := admin.Emit(t.Context(), peer("caller-b", "llm", "", events.BreakerOpen, "adopt-me")); err != nil {
				t.Fatal(err)
			}
			var adopted *events.Breaker
			eventually(t, "caller-a to adopt an open", func() bool {
				for _, ev := range breakerTap.breakers() {
					if ev.Source == "caller-a" && ev.To == events.BreakerOpen && ev.ID != tt.ev.ID {
						adopted = ev
						return true
					}
				}
				return false
			})
			if adopted.Reason != "adopt-me" || adopted.Origin != "caller-b" {
				t.Errorf("caller-a adopted %+v, want only the open with reason adopt-me", adopted)
			}
			f.Breaker("llm").ForceClose("", "test reset")
			eventually(t, "the reset to be published", func() bool {
				evs := breakerTap.breakers()
				return evs[len(evs)-1].Reason == "test reset"
			})
			breakerTap.reset()
		})
	}
}

func TestProber(t *testing.T) {
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	healthTap := tapEvents(t, admin, events.HealthAll)
	clock := resiliencetest.NewClock(time.Now().UTC())
	f, _ := startFleet(t, srv, "caller-a", clock)
	br := f.Breaker("llm")
	br.ForceOpen(time.Time{}, "", "test")

	var mu sync.Mutex
	healthy := false
	checker := resilience.HealthCheckFunc(func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := ctx.Deadline(); !ok {
			t.Error("health check without a timeout")
		}
		if !healthy {
			return &resilience.Error{Service: "llm", Category: resilience.Transient, StatusCode: 503, Message: "service unavailable"}
		}
		return nil
	})
	p := resilience.NewProber(f, "llm", checker, config.Health{Interval: 15 * time.Second, Timeout: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The first probe runs at once and fails: the breaker stays open.
	eventually(t, "the first health event", func() bool { return len(healthTap.health()) == 1 })
	h := healthTap.health()[0]
	if h.Outcome != events.OutcomeFailure || h.StatusCode != 503 || h.BreakerState != events.BreakerOpen || h.Message == "" {
		t.Errorf("failed probe event %+v", h)
	}
	if br.State() != resilience.StateOpen {
		t.Fatal("a failed probe changed the breaker")
	}

	// The health endpoint answers again; the next probe, one interval later,
	// ends the open period early (the recovery timeout is 30 s) into
	// half-open, and no further.
	mu.Lock()
	healthy = true
	mu.Unlock()
	eventually(t, "the prober to wait for its interval", func() bool { return clock.Waiters() > 0 })
	clock.Advance(15 * time.Second)
	eventually(t, "the second health event", func() bool { return len(healthTap.health()) == 2 })
	if h := healthTap.health()[1]; h.Outcome != events.OutcomeSuccess || h.BreakerState != events.BreakerHalfOpen {
		t.Errorf("successful probe event %+v", h)
	}
	if br.State() != resilience.StateHalfOpen {
		t.Fatalf("breaker %s after a successful health check, want half_open", br.State())
	}

	// More health successes change nothing: only real calls close it.
	eventually(t, "the prober to wait again", func() bool { return clock.Waiters() > 0 })
	clock.Advance(15 * time.Second)
	eventually(t, "the third health event", func() bool { return len(healthTap.health()) == 3 })
	if br.State() != resilience.StateHalfOpen {
		t.Fatalf("breaker %s after two successful health checks, want half_open", br.State())
	}

	// The real endpoint still fails: the half-open probe opens it again.
	if called, err := call(t, br, fail); !called || resilience.Classify(err) != resilience.Transient {
		t.Fatalf("half-open probe: called %v, err %v", called, err)
	}
	if br.State() != resilience.StateOpen {
		t.Fatalf("breaker %s after its probe failed, want open", br.State())
	}
}
