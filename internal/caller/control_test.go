package caller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/dnc"
	"github.com/callagent/agent/internal/natstest"
)

// campaign is one real dispatcher following a campaign, real callers and
// the simulator: what the operator's controls act on.
type campaign struct {
	t    *testing.T
	srv  *natstest.Server
	conn *bus.Conn
	sim  interface {
		SideEffects(service, callID string) int
	}
	cfg  config.Config
	name string
	list []contacts.Contact
	rec  *recorder
	ctl  *control.Store
}

// callScenario: completed calls last a second, so a call is in progress
// for a while; the numbers in busy answer busy.
func callScenario(busy ...string) string {
	s := "name: control\nservices:\n  telephony:\n    call_duration: 1s\n"
	if len(busy) > 0 {
		s += "    outcomes:\n"
		for _, n := range busy {
			s += fmt.Sprintf("      %q: busy\n", n)
		}
	}
	return s
}

func newCampaign(t *testing.T, name string, n int, scenario string, callers, concurrency, inFlight int) *campaign {
	t.Helper()
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	sim := startSimulator(t, scenario)
	cfg := testConfig(sim.URL())
	cfg.Caller.Concurrency = concurrency
	cfg.Caller.FleetMaxInFlight = inFlight
	cfg.Caller.AckWait = 5 * time.Second
	ctl, err := control.Open(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	c := &campaign{t: t, srv: srv, conn: conn, sim: sim, cfg: cfg, name: name, rec: record(t, conn), ctl: ctl}
	for i := 1; i <= n; i++ {
		c.list = append(c.list, contacts.Contact{Line: i + 1, ID: fmt.Sprintf("c%d", i), Phone: phone(i), Name: fmt.Sprintf("Contact %d", i), Timezone: "UTC"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i := range callers {
		startCaller(t, ctx, srv, cfg, fmt.Sprintf("caller-%d", i+1))
	}
	// After startCaller's own cleanups, which wait for the callers: cleanups
	// run last first, so this stops them first.
	t.Cleanup(cancel)
	return c
}

func phone(i int) string { return fmt.Sprintf("+141555502%02d", i) }

// run follows the campaign in the background; the channel brings its summary.
func (c *campaign) run(ctx context.Context, set dispatcher.Settings) <-chan *dispatcher.Summary {
	c.t.Helper()
	set.Campaign, set.CallingWindow, set.Log = c.name, "00:00-24:00", natstest.Logger(c.t)
	d, err := dispatcher.New(ctx, c.srv.Conn(c.t), set)
	if err != nil {
		c.t.Fatal(err)
	}
	out := make(chan *dispatcher.Summary, 1)
	go func() {
		sum, err := d.Run(ctx, c.list)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, dispatcher.ErrUnfinished) {
			c.t.Errorf("run: %v", err)
		}
		out <- sum
	}()
	return out
}

func (c *campaign) set(state control.State) {
	c.t.Helper()
	if _, err := c.ctl.SetState(context.Background(), c.name, "test", time.Now(), state); err != nil {
		c.t.Fatal(err)
	}
}

// dials is how many calls the simulator placed per contact, over every attempt.
func (c *campaign) dials() map[string]int {
	out := map[string]int{}
	for _, ct := range c.list {
		for a := 1; a <= 3; a++ {
			out[ct.ID] += c.sim.SideEffects("telephony", dispatcher.CallID(c.name, ct.ID, a))
		}
	}
	return out
}

func sumOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// ended is the call ids with a terminal event, and how many each has.
func (c *campaign) ended() map[string]int {
	out := map[string]int{}
	for id, evs := range c.rec.terminals() {
		out[id] = len(evs)
	}
	return out
}

func (c *campaign) deliveries(t *testing.T) int {
	t.Helper()
	ci, err := c.conn.ConsumerInfo(context.Background(), events.StreamCalls, "callers")
	if err != nil {
		t.Fatal(err)
	}
	return int(ci.Delivered.Consumer) // every delivery, redeliveries too
}

func summaryOf(t *testing.T, out <-chan *dispatcher.Summary, within time.Duration) *dispatcher.Summary {
	t.Helper()
	select {
	case sum := <-out:
		if sum == nil {
			t.Fatal("the dispatcher returned no summary")
		}
		return sum
	case <-time.After(within):
		t.Fatalf("the campaign did not finish within %s", within)
	}
	return nil
}

func statuses(sum *dispatcher.Summary) map[string]dispatcher.Status {
	out := map[string]dispatcher.Status{}
	for _, c := range sum.Contacts {
		out[c.ContactID] = c.Status
	}
	return out
}

// TestPauseMidCampaign pauses a campaign while a call rings: that call
// finishes, nothing new is dialled while paused (the requests stay queued,
// parked by the callers again and again), and once resumed every
// contact completes, each rung once.
func TestPauseMidCampaign(t *testing.T) {
	c := newCampaign(t, "pausing", 6, callScenario(), 2, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := c.run(ctx, dispatcher.Settings{})

	waitFor(t, 20*time.Second, "a first call placed", func() bool { return sumOf(c.dials()) > 0 })
	c.set(control.Paused)
	ringing := c.dials() // placed, some maybe still in progress
	// Calls a caller had taken past its last check before the pause may
	// still be placed; once every placed call has ended, nothing else is.
	waitFor(t, 20*time.Second, "the calls in progress to end", func() bool {
		placed := c.dials()
		for id, n := range placed {
			for a := 1; a <= n; a++ {
				if c.ended()[dispatcher.CallID(c.name, id, a)] == 0 {
					return false
				}
			}
		}
		return true
	})
	// A caller whose last check came just before the pause may dial a
	// moment later (check, pace, save progress, dial): let one round of
	// parkings (PausedRecheck each) pass before taking what was dialled.
	round := c.deliveries(t)
	waitFor(t, 20*time.Second, "a round of paused requests parked", func() bool {
		return c.deliveries(t) >= round+min(len(c.list)-sumOf(c.dials()), c.cfg.Caller.FleetMaxInFlight)
	})
	paused := c.dials()
	for id, n := range ringing {
		if n > 0 && c.ended()[dispatcher.CallID(c.name, id, 1)] == 0 {
			t.Errorf("%s was in progress at the pause and did not finish", id)
		}
	}
	if sumOf(paused) >= len(c.list) {
		t.Fatalf("every contact was dialled despite the pause: %v", paused)
	}
	// Each waiting request comes back to a caller and is parked again:
	// watch that happen twice over, and no dial meanwhile.
	start := c.deliveries(t)
	waiting := len(c.list) - sumOf(paused)
	waitFor(t, 20*time.Second, "the paused requests handed back twice", func() bool {
		return c.deliveries(t) >= start+2*min(waiting, c.cfg.Caller.FleetMaxInFlight)
	})
	if got := c.dials(); sumOf(got) != sumOf(paused) {
		t.Fatalf("dialled while paused: %v, at pause %v", got, paused)
	}
	st, err := c.ctl.Get(ctx, c.name)
	if err != nil || st.Effective() != control.Paused {
		t.Fatalf("control record: %+v %v", st, err)
	}

	c.set(control.Running)
	sum := summaryOf(t, out, 40*time.Second)
	if sum.Succeeded != len(c.list) {
		t.Fatalf("after resume: %s; statuses %v", sum.Line(), statuses(sum))
	}
	for id, n := range c.dials() {
		if n != 1 {
			t.Errorf("%s dialled %d times", id, n)
		}
	}
	for id, n := range c.ended() {
		if n != 1 {
			t.Errorf("call %s has %d terminal events", id, n)
		}
	}
	t.Logf("paused after %d of %d dials; %d requests handed back while paused; resumed: %s",
		sumOf(paused), len(c.list), c.deliveries(t)-start, sum.Line())
}

// TestCancelEndsWaitingContactsCancelled cancels a campaign with one contact
// whose re-queue is stored as a schedule on CALLS (busy, next attempt in an
// hour) and the others' requests queued: every one of them ends cancelled,
// exactly once, and none is rung.
func TestCancelEndsWaitingContactsCancelled(t *testing.T) {
	c := newCampaign(t, "cancelling", 5, callScenario(phone(1)), 0, 1, 2)
	set := dispatcher.Settings{NoAnswerRetryDelay: time.Hour}

	// c1 first, alone: it is busy, and its next attempt is stored.
	first := c.list
	c.list = first[:1]
	ctx1, stop1 := context.WithCancel(context.Background())
	cctx, stopCallers := context.WithCancel(context.Background())
	callersDone := startCaller(t, cctx, c.srv, c.cfg, "caller-a")
	out := c.run(ctx1, set)
	kv, err := c.conn.KeyValue(context.Background(), dispatcher.DefaultStateBucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "c1's re-queue stored", func() bool {
		e, err := kv.Get(context.Background(), dispatcher.Key(c.name, "c1"))
		if err != nil {
			return false
		}
		return string(e.Value()) != "" && containsAll(string(e.Value()), `"scheduled_at"`, `"published_at"`, `"attempt":2`)
	})
	stop1()
	<-out
	stopCallers()
	<-callersDone

	// The others queued with no caller running.
	c.list = first
	pctx, stopPublish := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopPublish()
	d, err := dispatcher.New(pctx, c.conn, dispatcher.Settings{Campaign: c.name, CallingWindow: "00:00-24:00", NoAnswerRetryDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Publish(pctx, c.list); err != nil {
		t.Fatal(err)
	}

	c.set(control.Cancelled)
	if _, err := c.ctl.SetState(context.Background(), c.name, "test", time.Now(), control.Running); !errors.Is(err, control.ErrFinal) {
		t.Fatalf("resume after cancel: %v, want ErrFinal", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cctx2, stopCallers2 := context.WithCancel(context.Background())
	defer stopCallers2()
	startCaller(t, cctx2, c.srv, c.cfg, "caller-b")
	startCaller(t, cctx2, c.srv, c.cfg, "caller-c")
	sum := summaryOf(t, c.run(ctx, set), 30*time.Second)
	if !sum.Finished || sum.Cancelled != len(c.list) {
		t.Fatalf("after cancel: finished %v, %d cancelled of %d; statuses %v", sum.Finished, sum.Cancelled, len(c.list), statuses(sum))
	}
	dials := c.dials()
	if dials["c1"] != 1 {
		t.Errorf("c1 dialled %d times, want once (its busy first attempt)", dials["c1"])
	}
	for _, id := range []string{"c2", "c3", "c4", "c5"} {
		if dials[id] != 0 {
			t.Errorf("%s rung after the cancel", id)
		}
		callID := dispatcher.CallID(c.name, id, 1)
		evs := c.rec.terminals()[callID]
		if len(evs) != 1 || evs[0].Outcome != events.CallCancelled {
			t.Errorf("%s: terminal events %v, want one cancelled", callID, outcomes(evs))
		}
	}
	for _, ct := range sum.Contacts {
		if ct.LastReason == "" {
			t.Errorf("%s: cancelled without a reason", ct.ContactID)
		}
	}
	t.Logf("cancel: %d of %d contacts cancelled (1 stored re-queue, 4 queued); dials %v", sum.Cancelled, len(c.list), dials)
}

// TestDoNotCallAddedMidCampaign puts a number on the do-not-call list while
// its request waits on the queue: it is never rung, its contact ends
// suppressed, and the others complete.
func TestDoNotCallAddedMidCampaign(t *testing.T) {
	c := newCampaign(t, "dnc", 4, callScenario(), 1, 1, 1)
	list, err := dnc.Open(context.Background(), c.conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := c.run(ctx, dispatcher.Settings{})
	// One call at a time, each ringing a second: c3's request is queued
	// (published with all the others) when its number is listed.
	waitFor(t, 20*time.Second, "c1 dialled", func() bool { return c.dials()["c1"] > 0 })
	if _, err := list.Add(ctx, phone(3), "asked not to be called", "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	sum := summaryOf(t, out, 40*time.Second)
	got := statuses(sum)
	want := map[string]dispatcher.Status{"c1": dispatcher.StatusCompleted, "c2": dispatcher.StatusCompleted,
		"c3": dispatcher.StatusSuppressed, "c4": dispatcher.StatusCompleted}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if n := c.dials()["c3"]; n != 0 {
		t.Fatalf("c3 rung %d times after its number was listed", n)
	}
	evs := c.rec.terminals()[dispatcher.CallID(c.name, "c3", 1)]
	if len(evs) != 1 || evs[0].Outcome != events.CallSuppressed || evs[0].Reason != "do_not_call" {
		t.Fatalf("c3's terminal events: %v", outcomes(evs))
	}
	if evs[0].Contact == phone(3) {
		t.Fatal("the suppressed event carries the full number")
	}
	entries, err := list.Entries(ctx)
	if err != nil || len(entries) != 1 || entries[0].Contact != events.MaskPhone(phone(3)) || entries[0].Key == phone(3) {
		t.Fatalf("list entries %+v %v: want one, masked, keyed by hash", entries, err)
	}
	t.Logf("dnc: %s; c3 %s", sum.Line(), got["c3"])
}

// TestPacingBounds paces a campaign served by three callers running three
// calls each: the telephony calls in progress at once never exceed
// max_concurrent_calls, nor the dials started in any second (sliding) twice
// max_calls_per_second (the window is a fixed wall-clock second).
func TestPacingBounds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rate, conc int
	}{
		{"concurrency", 0, 2},
		{"rate", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCampaign(t, "paced-"+tc.name, 6, "name: paced\nservices:\n  telephony:\n    call_duration: 500ms\n", 3, 3, 9)
			if _, err := c.ctl.Update(context.Background(), c.name, "test", time.Now(), func(ctl *control.Control) error {
				ctl.MaxCallsPerSecond, ctl.MaxConcurrentCalls = tc.rate, tc.conc
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sum := summaryOf(t, c.run(ctx, dispatcher.Settings{}), 50*time.Second)
			if sum.Succeeded != len(c.list) {
				t.Fatalf("%s; %v", sum.Line(), statuses(sum))
			}
			spans := telephonySpans(c.rec)
			if len(spans) != len(c.list) {
				t.Fatalf("%d telephony attempts, want %d", len(spans), len(c.list))
			}
			peak, perSecond := overlap(spans), startsWithin(spans, time.Second)
			t.Logf("pacing rate=%d conc=%d: peak concurrent calls %d, peak dials within 1s %d, first to last dial %s",
				tc.rate, tc.conc, peak, perSecond, spans[len(spans)-1][0].Sub(spans[0][0]).Round(time.Millisecond))
			if tc.conc > 0 && peak > tc.conc {
				t.Errorf("%d calls at once, max_concurrent_calls %d", peak, tc.conc)
			}
			if tc.rate > 0 {
				if perSecond > 2*tc.rate {
					t.Errorf("%d dials within a second, max_calls_per_second %d", perSecond, tc.rate)
				}
				// 6 dials at 2 a second need three distinct seconds.
				if d := spans[len(spans)-1][0].Sub(spans[0][0]); d < time.Second {
					t.Errorf("6 dials within %s at max_calls_per_second %d", d, tc.rate)
				}
			}
		})
	}
}

// telephonySpans are the telephony attempts' [start, end], sorted by start:
// each attempt event says when it ended and how long it took.
func telephonySpans(r *recorder) [][2]time.Time {
	var out [][2]time.Time
	for _, ev := range r.snapshot() {
		if a, ok := ev.(*events.Attempt); ok && a.Service == config.ServiceTelephony {
			end := a.Time
			out = append(out, [2]time.Time{end.Add(-time.Duration(a.LatencyMs) * time.Millisecond), end})
		}
	}
	slices.SortFunc(out, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	return out
}

func overlap(spans [][2]time.Time) int {
	peak := 0
	for _, s := range spans {
		n := 0
		for _, o := range spans {
			if !o[0].After(s[0]) && o[1].After(s[0]) {
				n++
			}
		}
		peak = max(peak, n)
	}
	return peak
}

func startsWithin(spans [][2]time.Time, w time.Duration) int {
	peak := 0
	for i := range spans {
		n := 0
		for j := i; j < len(spans) && spans[j][0].Sub(spans[i][0]) < w; j++ {
			n++
		}
		peak = max(peak, n)
	}
	return peak
}

func outcomes(evs []*events.Call) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Outcome+"/"+e.Reason)
	}
	return out
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// sibling is another campaign on the same server, callers and simulator,
// with its own contacts (numbers after first's).
func (c *campaign) sibling(name string, n, offset int) *campaign {
	s := *c
	s.name, s.list = name, nil
	for i := 1; i <= n; i++ {
		s.list = append(s.list, contacts.Contact{Line: i + 1, ID: fmt.Sprintf("c%d", i), Phone: phone(offset + i), Name: fmt.Sprintf("Contact %d", i), Timezone: "UTC"})
	}
	return &s
}

// TestPausedCampaignDoesNotHoldOthers pauses a campaign with more queued
// requests than the callers' window (caller.fleet_max_in_flight): a second
// campaign on the same queue still completes while the first is paused
// (its requests parked as schedules), and once the first resumes it
// completes too, or once cancelled every parked contact ends cancelled:
// every contact ends once, and is rung once, or never when cancelled.
func TestPausedCampaignDoesNotHoldOthers(t *testing.T) {
	for _, then := range []control.State{control.Running, control.Cancelled} {
		t.Run(string(then), func(t *testing.T) { pausedBesideAnother(t, then) })
	}
}

func pausedBesideAnother(t *testing.T, then control.State) {
	const inFlight = 2
	a := newCampaign(t, "held", 6, callScenario(), 0, 2, inFlight)
	b := a.sibling("other", 3, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	calls, err := a.conn.Stream(ctx, events.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	queued := func(c *campaign) int {
		n := 0
		for _, s := range []string{events.DispatchSubject(c.name), dispatcher.RequeueFilter(c.name)} {
			info, err := calls.Info(ctx, jetstream.WithSubjectFilter(s))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range info.State.Subjects {
				n += int(m)
			}
		}
		return n
	}

	// The paused campaign's requests are all on the queue, ahead of the
	// other's, before any caller runs.
	outA := a.run(ctx, dispatcher.Settings{})
	waitFor(t, 20*time.Second, "the first campaign's requests out", func() bool { return queued(a) == len(a.list) })
	a.set(control.Paused)
	outB := b.run(ctx, dispatcher.Settings{})
	waitFor(t, 20*time.Second, "the other campaign's requests out", func() bool { return queued(b) == len(b.list) })
	if len(a.list) <= inFlight {
		t.Fatal("the paused campaign must queue more requests than the callers' window")
	}
	cctx, ccancel := context.WithCancel(context.Background())
	for i := range 2 {
		startCaller(t, cctx, a.srv, a.cfg, fmt.Sprintf("caller-%d", i+1))
	}
	t.Cleanup(ccancel)

	sumB := summaryOf(t, outB, 40*time.Second)
	if sumB.Succeeded != len(b.list) {
		t.Fatalf("other campaign while the first was paused: %s; statuses %v", sumB.Line(), statuses(sumB))
	}
	if got := sumOf(a.dials()); got != 0 {
		t.Fatalf("the paused campaign dialled %d contacts", got)
	}
	held := a.deliveries(t)

	a.set(then)
	sumA := summaryOf(t, outA, 40*time.Second)
	rung := 1
	if then == control.Cancelled {
		rung = 0
		for id, st := range statuses(sumA) {
			if st != dispatcher.StatusCancelled {
				t.Errorf("%s ended %s after the cancel", id, st)
			}
		}
	} else if sumA.Succeeded != len(a.list) {
		t.Fatalf("after resume: %s; statuses %v", sumA.Line(), statuses(sumA))
	}
	for _, c := range []*campaign{a, b} {
		for id, n := range c.dials() {
			if want := map[*campaign]int{a: rung, b: 1}[c]; n != want {
				t.Errorf("%s/%s dialled %d times, want %d", c.name, id, n, want)
			}
		}
		for _, ct := range c.list {
			if n := c.ended()[dispatcher.CallID(c.name, ct.ID, 1)]; n != 1 {
				t.Errorf("%s/%s has %d terminal events", c.name, ct.ID, n)
			}
		}
	}
	t.Logf("other campaign while paused: %s; deliveries by then %d; after %s: %s",
		sumB.Line(), held, then, sumA.Line())
}
