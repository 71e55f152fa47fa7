package resilience

import "time"

// Clock is the time source of the retry policy, the retry budget, the
// breakers and the health prober. Tests use resiliencetest.Clock to run a
// 5 s, 10 s, 20 s schedule without waiting for it.
type Clock interface {
	Now() time.Time
	// After delivers the time on the returned channel once d has passed.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d). Since Go 1.23 an abandoned timer is collected
// without being stopped, so a cancelled sleep leaks nothing.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func clockOr(c Clock) Clock {
	if c == nil {
		return SystemClock{}
	}
	return c
}
