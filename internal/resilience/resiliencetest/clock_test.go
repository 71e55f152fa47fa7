package resiliencetest_test

import (
	"slices"
	"testing"
	"time"

	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

var (
	start                  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_     resilience.Clock = (*resiliencetest.Clock)(nil)
)

func fired(ch <-chan time.Time) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestClockManual(t *testing.T) {
	c := resiliencetest.NewClock(start)
	short, long := c.After(5*time.Second), c.After(10*time.Second)
	if !fired(c.After(0)) {
		t.Error("After(0) did not fire at once")
	}
	if c.Waiters() != 2 {
		t.Fatalf("%d waiters, want 2", c.Waiters())
	}
	c.Advance(4 * time.Second)
	if fired(short) || fired(long) {
		t.Fatal("fired early")
	}
	c.Advance(time.Second)
	if !fired(short) || fired(long) {
		t.Fatal("want only the 5s wait fired at 5s")
	}
	c.Set(start.Add(time.Second)) // backwards: ignored
	if !c.Now().Equal(start.Add(5 * time.Second)) {
		t.Fatalf("Set moved the clock backwards to %v", c.Now())
	}
	c.Set(start.Add(time.Minute))
	if !fired(long) || c.Waiters() != 0 {
		t.Fatal("Set did not fire the due wait")
	}
	if got, want := c.Waits(), []time.Duration{5 * time.Second, 10 * time.Second, 0}; !slices.Equal(got, want) {
		t.Errorf("Waits() = %v, want %v", got, want)
	}
}

func TestClockAuto(t *testing.T) {
	c := resiliencetest.NewAutoClock(start)
	for _, d := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second} {
		if at := <-c.After(d); !at.Equal(c.Now()) {
			t.Fatalf("fired with %v, clock at %v", at, c.Now())
		}
	}
	if got := c.Now().Sub(start); got != 35*time.Second {
		t.Errorf("auto clock moved %v, want 35s", got)
	}
	if c.Waiters() != 0 {
		t.Errorf("%d waiters left", c.Waiters())
	}
}
