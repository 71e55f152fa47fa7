//go:build linux

package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/simulator"
)

// TestCallerKilledDuringBackoff kills, with SIGKILL, the caller that is
// waiting out a retry's backoff. Its request was never acknowledged, so the
// other caller takes it over after the ack wait and finishes the call: one
// terminal event, one call placed, one CRM record.
func TestCallerKilledDuringBackoff(t *testing.T) {
	t.Parallel()
	e, callers, req, first := backoffStart(t, "backoff", map[string]any{"caller.ack_wait": "3s"})
	victim := callers[first.Source]
	victim.kill9(t)
	delete(callers, first.Source)
	var survivor string
	for name := range callers {
		survivor = name
	}

	waitFor(t, 30*time.Second, "a terminal event for "+req.CallID, func() bool {
		return len(e.terminals()[req.CallID]) > 0
	})
	// Acknowledged: the work queue no longer holds the request, so nothing
	// can end the call a second time.
	waitFor(t, 10*time.Second, "the request acknowledged", func() bool { return e.streamMsgs(events.StreamCalls) == 0 })

	terms := e.terminals()[req.CallID]
	if len(terms) != 1 {
		t.Fatalf("%d terminal events for %s, want exactly 1: %+v", len(terms), req.CallID, terms)
	}
	if got := terms[0]; got.Outcome != events.CallCompleted || got.Source != survivor {
		t.Errorf("terminal event %s by %s, want completed by the survivor %s", got.Outcome, got.Source, survivor)
	}
	for _, svc := range []string{config.ServiceTelephony, config.ServiceCRM} {
		if n := e.sim.SideEffects(svc, req.CallID); n != 1 {
			t.Errorf("%s side effects for %s: %d, want exactly 1", svc, req.CallID, n)
		}
	}

	// The story of the ElevenLabs step, as EVENTS has it: the victim's
	// failed attempt and retry, then the survivor's from the start.
	var story []string
	for _, ev := range e.eventsOf(events.AttemptSubject(config.ServiceElevenLabs), events.RetrySubject(config.ServiceElevenLabs)) {
		switch x := ev.(type) {
		case *events.Attempt:
			story = append(story, fmt.Sprintf("%s:attempt%d:%s", who(x.Source, first.Source), x.Attempt, x.Outcome))
		case *events.Retry:
			story = append(story, fmt.Sprintf("%s:retry%d", who(x.Source, first.Source), x.Attempt))
		}
	}
	want := "[victim:attempt1:failure victim:retry1 survivor:attempt1:failure survivor:retry1 survivor:attempt2:success]"
	if got := fmt.Sprint(story); got != want {
		t.Errorf("elevenlabs events:\n got %s\nwant %s", got, want)
	}
	if !e.settled(events.StreamCalls, "callers") {
		t.Errorf("callers consumer not settled: %+v", e.consumerInfo(events.StreamCalls, "callers"))
	}
}

func who(source, victim string) string {
	if source == victim {
		return "victim"
	}
	return "survivor"
}

// TestCampaignWithCallersKilled runs a 30-contact campaign through the real
// dispatcher and three callers while the providers flap, and kills a caller
// with SIGKILL at a random moment twice, restarting it each time. Every
// contact still ends with exactly one terminal outcome, and no call ends
// twice or writes two CRM records.
func TestCampaignWithCallersKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
name: flapping
services:
  llm:
    faults: [{kind: flap, every: 4, status: 503}]
  elevenlabs:
    faults: [{kind: flap, every: 5, status: 503, code: system_busy}]
  telephony:
    rings: 1
    faults: [{kind: flap, every: 7, status: 503}]
  crm:
    faults: [{kind: flap, every: 3, status: 503}]
`)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random seed %d", seed)

	cfg := e.write("agent", e.settings())
	names := []string{"caller-a", "caller-b", "caller-c"}
	callers := map[string]*proc{}
	for _, n := range names {
		callers[n] = e.startCaller(cfg, n)
	}
	done := e.outcomes()
	contacts, ids := e.contactsFile(30)
	d := e.runDispatcher(cfg, contacts, "killed")

	interrupted := 0
	for i, after := range []int{4 + rng.IntN(6), 14 + rng.IntN(6)} {
		waitFor(t, 60*time.Second, fmt.Sprintf("%d outcomes", after), func() bool { return done.count() >= after })
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond) // a random point of the calls in flight
		// The caller with the most calls in flight, so that the kill
		// interrupts work; any caller if none has one.
		order := append([]string(nil), names...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		name, running := done.busiest(order)
		if name == "" {
			name = order[0]
		}
		interrupted += running
		t.Logf("kill %d: %s, running %d calls, after %d outcomes", i+1, name, running, done.count())
		callers[name].kill9(t)
		delete(callers, name)
		// Restarted under a new name, so that its events tell it from the
		// process that died.
		restarted := fmt.Sprintf("%s-r%d", name[:len("caller-a")], i+1)
		names[slices.Index(names, name)] = restarted
		callers[restarted] = e.startCaller(cfg, restarted)
	}

	sum := e.summary(d, 100*time.Second)
	byStatus := e.checkCampaign(sum, ids)
	takeovers := e.takeovers()
	t.Logf("campaign: %s; %v; %d calls taken over from a killed caller", sumLine(sum), byStatus, takeovers)
	if interrupted > 0 && takeovers == 0 {
		t.Errorf("the kills interrupted %d calls, and no call was finished by another caller", interrupted)
	}
	if !e.settled(events.StreamCalls, "callers") || e.streamMsgs(events.StreamCalls) != 0 {
		t.Errorf("CALLS not drained: %+v", e.consumerInfo(events.StreamCalls, "callers"))
	}
}

func sumLine(s *dispatcher.Summary) string {
	return fmt.Sprintf("%d/%d succeeded, %d failed, %d exhausted", s.Succeeded, s.Total, s.Failed, s.Exhausted)
}

// TestSkippedContactRequeued trips the CRM's breaker with an outage. The
// calls already placed when it opens are held (their requests handed back)
// and recorded once the CRM is back; the calls that come after are skipped
// before the contact is rung, and the real dispatcher re-queues them after
// the breaker's recovery time. Every contact completes, rung exactly once.
func TestSkippedContactRequeued(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
name: crm-down
services:
  crm:
    faults: [{kind: status, status: 503, count: 0}]
`)
	s := e.settings()
	s.set("services.crm.breaker.failure_threshold", 2)
	s.set("services.crm.breaker.recovery_timeout", "2s")
	s.set("caller.concurrency", 1)
	s.set("dispatcher.max_attempts", 5)
	cfg := e.write("agent", s)
	e.startCaller(cfg, "caller-a")
	e.startCaller(cfg, "caller-b")
	skips := e.subscribe(events.CallSubject(events.CallSkipped))
	contacts, ids := e.contactsFile(6)
	d := e.runDispatcher(cfg, contacts, "requeue")

	select {
	case ev := <-skips:
		sk := ev.(*events.Call)
		if sk.Service != config.ServiceCRM || sk.ErrorCategory != events.CategoryCircuitOpen || sk.RetryInMs <= 0 {
			t.Errorf("skipped event %+v, want crm, circuit_open, retry_in_ms > 0", sk)
		}
		if n := e.sim.SideEffects(config.ServiceTelephony, sk.CallID); n != 0 {
			t.Errorf("skipped call %s rang the contact %d times", sk.CallID, n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no contact skipped")
	}
	healthy, err := simulator.ParseScenario([]byte("name: healthy\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.sim.SetScenario(healthy)

	sum := e.summary(d, 60*time.Second)
	byStatus := e.checkCampaign(sum, ids)
	if sum.Succeeded != len(ids) {
		t.Errorf("%s, want all", sumLine(sum))
	}
	crmFailed := map[string]bool{}
	for _, ev := range e.eventsOf(events.AttemptSubject(config.ServiceCRM)) {
		if a := ev.(*events.Attempt); a.Outcome == events.OutcomeFailure {
			crmFailed[a.CallID] = true
		}
	}
	requeued, held := 0, 0
	for _, c := range sum.Contacts {
		rings := 0
		for _, a := range c.History {
			rings += e.sim.SideEffects(config.ServiceTelephony, a.CallID)
			switch {
			case a.Outcome == events.CallSkipped:
				requeued++
			case a.Outcome == events.CallCompleted && crmFailed[a.CallID]:
				held++ // placed before the outage was known, recorded after it
			}
		}
		if rings != 1 {
			t.Errorf("contact %s rung %d times over %d attempts, want once", c.ContactID, rings, len(c.History))
		}
	}
	t.Logf("campaign: %s; %v; %d calls held across the outage, %d attempts skipped and re-queued", sumLine(sum), byStatus, held, requeued)
	if requeued == 0 || held == 0 {
		t.Errorf("%d attempts skipped and re-queued, %d calls held: want both", requeued, held)
	}
}

// backoffStart starts two callers, ElevenLabs answering 503 to the first two
// requests with a 1.5 s backoff between tries, dispatches one request, and
// returns once the first retry event is seen: its source is the caller now
// waiting out the backoff. extra adds settings to the callers' configuration.
func backoffStart(t *testing.T, campaign string, extra map[string]any) (*env, map[string]*proc, *events.CallRequest, *events.Retry) {
	t.Helper()
	e := newEnv(t, `
name: tts-503-twice
services:
  elevenlabs:
    faults:
      - {kind: status, status: 503, code: system_busy, count: 2}
`)
	s := e.settings()
	s.set("services.elevenlabs.retry.initial_delay", "1500ms")
	s.set("services.elevenlabs.retry.max_delay", "3s")
	s.set("caller.concurrency", 1)
	for k, v := range extra {
		s.set(k, v)
	}
	cfg := e.write("callers", s)

	retries := e.subscribe(events.RetryAll)
	callers := map[string]*proc{
		"caller-a": e.startCaller(cfg, "caller-a"),
		"caller-b": e.startCaller(cfg, "caller-b"),
	}
	req := request(campaign, "c1", 1, "+14155550101")
	e.dispatch(req)

	var first *events.Retry
	select {
	case ev := <-retries:
		first = ev.(*events.Retry)
	case <-time.After(20 * time.Second):
		t.Fatal("no retry event")
	}
	if first.CallID != req.CallID || first.Service != config.ServiceElevenLabs || first.RetryInMs != 1500 {
		t.Fatalf("first retry %+v, want elevenlabs for %s in 1500 ms", first, req.CallID)
	}
	if callers[first.Source] == nil {
		t.Fatalf("retry published by %q, not one of the callers", first.Source)
	}
	return e, callers, req, first
}
