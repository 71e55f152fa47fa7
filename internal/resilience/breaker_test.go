package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

// recorder collects a breaker's transitions.
type recorder struct {
	mu sync.Mutex
	ts []resilience.Transition
}

func (r *recorder) add(t resilience.Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ts = append(r.ts, t)
}

func (r *recorder) all() []resilience.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]resilience.Transition(nil), r.ts...)
}

// path renders the transitions as "closed->open(reason) ..." for comparison.
func (r *recorder) path() string {
	s := ""
	for i, t := range r.all() {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s->%s(%s)", t.From, t.To, t.Reason)
	}
	return s
}

func newBreaker(t *testing.T, cfg config.Breaker) (*resilience.Breaker, *resiliencetest.Clock, *recorder) {
	t.Helper()
	clock := resiliencetest.NewClock(epoch)
	rec := &recorder{}
	return resilience.NewBreaker("elevenlabs", cfg, clock, rec.add), clock, rec
}

func fail(context.Context) error    { return unavailable() }
func succeed(context.Context) error { return nil }

func call(t *testing.T, b *resilience.Breaker, fn func(context.Context) error) (called bool, err error) {
	t.Helper()
	err = b.Execute(t.Context(), func(ctx context.Context) error {
		called = true
		return fn(ctx)
	})
	return called, err
}

func TestBreakerOpensAtThreshold(t *testing.T) {
	b, clock, rec := newBreaker(t, config.Breaker{FailureThreshold: 3, RecoveryTimeout: 30 * time.Second})
	for i := 1; i <= 2; i++ {
		call(t, b, fail)
		if b.State() != resilience.StateClosed {
			t.Fatalf("open after %d failures, threshold 3", i)
		}
	}
	call(t, b, fail)
	if b.State() != resilience.StateOpen {
		t.Fatalf("state %s after 3 failures, want open", b.State())
	}
	ts := rec.all()
	if len(ts) != 1 {
		t.Fatalf("transitions %s, want one", rec.path())
	}
	want := resilience.Transition{Service: "elevenlabs", From: resilience.StateClosed, To: resilience.StateOpen,
		Reason: resilience.ReasonFailures, At: epoch, OpenUntil: epoch.Add(30 * time.Second), Failures: 3}
	if ts[0] != want {
		t.Errorf("transition %+v, want %+v", ts[0], want)
	}

	// Open: no call reaches the service, and each refusal says how long to wait.
	for i := range 10 {
		clock.Advance(time.Second)
		called, err := call(t, b, succeed)
		if called {
			t.Fatal("an open breaker called the service")
		}
		var e *resilience.Error
		if !errors.As(err, &e) || e.Category != resilience.CircuitOpen || !errors.Is(err, resilience.ErrCircuitOpen) {
			t.Fatalf("refusal %v, want a CircuitOpen *Error wrapping ErrCircuitOpen", err)
		}
		if want := time.Duration(29-i) * time.Second; e.RetryAfter != want || e.Service != "elevenlabs" {
			t.Errorf("refusal RetryAfter %v service %q, want %v elevenlabs", e.RetryAfter, e.Service, want)
		}
	}
}

func TestBreakerSuccessResetsConsecutiveFailures(t *testing.T) {
	b, _, _ := newBreaker(t, config.Breaker{FailureThreshold: 3})
	for range 5 {
		call(t, b, fail)
		call(t, b, fail)
		call(t, b, succeed)
	}
	if b.State() != resilience.StateClosed {
		t.Fatal("opened although failures were never 3 in a row")
	}
}

func TestBreakerWhatCounts(t *testing.T) {
	permanent := func(context.Context) error {
		return &resilience.Error{Category: resilience.Permanent, StatusCode: 401, Code: "invalid_api_key"}
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, b *resilience.Breaker)
		want resilience.State
	}{
		{"transient failures trip", func(t *testing.T, b *resilience.Breaker) {
			call(t, b, fail)
			call(t, b, fail)
		}, resilience.StateOpen},
		{"timeouts trip", func(t *testing.T, b *resilience.Breaker) {
			for range 2 {
				call(t, b, func(context.Context) error { return context.DeadlineExceeded })
			}
		}, resilience.StateOpen},
		{"permanent errors do not trip", func(t *testing.T, b *resilience.Breaker) {
			for range 10 {
				call(t, b, permanent)
			}
		}, resilience.StateClosed},
		{"a permanent error shows the service answers", func(t *testing.T, b *resilience.Breaker) {
			call(t, b, fail)
			call(t, b, permanent)
			call(t, b, fail)
		}, resilience.StateClosed},
		{"cancelled calls are neutral", func(t *testing.T, b *resilience.Breaker) {
			for range 5 {
				ctx, cancel := context.WithCancel(t.Context())
				_ = b.Execute(ctx, func(ctx context.Context) error {
					cancel()
					return unavailable() // what a transport may make of the cancellation
				})
			}
		}, resilience.StateClosed},
		{"cancellation errors are neutral", func(t *testing.T, b *resilience.Breaker) {
			for range 5 {
				call(t, b, func(context.Context) error { return context.Canceled })
			}
		}, resilience.StateClosed},
		{"cancellation does not reset the count", func(t *testing.T, b *resilience.Breaker) {
			call(t, b, fail)
			call(t, b, func(context.Context) error { return context.Canceled })
			call(t, b, fail)
		}, resilience.StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, _ := newBreaker(t, config.Breaker{FailureThreshold: 2})
			tt.fn(t, b)
			if got := b.State(); got != tt.want {
				t.Errorf("state %s, want %s", got, tt.want)
			}
		})
	}
}

func TestBreakerDoneContext(t *testing.T) {
	b, _, _ := newBreaker(t, config.Breaker{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	err := b.Execute(ctx, func(context.Context) error { called = true; return nil })
	if called || !errors.Is(err, context.Canceled) {
		t.Errorf("Execute on a cancelled context: called %v, err %v; want not called, context.Canceled", called, err)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	cfg := config.Breaker{FailureThreshold: 1, RecoveryTimeout: 30 * time.Second, HalfOpenRequests: 2}
	open := func(t *testing.T) (*resilience.Breaker, *resiliencetest.Clock, *recorder) {
		b, clock, rec := newBreaker(t, cfg)
		call(t, b, fail)
		clock.Advance(29 * time.Second)
		if b.State() != resilience.StateOpen {
			t.Fatal("half-open before the recovery timeout")
		}
		clock.Advance(time.Second)
		return b, clock, rec
	}

	t.Run("probes at once are limited, all must succeed", func(t *testing.T) {
		b, _, rec := open(t)
		release := make(chan error)
		var started sync.WaitGroup
		var wg sync.WaitGroup
		var finished atomic.Int32
		for range 2 {
			started.Add(1)
			wg.Go(func() {
				_ = b.Execute(t.Context(), func(context.Context) error {
					started.Done()
					return <-release
				})
				finished.Add(1)
			})
		}
		started.Wait()
		if b.State() != resilience.StateHalfOpen {
			t.Fatalf("state %s with probes in flight, want half_open", b.State())
		}
		called, err := call(t, b, succeed)
		var e *resilience.Error
		if called || !errors.As(err, &e) || e.Category != resilience.CircuitOpen {
			t.Fatalf("third call while 2 probes are in flight: called %v, err %v; want refused", called, err)
		}
		release <- nil
		eventually(t, "the first probe to finish", func() bool { return finished.Load() == 1 })
		if b.State() != resilience.StateHalfOpen {
			t.Fatalf("closed after 1 of 2 probes")
		}
		release <- nil
		wg.Wait()
		if b.State() != resilience.StateClosed {
			t.Fatalf("state %s after 2 successful probes, want closed", b.State())
		}
		if got, want := rec.path(), "closed->open(consecutive_failures) open->half_open(recovery_timeout) half_open->closed(probe_succeeded)"; got != want {
			t.Errorf("transitions %s, want %s", got, want)
		}
	})

	t.Run("a failed probe reopens", func(t *testing.T) {
		b, clock, rec := open(t)
		called, _ := call(t, b, fail)
		if !called {
			t.Fatal("the probe was not let through")
		}
		if b.State() != resilience.StateOpen {
			t.Fatalf("state %s after a failed probe, want open", b.State())
		}
		last := rec.all()[len(rec.all())-1]
		if last.Reason != resilience.ReasonProbeFailed || !last.OpenUntil.Equal(clock.Now().Add(30*time.Second)) {
			t.Errorf("reopen %+v, want probe_failed until now+30s", last)
		}
		if called, _ := call(t, b, succeed); called {
			t.Error("the reopened breaker called the service")
		}
	})
}

func TestBreakerCancelledProbe(t *testing.T) {
	b, clock, _ := newBreaker(t, config.Breaker{FailureThreshold: 1, RecoveryTimeout: time.Second, HalfOpenRequests: 1})
	call(t, b, fail)
	clock.Advance(time.Second)
	called, _ := call(t, b, func(context.Context) error { return context.Canceled })
	if !called || b.State() != resilience.StateHalfOpen {
		t.Fatalf("cancelled probe: called %v, state %s; want called, still half_open", called, b.State())
	}
	if called, _ := call(t, b, succeed); !called {
		t.Fatal("the slot of the cancelled probe was not given to the next call")
	}
	if b.State() != resilience.StateClosed {
		t.Fatalf("state %s, want closed", b.State())
	}
}

func TestBreakerFailureRate(t *testing.T) {
	cfg := config.Breaker{FailureThreshold: 100, FailureRate: 0.5, Window: time.Minute, MinRequests: 10}
	t.Run("trips at the rate with enough requests", func(t *testing.T) {
		b, clock, rec := newBreaker(t, cfg)
		// Alternate failure, success: never two failures in a row.
		for i := range 9 {
			if i%2 == 0 {
				call(t, b, fail)
			} else {
				call(t, b, succeed)
			}
			clock.Advance(time.Second)
		}
		if b.State() != resilience.StateClosed {
			t.Fatal("tripped below min_requests")
		}
		call(t, b, succeed) // 10 requests, 5 failures: 50%, but the trip is judged on a failure
		if b.State() != resilience.StateClosed {
			t.Fatal("tripped on a success")
		}
		call(t, b, fail) // 11 requests, 6 failures
		if b.State() != resilience.StateOpen {
			t.Fatalf("state %s at 6/11 failures, want open", b.State())
		}
		ts := rec.all()
		if last := ts[len(ts)-1]; last.Reason != resilience.ReasonFailureRate || last.Failures != 6 {
			t.Errorf("transition %+v, want failure_rate with 6 failures", last)
		}
	})
	t.Run("below the rate stays closed", func(t *testing.T) {
		b, _, _ := newBreaker(t, cfg)
		for i := range 40 {
			if i%3 == 0 {
				call(t, b, fail)
			} else {
				call(t, b, succeed)
			}
		}
		if b.State() != resilience.StateClosed {
			t.Fatal("tripped at a third of failures, rate 0.5")
		}
	})
	t.Run("old failures leave the window", func(t *testing.T) {
		b, clock, _ := newBreaker(t, cfg)
		for range 8 {
			call(t, b, fail)
			call(t, b, succeed)
		}
		clock.Advance(2 * time.Minute)
		for range 9 {
			call(t, b, succeed)
		}
		call(t, b, fail) // 1 of 10 in the window
		if b.State() != resilience.StateClosed {
			t.Fatal("failures from before the window still counted")
		}
	})
}

func TestBreakerForce(t *testing.T) {
	b, clock, rec := newBreaker(t, config.Breaker{RecoveryTimeout: 30 * time.Second})
	until := epoch.Add(time.Minute)
	b.ForceOpen(until, "caller-b", resilience.ReasonFailures)
	if b.State() != resilience.StateOpen {
		t.Fatal("ForceOpen did not open")
	}
	b.ForceOpen(epoch.Add(10*time.Second), "caller-c", resilience.ReasonFailures) // earlier: ignored
	b.ForceOpen(epoch.Add(90*time.Second), "caller-c", resilience.ReasonFailures) // later: extends
	b.ForceOpen(epoch.Add(-time.Second), "caller-c", resilience.ReasonFailures)   // past: ignored
	if n := len(rec.all()); n != 1 {
		t.Fatalf("transitions %s, want only the first open", rec.path())
	}
	want := resilience.Transition{Service: "elevenlabs", From: resilience.StateClosed, To: resilience.StateOpen,
		Reason: resilience.ReasonFailures, At: epoch, OpenUntil: until, Origin: "caller-b"}
	if got := rec.all()[0]; got != want {
		t.Errorf("transition %+v, want %+v", got, want)
	}
	clock.Advance(80 * time.Second)
	if b.State() != resilience.StateOpen {
		t.Fatal("the extended open time was not kept")
	}
	clock.Advance(10 * time.Second)
	if b.State() != resilience.StateHalfOpen {
		t.Fatal("not half-open after the extended time")
	}
	b.ForceClose("caller-b", resilience.ReasonHealthCheck)
	b.ForceClose("caller-b", resilience.ReasonHealthCheck) // already closed: nothing
	if got, want := rec.path(), "closed->open(consecutive_failures) open->half_open(recovery_timeout) half_open->closed(health_check)"; got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}
	if o := rec.all()[2].Origin; o != "caller-b" {
		t.Errorf("close origin %q, want caller-b", o)
	}
	b.ForceOpen(time.Time{}, "", "operator")
	if ts := rec.all(); ts[3].OpenUntil != clock.Now().Add(30*time.Second) {
		t.Errorf("zero until opened until %v, want now+recovery", ts[3].OpenUntil)
	}
}

func TestBreakerIgnoresStaleResults(t *testing.T) {
	b, _, _ := newBreaker(t, config.Breaker{FailureThreshold: 1})
	inFlight := make(chan struct{})
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Execute(t.Context(), func(context.Context) error {
			close(inFlight)
			<-release
			return unavailable()
		})
	}()
	<-inFlight
	b.ForceOpen(time.Time{}, "caller-b", "test")
	b.ForceClose("caller-b", "test")
	close(release)
	<-done
	if b.State() != resilience.StateClosed {
		t.Fatal("a failure from before the breaker reopened and closed was counted")
	}
}

func TestBreakerPanicCountsAsFailure(t *testing.T) {
	b, _, _ := newBreaker(t, config.Breaker{FailureThreshold: 1})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not go on")
			}
		}()
		_ = b.Execute(t.Context(), func(context.Context) error { panic("boom") })
	}()
	if b.State() != resilience.StateOpen {
		t.Fatal("a panicking call did not count as a failure")
	}
}

func TestStateStrings(t *testing.T) {
	for s, want := range map[resilience.State]string{
		resilience.StateClosed:   events.BreakerClosed,
		resilience.StateOpen:     events.BreakerOpen,
		resilience.StateHalfOpen: events.BreakerHalfOpen,
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
		if got, err := resilience.ParseState(want); err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v", want, got, err)
		}
	}
	if _, err := resilience.ParseState("ajar"); err == nil {
		t.Error("ParseState accepted an unknown state")
	}
}

// TestBreakerConcurrent hammers one breaker from many goroutines (run with
// -race) and checks that the reported transitions form one consistent chain.
func TestBreakerConcurrent(t *testing.T) {
	clock := resiliencetest.NewClock(epoch)
	rec := &recorder{}
	b := resilience.NewBreaker("llm", config.Breaker{FailureThreshold: 3, RecoveryTimeout: time.Second, HalfOpenRequests: 2,
		FailureRate: 0.5, MinRequests: 5}, clock, rec.add)
	var calls atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 500 {
				switch n := rng.IntN(100); {
				case n < 2:
					b.ForceOpen(time.Time{}, "peer", "test")
				case n < 4:
					b.ForceClose("peer", "test")
				case n < 8:
					clock.Advance(300 * time.Millisecond)
				default:
					_ = b.Execute(t.Context(), func(context.Context) error {
						calls.Add(1)
						if rng.IntN(2) == 0 {
							return unavailable()
						}
						return nil
					})
				}
			}
		})
	}
	wg.Wait()
	ts := rec.all()
	if len(ts) < 10 || calls.Load() == 0 {
		t.Fatalf("only %d transitions and %d calls: the test exercised too little", len(ts), calls.Load())
	}
	for i := 1; i < len(ts); i++ {
		if ts[i].From != ts[i-1].To || ts[i].From == ts[i].To {
			t.Fatalf("transition %d %s->%s does not follow %s->%s", i, ts[i].From, ts[i].To, ts[i-1].From, ts[i-1].To)
		}
	}
}

// TestBreakerForceHalfOpen: a health check may end an open period early, but
// only into half-open, where the real calls decide.
func TestBreakerForceHalfOpen(t *testing.T) {
	b, _, rec := newBreaker(t, config.Breaker{FailureThreshold: 1, RecoveryTimeout: 30 * time.Second, HalfOpenRequests: 1})
	b.ForceHalfOpen("", resilience.ReasonHealthCheck) // closed: nothing
	call(t, b, fail)
	b.ForceHalfOpen("", resilience.ReasonHealthCheck)
	b.ForceHalfOpen("caller-b", resilience.ReasonHealthCheck) // half-open already: nothing
	if b.State() != resilience.StateHalfOpen {
		t.Fatalf("state %s after a health success while open, want half_open", b.State())
	}
	// A peer's late copy of the open period just left changes nothing.
	b.ForceOpen(epoch.Add(30*time.Second), "caller-c", resilience.ReasonFailures)
	if b.State() != resilience.StateHalfOpen {
		t.Fatalf("state %s after a peer's stale open, want half_open", b.State())
	}
	if called, err := call(t, b, fail); !called || err == nil {
		t.Fatalf("half-open probe: called %v, err %v", called, err)
	}
	b.ForceHalfOpen("", resilience.ReasonHealthCheck)
	if called, err := call(t, b, succeed); !called || err != nil {
		t.Fatalf("probe after the second health success: called %v, err %v", called, err)
	}
	b.ForceOpen(epoch.Add(time.Minute), "", "operator")
	// A peer's failed probe, though its period ends earlier, is news.
	b.ForceHalfOpen("", resilience.ReasonHealthCheck)
	b.ForceOpen(epoch.Add(10*time.Second), "caller-c", resilience.ReasonProbeFailed)
	if b.State() != resilience.StateOpen {
		t.Fatalf("state %s after a peer's probe failed, want open", b.State())
	}
	want := "closed->open(consecutive_failures) open->half_open(health_check) half_open->open(probe_failed) " +
		"open->half_open(health_check) half_open->closed(probe_succeeded) " +
		"closed->open(operator) open->half_open(health_check) half_open->open(probe_failed)"
	if got := rec.path(); got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}
}
