package resilience_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func unavailable() error {
	return &resilience.Error{Service: "elevenlabs", Category: resilience.Transient, StatusCode: 503, Message: "service unavailable"}
}

// seedRetry is the seed scenario's policy: 5 s, 10 s, 20 s, then give up.
var seedRetry = config.Retry{MaxRetries: 3, InitialDelay: 5 * time.Second, Multiplier: 2, MaxDelay: time.Minute}

// eventually polls cond until it holds, failing the test after a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRetrySeedSchedule(t *testing.T) {
	clock := resiliencetest.NewAutoClock(epoch)
	r := resilience.NewRetry(seedRetry, clock)
	var infos []resilience.RetryInfo
	r.OnRetry = func(ri resilience.RetryInfo) { infos = append(infos, ri) }
	var attempts []int
	err := r.Do(t.Context(), func(ctx context.Context, attempt int) error {
		attempts = append(attempts, attempt)
		return unavailable()
	})

	var re *resilience.RetryError
	if !errors.As(err, &re) {
		t.Fatalf("Do = %v, want a *RetryError", err)
	}
	if re.Reason != resilience.StopExhausted || re.Attempts != 4 {
		t.Errorf("stopped with %s after %d attempts, want %s after 4", re.Reason, re.Attempts, resilience.StopExhausted)
	}
	var last *resilience.Error
	if !errors.As(err, &last) || last.StatusCode != 503 {
		t.Errorf("the last error is not reachable through the RetryError: %v", err)
	}
	if want := []int{1, 2, 3, 4}; !slices.Equal(attempts, want) {
		t.Errorf("attempts %v, want %v", attempts, want)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}
	if got := clock.Waits(); !slices.Equal(got, want) {
		t.Errorf("slept %v, want %v", got, want)
	}
	if len(infos) != 3 {
		t.Fatalf("OnRetry called %d times, want 3", len(infos))
	}
	for i, ri := range infos {
		if ri.Attempt != i+1 || ri.MaxAttempts != 4 || ri.Delay != want[i] || ri.Err == nil {
			t.Errorf("OnRetry #%d = %+v, want attempt %d of 4, delay %v", i+1, ri, i+1, want[i])
		}
	}
	if elapsed := clock.Now().Sub(epoch); elapsed != 35*time.Second {
		t.Errorf("the schedule took %v, want 35s", elapsed)
	}
}

func TestRetryStops(t *testing.T) {
	tests := []struct {
		name       string
		errs       []error // returned by attempts in turn; the last one repeats
		wantErr    bool
		wantReason resilience.StopReason
		wantTries  int
	}{
		{"success at once", []error{nil}, false, "", 1},
		{"recovers on the third attempt", []error{unavailable(), unavailable(), nil}, false, "", 3},
		{"permanent", []error{&resilience.Error{Category: resilience.Permanent, StatusCode: 400}}, true, resilience.StopPermanent, 1},
		{"unclassified error is permanent", []error{errors.New("encode request: bad input")}, true, resilience.StopPermanent, 1},
		{"transient then permanent", []error{unavailable(), &resilience.Error{Category: resilience.Permanent, StatusCode: 401}}, true, resilience.StopPermanent, 2},
		{"open breaker", []error{&resilience.Error{Category: resilience.CircuitOpen, Err: resilience.ErrCircuitOpen}}, true, resilience.StopCircuitOpen, 1},
		{"cancelled operation", []error{context.Canceled}, true, resilience.StopCanceled, 1},
		{"timeouts are transient", []error{context.DeadlineExceeded}, true, resilience.StopExhausted, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := resilience.NewRetry(seedRetry, resiliencetest.NewAutoClock(epoch))
			tries := 0
			err := r.Do(t.Context(), func(ctx context.Context, attempt int) error {
				tries++
				return tt.errs[min(attempt, len(tt.errs))-1]
			})
			if tries != tt.wantTries {
				t.Errorf("%d attempts, want %d", tries, tt.wantTries)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Do = %v, want nil", err)
				}
				return
			}
			var re *resilience.RetryError
			if !errors.As(err, &re) {
				t.Fatalf("Do = %v, want a *RetryError", err)
			}
			if re.Reason != tt.wantReason || re.Attempts != tt.wantTries {
				t.Errorf("stopped with %s after %d attempts, want %s after %d", re.Reason, re.Attempts, tt.wantReason, tt.wantTries)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	retryAfter := func(h http.Header) error {
		return &resilience.Error{Service: "llm", Category: resilience.Transient, StatusCode: 429,
			RetryAfter: backoff.RetryAfter(h, epoch)}
	}
	hdr := func(k, v string) http.Header { h := http.Header{}; h.Set(k, v); return h }
	tests := []struct {
		name string
		err  error
		want time.Duration // the first wait; the backoff alone says 5s
	}{
		{"seconds longer than backoff", retryAfter(hdr("Retry-After", "7")), 7 * time.Second},
		{"http date longer than backoff", retryAfter(hdr("Retry-After", epoch.Add(12*time.Second).Format(http.TimeFormat))), 12 * time.Second},
		{"shorter than backoff", retryAfter(hdr("Retry-After", "2")), 5 * time.Second},
		{"seconds capped by max_delay", retryAfter(hdr("Retry-After", "3600")), time.Minute},
		{"http date capped by max_delay", retryAfter(hdr("Retry-After", epoch.Add(2*time.Hour).Format(http.TimeFormat))), time.Minute},
		{"milliseconds", retryAfter(hdr("Retry-After-Ms", "8500")), 8500 * time.Millisecond},
		{"no header", retryAfter(http.Header{}), 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := resiliencetest.NewAutoClock(epoch)
			r := resilience.NewRetry(seedRetry, clock)
			r.MaxRetries = 1
			_ = r.Do(t.Context(), func(ctx context.Context, attempt int) error { return tt.err })
			if got := clock.Waits(); !slices.Equal(got, []time.Duration{tt.want}) {
				t.Errorf("slept %v, want [%v]", got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	r := resilience.Retry{InitialDelay: 5 * time.Second, Multiplier: 2, MaxDelay: 30 * time.Second}
	for attempt, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second, 4: 30 * time.Second, 60: 30 * time.Second} {
		if got := r.Delay(attempt, unavailable()); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, want)
		}
	}
	zero := resilience.Retry{}
	if got := zero.Delay(1, unavailable()); got != resilience.DefaultInitialDelay {
		t.Errorf("zero Retry: Delay(1) = %v, want %v", got, resilience.DefaultInitialDelay)
	}
	if got := zero.Delay(3, unavailable()); got != 4*resilience.DefaultInitialDelay {
		t.Errorf("zero Retry: Delay(3) = %v, want %v", got, 4*resilience.DefaultInitialDelay)
	}

	jittered := resilience.Retry{InitialDelay: 10 * time.Second, Multiplier: 2, MaxDelay: time.Minute, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := jittered.Delay(2, unavailable()) // 20s before jitter
		if d < 10*time.Second || d > 20*time.Second {
			t.Fatalf("jittered delay %v outside [10s, 20s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("jitter produced only %d distinct delays in 200", len(seen))
	}
}

func TestRetryCancelEndsSleep(t *testing.T) {
	clock := resiliencetest.NewClock(epoch) // never advanced: only cancellation can end the wait
	r := resilience.NewRetry(seedRetry, clock)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- r.Do(ctx, func(ctx context.Context, attempt int) error { return unavailable() })
	}()
	eventually(t, "Do to sleep", func() bool { return clock.Waiters() == 1 })
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Do kept sleeping after its context was cancelled")
	}
	var re *resilience.RetryError
	if !errors.As(err, &re) || re.Reason != resilience.StopCanceled || re.Attempts != 1 {
		t.Fatalf("Do = %v, want canceled after 1 attempt", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Error("errors.Is(err, context.Canceled) = false")
	}
	if got := resilience.Classify(err); got != "" {
		t.Errorf("Classify = %q, want \"\": a cancelled call is neither success nor failure", got)
	}
	if !clock.Now().Equal(epoch) {
		t.Error("the clock moved")
	}
}

func TestRetryDeadlineEndsSleep(t *testing.T) {
	clock := resiliencetest.NewClock(epoch)
	r := resilience.NewRetry(seedRetry, clock)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := r.Do(ctx, func(ctx context.Context, attempt int) error { return unavailable() })
	var re *resilience.RetryError
	if !errors.As(err, &re) || re.Reason != resilience.StopDeadline {
		t.Fatalf("Do = %v, want %s", err, resilience.StopDeadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("errors.Is(err, context.DeadlineExceeded) = false")
	}
}

func TestRetryBudgetStopsStorm(t *testing.T) {
	clock := resiliencetest.NewAutoClock(epoch)
	r := resilience.NewRetry(seedRetry, clock)
	// 10% of requests plus 3 per hour: the storm below stays inside one window.
	r.Budget = resilience.NewBudget(0.1, time.Hour, 3, clock)
	retries := 0
	r.OnRetry = func(resilience.RetryInfo) { retries++ }
	reasons := map[resilience.StopReason]int{}
	for range 20 {
		err := r.Do(t.Context(), func(ctx context.Context, attempt int) error { return unavailable() })
		var re *resilience.RetryError
		if !errors.As(err, &re) {
			t.Fatalf("Do = %v, want a *RetryError", err)
		}
		reasons[re.Reason]++
	}
	// Without a budget: 20 calls x 3 retries = 60. With it: 3 + 10% of 20.
	if retries != 5 {
		t.Errorf("%d retries, want 5", retries)
	}
	if reasons[resilience.StopBudget] != 19 || reasons[resilience.StopExhausted] != 1 {
		t.Errorf("stop reasons %v, want 1 %s and 19 %s", reasons, resilience.StopExhausted, resilience.StopBudget)
	}

	clock.Advance(time.Hour) // the window slides past the storm
	retries = 0
	_ = r.Do(t.Context(), func(ctx context.Context, attempt int) error { return unavailable() })
	if retries != 3 {
		t.Errorf("after the window, %d retries, want 3", retries)
	}
}

func TestBudget(t *testing.T) {
	t.Run("minimum per window without traffic", func(t *testing.T) {
		clock := resiliencetest.NewClock(epoch)
		b := resilience.NewBudget(0, 10*time.Second, 2, clock)
		got := []bool{b.Retry(), b.Retry(), b.Retry()}
		if !slices.Equal(got, []bool{true, true, false}) {
			t.Fatalf("grants %v, want [true true false]", got)
		}
		clock.Advance(5 * time.Second)
		if b.Retry() {
			t.Fatal("granted a retry halfway through the window")
		}
		clock.Advance(5 * time.Second)
		if !b.Retry() {
			t.Fatal("refused a retry once the window slid past")
		}
	})
	t.Run("share of requests", func(t *testing.T) {
		clock := resiliencetest.NewClock(epoch)
		b := resilience.NewBudget(0.5, time.Minute, 1, clock)
		for range 10 {
			b.Request()
		}
		granted := 0
		for range 20 {
			if b.Retry() {
				granted++
			}
		}
		if granted != 6 {
			t.Errorf("granted %d, want 1 + 50%% of 10 = 6", granted)
		}
	})
	t.Run("nil grants everything", func(t *testing.T) {
		var b *resilience.Budget
		b.Request()
		if !b.Retry() {
			t.Fatal("a nil budget refused")
		}
	})
	t.Run("concurrent storm stays within budget", func(t *testing.T) {
		clock := resiliencetest.NewClock(epoch)
		b := resilience.NewBudget(0.2, time.Minute, 5, clock)
		var mu sync.Mutex
		granted := 0
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 50 {
					b.Request()
					for range 3 {
						if b.Retry() {
							mu.Lock()
							granted++
							mu.Unlock()
						}
					}
				}
			})
		}
		wg.Wait()
		if limit := 5 + 0.2*400; granted > int(limit) || granted < 5 {
			t.Errorf("granted %d retries for 400 requests, want between 5 and %v", granted, limit)
		}
	})
}
