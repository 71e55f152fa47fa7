// Package resilience owns the call agent's failure policy: error classification
// (Error, Classify, FromTransport), retry with exponential
// backoff and a per-service retry budget (Retry, Budget), the per-service
// circuit breaker (Breaker), the Fleet that shares every breaker's transitions
// with the other callers over the bus, and the health Prober that finds
// recovery. Provider clients only classify; when to retry, wait or fail fast
// is decided here.
package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Category is how a failure is treated. Its values are the contract's
// error_category strings.
type Category string

const (
	// Transient failures are retried with backoff.
	Transient Category = "transient"
	// Permanent failures fail at once and alert.
	Permanent Category = "permanent"
	// CircuitOpen means the call was not made: the breaker is open.
	CircuitOpen Category = "circuit_open"
)

// ErrCircuitOpen is returned, wrapped in an *Error, when a breaker refuses a call.
var ErrCircuitOpen = errors.New("circuit breaker is open")

// Error is a classified failure of one call to one service. Provider clients
// return it; the retry policy and the breaker act on it.
type Error struct {
	Service  string
	Category Category
	// StatusCode is the HTTP status, 0 for network errors and timeouts.
	StatusCode int
	// Code is the provider's own error code: "rate_limit_exceeded",
	// "insufficient_quota", "20429", ...
	Code string
	// RetryAfter is the provider's requested wait, 0 when it gave none.
	RetryAfter time.Duration
	// Message is safe to publish: it never holds secrets or full phone numbers.
	Message string
	Err     error
}

func (e *Error) Error() string {
	s := e.Service + ": " + string(e.Category)
	if e.StatusCode != 0 {
		s += fmt.Sprintf(" (http %d", e.StatusCode)
		if e.Code != "" {
			s += " " + e.Code
		}
		s += ")"
	} else if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil && e.Message == "" {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Classify returns the category of err: "" for nil or for a chain holding
// context.Canceled (neither a success nor a failure of the service), else the
// category of an *Error in its chain, Transient for a bare
// context.DeadlineExceeded, and Permanent for any other error.
func Classify(err error) Category {
	if err == nil {
		return ""
	}
	// Cancellation is checked first: a *RetryError cut short by shutdown
	// holds both the last service error and context.Canceled, and the call
	// must then count as neither a success nor a failure.
	if errors.Is(err, context.Canceled) {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Category
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Transient
	}
	return Permanent
}
