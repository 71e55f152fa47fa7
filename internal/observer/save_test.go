package observer

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	ot "github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/rules"
)

// savedState reads the state the pipeline saved, and how many times it was
// put.
func savedState(t testing.TB, c *bus.Conn) (saved, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := c.KeyValue(ctx, StateBucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "observer")
	if err != nil {
		return saved{}, 0
	}
	var s saved
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		t.Fatalf("saved state: %v", err)
	}
	return s, e.Revision()
}

// Events that cause something are saved once for their batch, not once each:
// the state is saved after the first event (before which a successor could
// only start from the ack floor) and at the end of the batch.
func TestStateSavedPerBatch(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	const n = 40
	var evs []events.Event
	for i := range n {
		from, to := events.BreakerClosed, events.BreakerOpen
		if i%2 == 1 {
			from, to = to, from
		}
		evs = append(evs, ot.Breaker(string(rune('a'+i/26))+string(rune('a'+i%26)), at(time.Duration(i)*time.Second), tts, from, to))
	}
	emit(t, conn, ot.Stamped(evs...)...) // before the pipeline starts: one batch
	clock := newClock(at(-time.Second))
	r := startPipeline(t, conn, Options{Rules: config.Rules{GroupWait: -1}, Now: clock.Now}, nil)
	caughtUp(t, conn, r.p)
	waitFor(t, "the batch saved", 10*time.Second, func() bool {
		s, _ := savedState(t, conn)
		return s.Seq == n
	})
	if got := len(alertsStored(t, conn)); got != n {
		t.Fatalf("%d alerts stored, want %d: every event caused one", got, n)
	}
	// Once after the first event, once per batch: a few, not one per event.
	if _, puts := savedState(t, conn); puts > 4 {
		t.Errorf("state saved %d times for %d events in one batch", puts, n)
	}
}

// What the passing of time causes (a group flushed by the ticker) cannot be
// re-derived from the stream: it is saved at once. The group here was left
// waiting by a previous observer, so no batch of events is in hand to save it.
func TestTickOutputsSavedAtOnce(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	clock := newClock(at(-time.Second))
	first := startPipeline(t, conn, Options{Rules: testRules, Now: clock.Now}, nil)
	emit(t, conn, ot.Stamped(ot.Call("c1", at(0), "call-1", events.CallFailed, tts, "retries_exhausted"))...)
	caughtUp(t, conn, first.p)
	first.stop()
	if n := len(alertsStored(t, conn)); n != 0 {
		t.Fatalf("%d alerts before the group wait ended", n)
	}

	// A save interval far beyond the clock's jump: only the flush saves.
	second := startPipeline(t, conn, Options{Rules: testRules, Now: clock.Now, SaveInterval: time.Hour}, nil)
	waitFor(t, "the second observer consuming", 10*time.Second, second.p.Ready)
	clock.Set(at(11 * time.Second))
	waitFor(t, "the group flushed", 10*time.Second, func() bool { return len(alertsStored(t, conn)) == 1 })
	waitFor(t, "the flush saved", 10*time.Second, func() bool {
		s, _ := savedState(t, conn)
		return strings.Contains(string(s.Engine), `"sent":1`) && len(s.Recent) == 1
	})
}

// An observer killed with events acknowledged but not yet saved (the batch
// had not ended): the next one re-applies them from the stream, so what they
// opened is still resolved later, and what they published is stored once.
func TestCrashAfterAckBeforeSave(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	clock := newClock(at(-time.Second))
	cfg := config.Rules{GroupWait: -1, RepeatInterval: time.Hour}

	emit(t, conn, ot.Stamped(
		ok("s1", 0, "call-1"), // saved at once: the first event
		ot.Breaker("b1", at(time.Second), tts, events.BreakerClosed, events.BreakerOpen),        // acknowledged, not saved
		ot.Call("c1", at(2*time.Second), "call-2", events.CallFailed, tts, "retries_exhausted"), // killed here
	)...)
	victim := srv.Connect(t, config.NATS{}, "observer-1")
	var killed atomic.Bool
	first := startPipeline(t, victim, Options{Rules: cfg, Now: clock.Now, AckWait: time.Second},
		func(_ context.Context, outs []rules.Output) error {
			for _, o := range outs {
				if o.Alert != nil && o.Alert.Rule == rules.RuleRetriesExhausted && !killed.Load() {
					killed.Store(true)
					victim.Abort() // SIGKILL: no ack, no state saved
					return errors.New("killed")
				}
			}
			return nil
		})
	waitFor(t, "the observer to die after publishing", 10*time.Second, killed.Load)
	first.stop()
	if s, _ := savedState(t, conn); s.Seq != 1 {
		t.Fatalf("saved cursor %d, want 1: saved after the first event, and not since", s.Seq)
	}
	waitFor(t, "the breaker event acknowledged", 10*time.Second, func() bool {
		info, err := conn.ConsumerInfo(ctx, events.StreamEvents, "observer")
		return err == nil && info.AckFloor.Stream == 2
	})

	second := startPipeline(t, srv.Connect(t, config.NATS{}, "observer-2"), Options{Rules: cfg, Now: clock.Now, AckWait: time.Second}, nil)
	caughtUp(t, conn, second.p)
	emit(t, conn, ot.Stamped(
		ot.Breaker("b2", at(3*time.Second), tts, events.BreakerOpen, events.BreakerClosed),
		ok("s2", 4*time.Second, "call-3"),
	)...)
	caughtUp(t, conn, second.p)
	waitFor(t, "resolutions", 10*time.Second, func() bool { return len(alertsStored(t, conn)) >= 4 })
	want := []string{
		"firing breaker_open elevenlabs critical n=1",
		"firing retries_exhausted elevenlabs critical n=1",
		"resolved breaker_open elevenlabs critical n=1",
		"resolved retries_exhausted elevenlabs critical n=1",
	}
	if got := brief(alertsStored(t, conn)); !reflect.DeepEqual(got, want) {
		t.Errorf("alerts across the crash\n got %q\nwant %q", got, want)
	}
	if n := len(second.p.Snapshot().ActiveAlerts); n != 0 {
		t.Errorf("%d alerts still active", n)
	}
}

// The state is encoded by hand to skip work; it must read back as the saved
// struct reads, byte for byte what json.Marshal writes.
func TestEncodeIsSavedJSON(t *testing.T) {
	p := &Pipeline{engine: rules.New(testRules), seq: 42}
	check := func(what string) {
		t.Helper()
		got, err := p.encode()
		if err != nil {
			t.Fatal(err)
		}
		eng, err := json.Marshal(p.engine)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(saved{V: 1, Seq: p.seq, Engine: eng, Recent: p.recent})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", what, got, want)
		}
	}
	check("fresh")
	step := func(until time.Duration, evs ...events.Event) {
		t.Helper()
		before := len(p.recent)
		var outs []rules.Output
		for _, ev := range ot.Stamped(evs...) {
			outs = append(outs, p.engine.Apply(ev)...)
		}
		for _, o := range append(outs, p.engine.Advance(at(until))...) {
			if o.Alert != nil {
				p.remember(o.Alert)
			}
		}
		if len(p.recent) == before {
			t.Fatal("no notification: nothing to re-encode")
		}
	}
	step(11*time.Second, ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen))
	check("an alert")
	p.seq++
	check("recent unchanged")
	step(time.Minute, ot.Call("c1", at(12*time.Second), "call-<1>&", events.CallFailed, tts, "retries_exhausted"))
	check("another alert remembered")
}
