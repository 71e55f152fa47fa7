package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

// member is one caller of a test fleet: its own bus connection and source,
// its fleet, and the breaker of the one service the test calls.
type member struct {
	source string
	conn   *bus.Conn
	fleet  *resilience.Fleet
	br     *resilience.Breaker

	mu        sync.Mutex
	published uint64 // attempt events published
}

const service = "elevenlabs"

// startMembers starts n callers named prefix-0.. on srv, sharing clock, each
// with a breaker for service configured by cfg and the probe election.
func startMembers(t *testing.T, srv *natstest.Server, prefix string, n int, clock resilience.Clock, cfg config.Breaker) []*member {
	t.Helper()
	ms := make([]*member, n)
	for i := range ms {
		source := fmt.Sprintf("%s-%d", prefix, i)
		conn := srv.Connect(t, config.NATS{}, source)
		f := resilience.NewFleet(conn, clock, natstest.Logger(t))
		f.CoordinateProbes(probeBucket(t, conn))
		br, err := f.Add(service, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := f.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			<-f.Done()
		})
		ms[i] = &member{source: source, conn: conn, fleet: f, br: br}
	}
	return ms
}

// attempt calls fn through the member's breaker and publishes the attempt
// the way the caller's step does: nothing for a call the breaker refused,
// canceled for one cut short, otherwise its outcome and error category.
func (m *member) attempt(t *testing.T, ctx context.Context, fn func(context.Context) error) error {
	t.Helper()
	err := m.br.Execute(ctx, fn)
	if resilience.Classify(err) == resilience.CircuitOpen && errors.Is(err, resilience.ErrCircuitOpen) {
		return err
	}
	ev := &events.Attempt{CallRef: events.CallRef{CallID: "call-1", Campaign: "outage", ContactID: "c1"},
		Service: service, Attempt: 1, MaxAttempts: 1, BreakerState: m.br.State().String()}
	switch cat := resilience.Classify(err); {
	case err == nil:
		ev.Outcome = events.OutcomeSuccess
	case cat == "":
		ev.Outcome = events.OutcomeCanceled
	default:
		ev.Outcome, ev.ErrorCategory = events.OutcomeFailure, string(cat)
	}
	if perr := m.conn.Emit(context.WithoutCancel(ctx), ev); perr != nil {
		t.Errorf("%s: publish attempt: %v", m.source, perr)
	}
	m.mu.Lock()
	m.published++
	m.mu.Unlock()
	return err
}

// settle waits until every member has counted every attempt its peers
// published: in production that takes a millisecond, calls take longer.
func settle(t *testing.T, ms []*member) {
	t.Helper()
	var total uint64
	for _, m := range ms {
		m.mu.Lock()
		total += m.published
		m.mu.Unlock()
	}
	for _, m := range ms {
		m.mu.Lock()
		want := total - m.published
		m.mu.Unlock()
		eventually(t, m.source+" to count its peers' attempts", func() bool { return resilience.PeerAttempts(m.fleet) >= want })
	}
}

func states(ms []*member) []resilience.State {
	var out []resilience.State
	for _, m := range ms {
		out = append(out, m.br.State())
	}
	return out
}

func permanent(context.Context) error {
	return &resilience.Error{Service: service, Category: resilience.Permanent, StatusCode: 400, Message: "bad request"}
}

// TestFleetCountsPeersAttempts: the breaker counts the fleet's failures, not
// the process's, by the breaker's own rules.
func TestFleetCountsPeersAttempts(t *testing.T) {
	srv := natstest.Start(t)
	srv.Conn(t) // creates the streams
	type step struct {
		member int
		fn     func(context.Context) error // nil: the call is cancelled
	}
	consecutive := config.Breaker{FailureThreshold: 5, RecoveryTimeout: time.Minute}
	tests := []struct {
		name    string
		cfg     config.Breaker
		steps   []step
		opensAt int // 1-based step after which every breaker is open; 0: never
	}{
		{"four failures on one caller, then two on the other", consecutive,
			[]step{{0, fail}, {0, fail}, {0, fail}, {0, fail}, {1, fail}, {1, fail}}, 5},
		{"failures alternating between callers", consecutive,
			[]step{{0, fail}, {1, fail}, {0, fail}, {1, fail}, {0, fail}}, 5},
		{"a peer's success resets the count", consecutive,
			[]step{{0, fail}, {0, fail}, {0, fail}, {1, succeed}, {0, fail}, {0, fail}, {1, fail}, {1, fail}}, 0},
		{"a peer's permanent error counts as a success", consecutive,
			[]step{{0, fail}, {0, fail}, {0, fail}, {0, fail}, {1, permanent}, {0, fail}}, 0},
		{"a peer's cancelled attempt counts as nothing", consecutive,
			[]step{{0, fail}, {0, fail}, {0, fail}, {0, fail}, {1, nil}, {1, fail}}, 6},
		{"the failure rate across the fleet",
			config.Breaker{FailureThreshold: 100, RecoveryTimeout: time.Minute, FailureRate: 0.5, Window: time.Minute, MinRequests: 4},
			[]step{{0, succeed}, {1, fail}, {1, succeed}, {0, fail}}, 4},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(epoch)
			ms := startMembers(t, srv, fmt.Sprintf("count%d", i), 2, clock, tt.cfg)
			for n, st := range tt.steps {
				ctx, fn := t.Context(), st.fn
				if fn == nil {
					// A call cut short by its caller's shutdown: Execute
					// refuses a context already done, so cancel it during
					// the call.
					c, cancel := context.WithCancel(ctx)
					ctx = c
					fn = func(context.Context) error { cancel(); return context.Canceled }
				}
				_ = ms[st.member].attempt(t, ctx, fn)
				settle(t, ms)
				want := resilience.StateClosed
				if tt.opensAt > 0 && n+1 >= tt.opensAt {
					want = resilience.StateOpen
				}
				// The breaker that did not make the call opens by counting it.
				eventually(t, fmt.Sprintf("both breakers %s after step %d", want, n+1), func() bool {
					return slices.Equal(states(ms), []resilience.State{want, want})
				})
			}
		})
	}
}

// TestFleetElectsProbes: however many callers are half-open, only
// half_open_requests probes reach the service per open period, whether the
// period ended by its recovery timeout or early by a health check; the
// fleet closes once they have succeeded.
func TestFleetElectsProbes(t *testing.T) {
	srv := natstest.Start(t)
	srv.Conn(t)
	cfg := config.Breaker{FailureThreshold: 1, RecoveryTimeout: 10 * time.Second, HalfOpenRequests: 2}
	tests := []struct {
		name string
		end  func(clock *resiliencetest.Clock, ms []*member)
	}{
		{"after the recovery timeout", func(clock *resiliencetest.Clock, _ []*member) { clock.Advance(10 * time.Second) }},
		{"after a health check", func(_ *resiliencetest.Clock, ms []*member) { ms[1].fleet.HealthSuccess(service) }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := resiliencetest.NewClock(epoch)
			ms := startMembers(t, srv, fmt.Sprintf("elect%d", i), 3, clock, cfg)
			_ = ms[0].attempt(t, t.Context(), fail)
			eventually(t, "every breaker open", func() bool {
				return slices.Equal(states(ms), []resilience.State{resilience.StateOpen, resilience.StateOpen, resilience.StateOpen})
			})
			tt.end(clock, ms)
			eventually(t, "every breaker half-open", func() bool {
				return slices.Equal(states(ms), []resilience.State{resilience.StateHalfOpen, resilience.StateHalfOpen, resilience.StateHalfOpen})
			})

			// Three calls on each of the three callers at once.
			var probes atomic.Int64
			release := make(chan struct{})
			var refused atomic.Int64
			var wg sync.WaitGroup
			for _, m := range ms {
				for range 3 {
					wg.Go(func() {
						err := m.attempt(t, t.Context(), func(context.Context) error {
							probes.Add(1)
							<-release
							return nil
						})
						if errors.Is(err, resilience.ErrCircuitOpen) {
							refused.Add(1)
						}
					})
				}
			}
			eventually(t, "every call probed or refused", func() bool { return probes.Load()+refused.Load() == 9 })
			if n := probes.Load(); n != 2 {
				t.Errorf("%d probes across 3 half-open callers, want half_open_requests = 2", n)
			}
			close(release)
			wg.Wait()
			settle(t, ms)
			eventually(t, "every breaker closed once both probes succeeded", func() bool {
				return slices.Equal(states(ms), []resilience.State{resilience.StateClosed, resilience.StateClosed, resilience.StateClosed})
			})
		})
	}
}

// TestFleetProbeSlotIsNotHeldForever: a probe that decides nothing gives its
// slot back; one whose caller hangs or died holds it only until its round,
// one recovery timeout, ends.
func TestFleetProbeSlotIsNotHeldForever(t *testing.T) {
	srv := natstest.Start(t)
	srv.Conn(t)
	cfg := config.Breaker{FailureThreshold: 1, RecoveryTimeout: 10 * time.Second, HalfOpenRequests: 1}
	clock := resiliencetest.NewClock(epoch)
	ms := startMembers(t, srv, "slot", 2, clock, cfg)
	a, b := ms[0], ms[1]
	_ = a.attempt(t, t.Context(), fail)
	eventually(t, "both open", func() bool { return b.br.State() == resilience.StateOpen })
	clock.Advance(10 * time.Second)

	// A's probe is cancelled (a shutdown): it counts as nothing and gives
	// the slot back, so B may probe in the same round.
	ctx, cancel := context.WithCancel(t.Context())
	_ = a.attempt(t, ctx, func(context.Context) error { cancel(); return context.Canceled })
	var called atomic.Int64
	hang := make(chan struct{})
	defer close(hang)
	started := make(chan struct{})
	go func() {
		// B's probe hangs, as if B had died mid-call.
		_ = b.br.Execute(t.Context(), func(context.Context) error {
			called.Add(1)
			close(started)
			<-hang
			return unavailable()
		})
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("B did not get the slot A gave back")
	}

	// While B's probe hangs, A may not probe: the slot is B's ...
	probe := func(context.Context) error { called.Add(1); return nil }
	clock.Advance(9 * time.Second)
	if err := a.attempt(t, t.Context(), probe); !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("A probed while B held the slot: %v", err)
	}
	// ... until the round ends, one recovery timeout after the period.
	clock.Advance(time.Second)
	if err := a.attempt(t, t.Context(), probe); err != nil {
		t.Fatalf("A's probe in the next round: %v", err)
	}
	if n := called.Load(); n != 2 {
		t.Errorf("%d probes reached the service, want 2 (B's hung one, A's)", n)
	}
	if a.br.State() != resilience.StateClosed {
		t.Fatalf("A %s after its probe succeeded", a.br.State())
	}
	eventually(t, "B to adopt the close", func() bool { return b.br.State() == resilience.StateClosed })
}

// TestFleetOutage counts the provider calls a fleet of 1, 2 and 4 callers
// makes during a 60 s outage of one service: threshold 5, recovery 10 s, one
// half-open probe. Calls arrive every 200 ms (fake time), either one at a
// time across the fleet, or two per caller at once.
func TestFleetOutage(t *testing.T) {
	const (
		outage    = 60 * time.Second
		every     = 200 * time.Millisecond
		threshold = 5
		recovery  = 10 * time.Second
	)
	cfg := config.Breaker{FailureThreshold: threshold, RecoveryTimeout: recovery, HalfOpenRequests: 1}
	periods := int((outage + recovery - 1) / recovery) // open periods that can end within the outage
	sequential := map[int]int64{}
	for _, tc := range []struct {
		callers, perCaller int // perCaller 0: one call at a time across the fleet
	}{{1, 0}, {2, 0}, {4, 0}, {1, 2}, {2, 2}, {4, 2}} {
		name := fmt.Sprintf("%d callers, one call at a time", tc.callers)
		inFlight := 1
		if tc.perCaller > 0 {
			name = fmt.Sprintf("%d callers, %d calls each at once", tc.callers, tc.perCaller)
			inFlight = tc.callers * tc.perCaller
		}
		t.Run(name, func(t *testing.T) {
			srv := natstest.Start(t)
			srv.Conn(t)
			clock := resiliencetest.NewClock(epoch)
			ms := startMembers(t, srv, "caller", tc.callers, clock, cfg)
			var calls atomic.Int64
			end := clock.Now().Add(outage)
			beforeOpen := int64(-1)
			for tick := 0; clock.Now().Before(end); tick++ {
				// The tick's calls overlap: each that reaches the service
				// waits until every other one has reached it or been
				// refused, as calls in flight at once do.
				var entered, refused atomic.Int64
				down := func(context.Context) error {
					calls.Add(1)
					entered.Add(1)
					for entered.Load()+refused.Load() < int64(inFlight) {
						time.Sleep(100 * time.Microsecond)
					}
					return unavailable()
				}
				var wg sync.WaitGroup
				for k := range inFlight {
					m := ms[(tick*inFlight+k)%len(ms)]
					wg.Go(func() {
						if err := m.attempt(t, t.Context(), down); errors.Is(err, resilience.ErrCircuitOpen) {
							refused.Add(1)
						}
					})
				}
				wg.Wait()
				settle(t, ms)
				eventually(t, "the breakers to agree", func() bool {
					s := states(ms)
					return !slices.ContainsFunc(s, func(x resilience.State) bool { return x != s[0] })
				})
				if beforeOpen < 0 && ms[0].br.State() == resilience.StateOpen {
					beforeOpen = calls.Load()
				}
				clock.Advance(every)
			}
			total := calls.Load()
			t.Logf("provider calls made during a 60 s outage: %d (%d before the fleet opened, %d half-open probes)",
				total, beforeOpen, total-beforeOpen)
			bound := int64(threshold + inFlight - 1 + periods)
			if total > bound {
				t.Errorf("%d provider calls, want at most %d (threshold %d + %d calls in flight at the trip + %d probes)",
					total, bound, threshold, inFlight-1, periods)
			}
			if tc.perCaller == 0 {
				sequential[tc.callers] = total
			}
		})
	}
	if sequential[2] != sequential[1] || sequential[4] != sequential[1] {
		t.Errorf("one call at a time: %v provider calls for 1, 2, 4 callers; want the same for any number", sequential)
	}
}
