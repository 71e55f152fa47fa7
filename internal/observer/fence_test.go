package observer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	ot "github.com/callagent/agent/internal/observer/observertest"
)

// An observer deposed while holding an older state (it loaded it, then
// another observer became active and moved the state on) cannot save it
// over the newer one; when it becomes active again it starts from the newer
// state and derives nothing twice.
func TestDeposedObserverCannotSaveOverNewerState(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := Options{Rules: config.Rules{GroupWait: -1}, Now: newClock(at(-time.Second)).Now, Log: natstest.Logger(t), Tick: 20 * time.Millisecond}
	breakers := func(from, n int) []events.Event {
		var evs []events.Event
		for i := from; i < from+n; i++ {
			from, to := events.BreakerClosed, events.BreakerOpen
			if i%2 == 1 {
				from, to = to, from
			}
			evs = append(evs, ot.Breaker("brk-"+string(rune('a'+i)), at(time.Duration(i)*time.Second), tts, from, to))
		}
		return ot.Stamped(evs...)
	}

	emit(t, conn, breakers(0, 3)...)
	a := startPipeline(t, conn, opts, nil)
	caughtUp(t, conn, a.p)
	a.stop()
	first, _ := savedState(t, conn)

	// The one to be deposed loads that state, then another runs on.
	deposed, err := New(ctx, conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	emit(t, conn, breakers(3, 3)...)
	b := startPipeline(t, conn, opts, nil)
	caughtUp(t, conn, b.p)
	b.stop()
	newer, _ := savedState(t, conn)
	if newer.Seq <= first.Seq {
		t.Fatalf("the active observer saved seq %d, not past %d", newer.Seq, first.Seq)
	}

	deposed.mu.Lock()
	deposed.unsaved = 1
	err = deposed.save(ctx)
	deposed.mu.Unlock()
	if !errors.Is(err, ErrStateMoved) {
		t.Fatalf("the deposed observer's save: %v, want ErrStateMoved", err)
	}
	if s, _ := savedState(t, conn); s.Seq != newer.Seq {
		t.Fatalf("saved state at seq %d after the deposed save, want %d", s.Seq, newer.Seq)
	}

	// Active again: it runs from the newer state.
	emit(t, conn, breakers(6, 2)...)
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- deposed.Run(rctx) }()
	caughtUp(t, conn, deposed)
	rcancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	as := alertsStored(t, conn)
	seen := map[string]int{}
	for _, a := range as {
		seen[a.ID]++
	}
	if len(as) != 8 || len(seen) != 8 {
		t.Errorf("ALERTS holds %d alerts (%d distinct), want 8 once each: %v", len(as), len(seen), brief(as))
	}
	if s, _ := savedState(t, conn); s.Seq <= newer.Seq {
		t.Errorf("saved seq %d, want past %d", s.Seq, newer.Seq)
	}
}
