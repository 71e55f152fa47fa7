//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/simulator"
)

// TestRequeuesSurviveDispatcherKill is the acceptance test of durable
// re-queues: busy and unanswered contacts wait for their next attempt as
// message schedules on CALLS; the only dispatcher is killed with SIGKILL while
// they wait; the stream alone calls them on time; then two dispatchers
// started one after the other on the same campaign read what happened from
// the state and EVENTS, store the third attempts, and both report the
// finished campaign, as `dispatcher status` does. Every attempt reaches a
// caller once and places one call; every contact ends once.
func TestRequeuesSurviveDispatcherKill(t *testing.T) {
	t.Parallel()
	const (
		campaign = "durable"
		delay    = 8 * time.Second
	)
	// c01-c04 answer; c05-c08 are busy until the dispatcher is dead, then
	// answer; c09-c12 never answer and use their three attempts.
	phone := func(i int) string { return fmt.Sprintf("+1415555%04d", 100+i-1) }
	busy, noAnswer := []int{5, 6, 7, 8}, []int{9, 10, 11, 12}
	scenario := func(withBusy bool) string {
		s := "name: requeue\nservices:\n  telephony:\n    rings: 1\n    call_duration: 1s\n    outcomes:\n"
		for _, i := range noAnswer {
			s += fmt.Sprintf("      %q: no-answer\n", phone(i))
		}
		if withBusy {
			for _, i := range busy {
				s += fmt.Sprintf("      %q: busy\n", phone(i))
			}
		}
		return s
	}
	e := newEnv(t, scenario(true))
	s := e.settings()
	s.set("dispatcher.max_attempts", 3)
	s.set("dispatcher.no_answer_retry_delay", delay.String())
	s.set("caller.concurrency", 4)
	cfg := e.write("agent", s)
	e.startCaller(cfg, "caller-a")
	e.startCaller(cfg, "caller-b")
	contacts, ids := e.contactsFile(12)
	id := func(i int) string { return ids[i-1] }
	dispatch := func(name string) *proc {
		return e.start(name, "dispatcher", "run", "--config", cfg, "--contacts", contacts,
			"--campaign", campaign, "--output", "json", "--progress", "lines", "--timeout", "100s")
	}
	state := func() *dispatcher.Summary {
		ctx, cancel := timeout(5 * time.Second)
		defer cancel()
		kv, err := e.admin.OpenKeyValue(ctx, dispatcher.DefaultStateBucket)
		if err != nil {
			return nil
		}
		sum, err := dispatcher.Summarize(ctx, kv, campaign)
		if err != nil {
			return nil
		}
		return sum
	}
	contact := func(sum *dispatcher.Summary, i int) *dispatcher.ContactState {
		for k := range sum.Contacts {
			if sum.Contacts[k].ContactID == id(i) {
				return &sum.Contacts[k]
			}
		}
		return nil
	}
	waiting := append(append([]int(nil), busy...), noAnswer...)

	d1 := dispatch("dispatcher-1")
	waitFor(t, 60*time.Second, "four contacts completed and eight waiting on a stored re-queue", func() bool {
		sum := state()
		if sum == nil || sum.Succeeded != 4 {
			return false
		}
		for _, i := range waiting {
			c := contact(sum, i)
			if c == nil || len(c.History) != 2 {
				return false
			}
			if a := c.History[1]; a.ScheduledAt == nil || a.PublishedAt == nil || a.StartedAt != nil {
				return false
			}
		}
		return true
	})
	ctx, cancel := timeout(5 * time.Second)
	pending, err := dispatcher.PendingRequeues(ctx, e.admin, campaign)
	cancel()
	if err != nil || len(pending) != len(waiting) {
		t.Fatalf("re-queues stored on CALLS: %v, %v; want %d", pending, err, len(waiting))
	}
	killed := time.Now()
	d1.kill9(t)
	before := state()
	sc, err := simulator.ParseScenario([]byte(scenario(false)))
	if err != nil {
		t.Fatal(err)
	}
	e.sim.SetScenario(sc) // the busy ones answer from now on

	// No dispatcher runs: the stream makes every second attempt.
	second := func(i int) string { return dispatcher.CallID(campaign, id(i), 2) }
	waitFor(t, 60*time.Second, "every second attempt ended with no dispatcher", func() bool {
		terms := e.terminals()
		for _, i := range waiting {
			if len(terms[second(i)]) == 0 {
				return false
			}
		}
		return true
	})
	started := map[string][]time.Time{}
	for _, ev := range e.eventsOf(events.CallSubject(events.CallStarted)) {
		if c, ok := ev.(*events.Call); ok {
			started[c.CallID] = append(started[c.CallID], c.Time)
		}
	}
	for _, i := range waiting {
		if at := started[second(i)]; len(at) == 0 || at[0].Before(killed) {
			t.Errorf("%s started %v, not after the dispatcher was killed at %s", second(i), at, killed.Format(time.RFC3339Nano))
		}
	}
	if st := state(); st.Succeeded != before.Succeeded || st.Waiting != before.Waiting {
		t.Errorf("the state changed with no dispatcher: %s then %s", before.Line(), st.Line())
	}

	// Two dispatchers, the second joining once the first has read the
	// outcomes it missed and while the third attempts wait.
	d2 := dispatch("dispatcher-2")
	waitFor(t, 30*time.Second, "the restarted dispatcher read the missed outcomes", func() bool {
		sum := state()
		if sum == nil || sum.Succeeded != 8 {
			return false
		}
		for _, i := range noAnswer {
			if c := contact(sum, i); c == nil || len(c.History) != 3 || c.History[2].PublishedAt == nil {
				return false
			}
		}
		return true
	})
	d3 := dispatch("dispatcher-3")
	sums := []*dispatcher.Summary{e.summary(d2, 60*time.Second), e.summary(d3, 60*time.Second)}
	st := e.start("status", "dispatcher", "status", "--config", cfg, "--campaign", campaign, "--output", "json")
	if code := st.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("dispatcher status exited %d:\n%s", code, st.Tail(20))
	}
	var status dispatcher.Summary
	if err := json.Unmarshal(st.stdout.Bytes(), &status); err != nil {
		t.Fatalf("status: %v\n%s", err, st.stdout.String())
	}
	sums = append(sums, &status)
	for k, sum := range sums {
		byStatus := e.checkCampaign(sum, ids)
		if byStatus[dispatcher.StatusCompleted] != 8 || byStatus[dispatcher.StatusExhausted] != 4 || len(byStatus) != 2 {
			t.Errorf("report %d: %v, want 8 completed and 4 exhausted", k+1, byStatus)
		}
	}

	// Each attempt reached one caller once and placed one call; the
	// restarts re-dispatched nothing.
	started = map[string][]time.Time{}
	for _, ev := range e.eventsOf(events.CallSubject(events.CallStarted)) {
		if c, ok := ev.(*events.Call); ok {
			started[c.CallID] = append(started[c.CallID], c.Time)
		}
	}
	// Lateness of the second attempts, fired with no dispatcher running, and
	// of the third, stored by the restarted ones.
	lateness := map[int][]time.Duration{}
	attempts := 0
	for _, c := range status.Contacts {
		want := 1
		switch i := slices.Index(ids, c.ContactID) + 1; {
		case slices.Contains(busy, i):
			want = 2
		case slices.Contains(noAnswer, i):
			want = 3
		}
		if len(c.History) != want {
			t.Errorf("contact %s had %d attempts, want %d", c.ContactID, len(c.History), want)
		}
		for _, a := range c.History {
			attempts++
			if n := len(started[a.CallID]); n != 1 {
				t.Errorf("%s reached a caller %d times, want once", a.CallID, n)
			}
			if n := e.sim.SideEffects(config.ServiceTelephony, a.CallID); n != 1 {
				t.Errorf("%s placed %d calls, want 1", a.CallID, n)
			}
			if a.ScheduledAt == nil || len(started[a.CallID]) == 0 {
				continue
			}
			late := started[a.CallID][0].Sub(*a.ScheduledAt)
			// The schedule's @at: the due time rounded up to the second.
			at := a.ScheduledAt.Truncate(time.Second)
			if at.Before(*a.ScheduledAt) {
				at = at.Add(time.Second)
			}
			t.Logf("%s attempt %d: due %s, started %s late (%s after its @at)", c.ContactID, a.Attempt,
				a.ScheduledAt.Format("15:04:05.000"), late.Round(time.Millisecond), started[a.CallID][0].Sub(at).Round(time.Millisecond))
			lateness[a.Attempt] = append(lateness[a.Attempt], late)
			// @at has whole seconds (rounded up) and the server's timer
			// ticks by the second: on time is within a few seconds of due,
			// never before.
			if late < 0 || late > 5*time.Second {
				t.Errorf("%s attempt %d started %s after it was due, want between 0 and 5s", c.ContactID, a.Attempt, late)
			}
		}
	}
	for attempt, what := range map[int]string{2: "with no dispatcher running", 3: "with two dispatchers running"} {
		l := lateness[attempt]
		if len(l) != len(waiting)-4*(attempt-2) {
			t.Errorf("%d re-queues of attempt %d measured", len(l), attempt)
			continue
		}
		slices.Sort(l)
		t.Logf("re-queue lateness, attempt %d, %d contacts, %s: min %s, median %s, max %s", attempt, len(l), what,
			l[0].Round(time.Millisecond), l[len(l)/2].Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
	}
	// 12 first attempts, and 12 re-queues each stored once as a schedule and
	// published once by the stream; nothing is left on CALLS.
	if n := natstest.LastSeq(t, e.admin, events.StreamCalls); n != uint64(attempts+12) {
		t.Errorf("CALLS stored %d messages, want %d", n, attempts+12)
	}
	if n := e.streamMsgs(events.StreamCalls); n != 0 {
		t.Errorf("CALLS still holds %d messages", n)
	}
	// Whatever consumes CALLS takes requests only: a consumer that also saw
	// agent.requeue.> would take (and, on a work queue, remove) schedules.
	admin := e.nats.Roles()[config.RoleAdmin]
	_, js := natstest.Raw(t, e.nats.URL(), admin.User, admin.Password)
	ctx, cancel = timeout(5 * time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	consumers := 0
	for info := range stream.ListConsumers(ctx).Info() {
		consumers++
		filters := info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			filters = append(filters, info.Config.FilterSubject)
		}
		if !slices.Equal(filters, []string{events.DispatchAll}) {
			t.Errorf("consumer %s on CALLS filters %v, want only %s", info.Name, filters, events.DispatchAll)
		}
	}
	if consumers == 0 {
		t.Error("no consumer on CALLS")
	}
}
