// Package resiliencetest holds test doubles for code that uses package
// resilience: a fake clock that lets a test run a retry schedule of minutes
// in microseconds.
package resiliencetest

import (
	"sync"
	"time"
)

// Clock is a fake resilience.Clock. Its time moves only when Advance or Set
// is called, or, in automatic mode, when someone waits on After. It is safe
// for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	auto    bool
	waiters []waiter
	waits   []time.Duration
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a fake clock set to start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// NewAutoClock returns a fake clock set to start in automatic mode: every
// After(d) moves the clock forward by d and fires at once, so code that sleeps
// in a single goroutine runs its whole schedule without a helper goroutine
// advancing time. With several goroutines sleeping, each one's wait moves
// everyone's time.
func NewAutoClock(start time.Time) *Clock { return &Clock{now: start, auto: true} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the fake time once the clock has
// moved d past now. A d of zero or less fires at once.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	at := c.now.Add(d)
	if !at.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: at, ch: ch})
	if c.auto {
		c.advanceLocked(d) // fires ch, and any earlier waits
	}
	return ch
}

// Advance moves the clock forward by d and fires every wait that is due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(d)
}

// Set moves the clock to t (never backwards) and fires every wait that is due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.advanceLocked(t.Sub(c.now))
	}
}

func (c *Clock) advanceLocked(d time.Duration) {
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now // buffered: never blocks
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// Waiters is the number of pending After calls; a test polls it to know that
// the code under test has gone to sleep.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Waits lists the durations passed to After so far, in call order.
func (c *Clock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}
