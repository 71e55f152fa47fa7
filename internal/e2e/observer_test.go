//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/rules"
)

// TestObserverKilledAndRestarted kills the real observer with SIGKILL while
// it works through an event stream that fires several alerts, then starts it
// again. The restarted observer picks up from its saved state and the
// stream: ALERTS holds every alert exactly once, the webhook plugin (a real
// plugin binary) delivered every alert to the simulator's receiver, and each
// has exactly one delivery receipt.
func TestObserverKilledAndRestarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "name: receivers\n")
	s := e.settings()
	s.set("sinks", []any{map[string]any{
		"name": "webhook", "plugin": "webhook", "kind": "alert", "min_severity": "info",
		"batch_size": 10, "batch_wait": "100ms", "backoff": "200ms", "max_backoff": "1s", "timeout": "5s",
		"config": map[string]any{"url": e.sim.URL() + "/webhook/alerts"},
	}})
	cfg := e.write("observer", s)
	obs := e.startObserver(cfg, "observer-1")
	e.waitConsumer(events.StreamEvents, "observer")
	e.waitConsumer(events.StreamAlerts, "sink-webhook")

	// The expected alerts are what the rules derive from the same events:
	// the engine is deterministic, on event time, and so is every alert id.
	engine := rules.New(config.Rules{GroupWait: 0})
	expected := map[string]*events.Alert{} // by id
	var mu sync.Mutex
	publish := func(evs []events.Event) error {
		for _, ev := range evs {
			ctx, cancel := timeout(5 * time.Second)
			err := e.admin.Emit(ctx, ev)
			cancel()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, out := range engine.Apply(ev) {
				if out.Alert != nil {
					expected[out.Alert.ID] = out.Alert
				}
			}
			mu.Unlock()
		}
		return nil
	}
	fill := func(n int) []events.Event {
		out := make([]events.Event, n)
		for i := range out {
			out[i] = attempt(config.ServiceTelephony, fmt.Sprintf("fill-%d", i), events.OutcomeSuccess, "", 0)
		}
		return out
	}
	var first []events.Event
	first = append(first, attempt(config.ServiceLLM, "obs-1", events.OutcomeFailure, events.CategoryPermanent, 401))
	first = append(first, fill(300)...)
	first = append(first, attempt(config.ServiceCRM, "obs-2", events.OutcomeFailure, events.CategoryPermanent, 403))
	first = append(first, fill(300)...)
	first = append(first, breaker(config.ServiceElevenLabs, events.BreakerClosed, events.BreakerOpen))
	first = append(first, fill(300)...)
	second := []events.Event{
		breaker(config.ServiceElevenLabs, events.BreakerOpen, events.BreakerClosed),
		attempt(config.ServiceLLM, "obs-3", events.OutcomeSuccess, "", 0),
		attempt(config.ServiceTelephony, "obs-4", events.OutcomeFailure, events.CategoryPermanent, 400),
	}

	alerts := e.subscribe(events.AlertAll)
	published := make(chan error, 1)
	go func() { published <- publish(first) }()
	select {
	case <-alerts:
	case <-time.After(20 * time.Second):
		t.Fatal("no alert from the observer")
	}
	obs.kill9(t)
	killedAt := len(e.read(events.StreamAlerts, events.AlertAll))
	inFlight := e.consumerInfo(events.StreamAlerts, "sink-webhook").NumAckPending
	orphans := e.group(obs)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if err := publish(second); err != nil {
		t.Fatal(err)
	}
	t.Logf("observer killed with %d alerts on ALERTS and %d sink records in flight; %d events published meanwhile",
		killedAt, inFlight, len(first)+len(second))

	// The plugin the observer started lost its host. It must not linger.
	if len(orphans) > 0 {
		waitFor(t, 10*time.Second, fmt.Sprintf("the orphaned plugin %v to exit", orphans), func() bool { return len(e.group(obs)) == 0 })
	}

	e.startObserver(cfg, "observer-2")
	want := len(expected)
	// A sink batch in hand when the observer died comes back after the
	// sink consumer's ack wait (30s): allow for it.
	waitFor(t, 60*time.Second, fmt.Sprintf("%d delivery receipts", want), func() bool {
		return len(e.deliveries()) >= want
	})
	waitFor(t, 10*time.Second, "the webhook sink settled", func() bool { return e.settled(events.StreamAlerts, "sink-webhook") })

	// ALERTS: each expected alert exactly once, nothing else.
	got := map[string]int{}
	byKey := map[string]int{}
	for _, m := range e.read(events.StreamAlerts, events.AlertAll) {
		a, err := events.DecodeAs[*events.Alert](m.Data)
		if err != nil {
			t.Fatalf("undecodable alert at %d: %v", m.Seq, err)
		}
		got[a.ID]++
		byKey[a.Fingerprint+"/"+a.Status]++
		if expected[a.ID] == nil {
			t.Errorf("unexpected alert %s %s %s %s", a.Rule, a.Service, a.Status, a.ID)
		}
	}
	for id, a := range expected {
		if got[id] != 1 {
			t.Errorf("alert %s %s %s (%s) is %d times on ALERTS, want once", a.Rule, a.Service, a.Status, id, got[id])
		}
	}
	for key, n := range byKey {
		if n != 1 {
			t.Errorf("fingerprint/status %s is %d times on ALERTS", key, n)
		}
	}
	// Receipts: exactly one per alert, no dead letter.
	for ref, d := range e.deliveries() {
		if len(d) != 1 || d[0].Outcome != events.DeliveryDelivered || expected[ref] == nil {
			t.Errorf("deliveries of %s: %+v, want one receipt of an expected alert", ref, d)
		}
	}
	// The receiver: every alert at least once; a repeat only if the kill
	// caught a batch in flight.
	received := e.webhookAlerts()
	var repeated []string
	for id, a := range expected {
		switch n := received[id]; {
		case n == 0:
			t.Errorf("alert %s %s %s never reached the webhook", a.Rule, a.Service, a.Status)
		case n > 1:
			repeated = append(repeated, fmt.Sprintf("%s/%s x%d", a.Rule, a.Status, n))
		}
	}
	sort.Strings(repeated)
	t.Logf("%d alerts expected and on ALERTS once each; webhook deliveries repeated: %v", want, repeated)
	if len(repeated) > 0 && inFlight == 0 {
		t.Errorf("webhook got repeats %v although no sink record was in flight at the kill", repeated)
	}
	var rulesSeen []string
	for _, a := range expected {
		rulesSeen = append(rulesSeen, a.Rule+"/"+a.Status)
	}
	sort.Strings(rulesSeen)
	if got := strings.Join(rulesSeen, " "); !strings.Contains(got, "breaker_open/resolved") || strings.Count(got, "permanent_failure/firing") != 3 {
		t.Errorf("expected alerts %s: want three permanent failures and a breaker opened and closed", got)
	}
}

func attempt(service, callID, outcome, category string, status int) *events.Attempt {
	return &events.Attempt{
		CallRef: events.CallRef{CallID: callID, Campaign: "obs", ContactID: callID, Contact: "+1415****100"},
		Service: service, Attempt: 1, MaxAttempts: 4, Outcome: outcome, ErrorCategory: category,
		StatusCode: status, LatencyMs: 12, BreakerState: events.BreakerClosed,
	}
}

func breaker(service, from, to string) *events.Breaker {
	return &events.Breaker{Service: service, From: from, To: to, BreakerState: to, Reason: "consecutive_failures", Failures: 5}
}

// deliveries reads the webhook sink's receipts and dead letters by ref id.
func (e *env) deliveries() map[string][]*events.Delivery {
	out := map[string][]*events.Delivery{}
	for _, m := range e.read(events.StreamAlerts, events.DeliverySubject("webhook")) {
		if d, err := events.DecodeAs[*events.Delivery](m.Data); err == nil {
			out[d.RefID] = append(out[d.RefID], d)
		}
	}
	return out
}

// webhookAlerts counts, by alert id, the alerts the simulator's webhook
// receiver was sent (the agent format: {"version", "events": [...]}).
func (e *env) webhookAlerts() map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for _, r := range e.sim.Received("webhook") {
		if r.Status != 200 {
			continue
		}
		var body struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
			e.t.Fatalf("webhook body: %v: %s", err, r.Body)
		}
		for _, raw := range body.Events {
			if a, err := events.DecodeAs[*events.Alert](raw); err == nil {
				out[a.ID]++
			}
		}
	}
	return out
}
