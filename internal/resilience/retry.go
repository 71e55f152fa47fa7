package resilience

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/internal/config"
)

// Defaults of a Retry whose fields are zero.
const (
	DefaultInitialDelay = time.Second
	DefaultMultiplier   = 2
	DefaultMaxDelay     = time.Minute
)

// StopReason says why Retry.Do gave up. The values are the contract's
// call-failure reasons where one applies.
type StopReason string

// Reasons for which Do stops retrying.
const (
	// StopPermanent: the error is not worth retrying.
	StopPermanent StopReason = "permanent"
	// StopExhausted: the last allowed retry failed too.
	StopExhausted StopReason = "retries_exhausted"
	// StopBudget: the service's retry budget refused another retry.
	StopBudget StopReason = "budget_exhausted"
	// StopCircuitOpen: the service's breaker refused the call.
	StopCircuitOpen StopReason = "circuit_open"
	// StopCanceled: the caller's context was cancelled.
	StopCanceled StopReason = "canceled"
	// StopDeadline: the caller's context expired.
	StopDeadline StopReason = "timeout"
)

// RetryError is what Do returns when the operation did not succeed: the last
// attempt's error and why there was no further attempt. It unwraps to the
// last error (and to the context's error when the context ended it), so
// errors.As finds the last *Error through it.
type RetryError struct {
	Reason StopReason
	// Attempts is how many times the operation ran.
	Attempts int
	// Err is the last attempt's error.
	Err error
	ctx error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%s after %d attempts: %v", e.Reason, e.Attempts, e.Err)
}

// Unwrap returns the last error and, when the context stopped the retries,
// the context's error.
func (e *RetryError) Unwrap() []error {
	if e.ctx != nil {
		return []error{e.Err, e.ctx}
	}
	return []error{e.Err}
}

// RetryInfo describes a retry about to be waited for.
type RetryInfo struct {
	// Attempt is the attempt that just failed, from 1; the next one is Attempt+1.
	Attempt int
	// MaxAttempts is the first attempt plus MaxRetries.
	MaxAttempts int
	// Delay is the wait before the next attempt.
	Delay time.Duration
	// Err is the failed attempt's error.
	Err error
}

// Retry is an exponential backoff policy: after a transient failure it waits
// InitialDelay, then each wait grows by Multiplier up to MaxDelay, for at most
// MaxRetries retries. Permanent errors, an open breaker, a cancelled context
// and a refused retry budget stop it at once.
//
// Retry is a value: copy it to set a per-call OnRetry. The Budget it points to
// is shared by the copies, which is what makes it a per-service budget, so
// build one Retry per service (NewRetry) and copy it per call.
type Retry struct {
	// MaxRetries is how many retries may follow the first attempt; 0 means none.
	MaxRetries int
	// InitialDelay is the wait before the first retry (0 means DefaultInitialDelay).
	InitialDelay time.Duration
	// Multiplier grows each wait (0 means DefaultMultiplier; below 1 means 1).
	Multiplier float64
	// MaxDelay caps every wait, a server's Retry-After included (0 means
	// DefaultMaxDelay).
	MaxDelay time.Duration
	// Jitter is the random share taken off each backoff wait, 0 to 1: a wait
	// d becomes a value in [d*(1-Jitter), d]. Subtracting rather than adding
	// keeps MaxDelay a true bound. Retry-After waits are not jittered.
	Jitter float64
	// Budget, when set, must grant every retry.
	Budget *Budget
	// Clock times the waits (nil means the system clock).
	Clock Clock
	// OnRetry, when set, is called before each wait, so the caller can
	// publish the retry before it happens.
	OnRetry func(RetryInfo)
}

// NewRetry returns the policy configured by cfg, with a retry budget when
// cfg.Budget is above 0. clock may be nil for the system clock.
func NewRetry(cfg config.Retry, clock Clock) Retry {
	r := Retry{
		MaxRetries:   cfg.MaxRetries,
		InitialDelay: cfg.InitialDelay,
		Multiplier:   cfg.Multiplier,
		MaxDelay:     cfg.MaxDelay,
		Jitter:       cfg.Jitter,
		Clock:        clock,
	}
	if cfg.Budget > 0 {
		r.Budget = NewBudget(cfg.Budget, cfg.BudgetWindow, 0, clock)
	}
	return r
}

// Do runs op until it succeeds or the policy stops it. op receives the
// attempt number, from 1. Do returns nil on success and a *RetryError
// otherwise; the wait between attempts ends at once when ctx is done.
func (r Retry) Do(ctx context.Context, op func(ctx context.Context, attempt int) error) error {
	clock := clockOr(r.Clock)
	r.Budget.Request()
	for attempt := 1; ; attempt++ {
		err := op(ctx, attempt)
		if err == nil {
			return nil
		}
		if reason, stop := r.stop(ctx, err, attempt); stop {
			return r.fail(ctx, reason, attempt, err)
		}
		delay := r.Delay(attempt, err)
		if !r.Budget.Retry() {
			return &RetryError{Reason: StopBudget, Attempts: attempt, Err: err}
		}
		if r.OnRetry != nil {
			r.OnRetry(RetryInfo{Attempt: attempt, MaxAttempts: r.MaxRetries + 1, Delay: delay, Err: err})
		}
		select {
		case <-ctx.Done():
			return r.fail(ctx, StopCanceled, attempt, err)
		case <-clock.After(delay):
		}
	}
}

func (r Retry) stop(ctx context.Context, err error, attempt int) (StopReason, bool) {
	if ctx.Err() != nil {
		return StopCanceled, true
	}
	switch Classify(err) {
	case "":
		return StopCanceled, true
	case Permanent:
		return StopPermanent, true
	case CircuitOpen:
		// Waiting out an open breaker here would hold a worker; the caller
		// skips the contact and comes back after the error's RetryAfter.
		return StopCircuitOpen, true
	}
	if attempt > r.MaxRetries {
		return StopExhausted, true
	}
	return "", false
}

func (r Retry) fail(ctx context.Context, reason StopReason, attempt int, err error) *RetryError {
	e := &RetryError{Reason: reason, Attempts: attempt, Err: err}
	if reason == StopCanceled {
		if ctxErr := ctx.Err(); ctxErr != nil {
			e.ctx = ctxErr
			if errors.Is(ctxErr, context.DeadlineExceeded) {
				e.Reason = StopDeadline
			}
		}
	}
	return e
}

// Delay is the wait after failed attempt number attempt (from 1): the
// exponential backoff with jitter, or the error's Retry-After when that is
// longer, capped by MaxDelay.
func (r Retry) Delay(attempt int, err error) time.Duration {
	initial, mult, maxDelay := r.InitialDelay, r.Multiplier, r.MaxDelay
	if initial <= 0 {
		initial = DefaultInitialDelay
	}
	if mult == 0 {
		mult = DefaultMultiplier
	}
	if maxDelay <= 0 {
		maxDelay = DefaultMaxDelay
	}
	d := float64(backoff.Exponential(attempt, initial, maxDelay, mult))
	if j := min(max(r.Jitter, 0), 1); j > 0 {
		d -= d * j * rand.Float64()
	}
	delay := time.Duration(d)
	if e, ok := errors.AsType[*Error](err); ok && e.RetryAfter > delay {
		delay = e.RetryAfter
	}
	return min(delay, maxDelay)
}
