package telephony

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

// simClient polls every millisecond on the real clock: the simulator's
// calls end after a number of polls, not after a time.
func simClient(t *testing.T, sim *simulator.Server, key string) *Client {
	t.Helper()
	cfg := testConfig(sim.URL() + "/telephony")
	cfg.APIKey, cfg.Timeout = key, 300*time.Millisecond
	// The simulator, like Twilio, requests an answered call's TwiML: its
	// own static one.
	cfg.Options["twiml_url"] = sim.URL() + "/telephony/twiml"
	c, err := New(cfg, WithPollInterval(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkSim checks the error, which must not show the full number either.
func checkSim(t *testing.T, err error, w want) {
	t.Helper()
	providertest.Check(t, config.ServiceTelephony, err, w, strings.TrimPrefix(to, "+"))
}

func TestSimulatorOutcomes(t *testing.T) {
	sim := providertest.StartSim(t, `services: {telephony: {rings: 2, call_duration: 42s, outcomes: {
		"+14155550001": busy, "+14155550002": no-answer, "+14155550003": failed, "+14155550004": canceled}}}`)
	c := simClient(t, sim, testKey)
	tests := []struct {
		to       string
		status   string
		duration time.Duration
	}{
		{to, StatusCompleted, 42 * time.Second},
		{"+14155550001", StatusBusy, 0},
		{"+14155550002", StatusNoAnswer, 0},
		{"+14155550003", StatusFailed, 0},
		{"+14155550004", StatusCanceled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.status, func(t *testing.T) {
			callID := "call-" + tt.status
			call, err := c.Place(t.Context(), callID, tt.to)
			if err != nil {
				t.Fatalf("Place: %v (a %s call is an outcome, not an error)", err, tt.status)
			}
			if !strings.HasPrefix(call.SID, "CA") || call.Status != tt.status || call.Duration != tt.duration {
				t.Errorf("Place = %+v, want status %s, duration %s", call, tt.status, tt.duration)
			}
			if n := sim.SideEffects(config.ServiceTelephony, callID); n != 1 {
				t.Errorf("side effects = %d, want one call placed", n)
			}
		})
	}
}

func TestSimulatorFaults(t *testing.T) {
	networkCodes := providertest.NetworkCodes()
	tests := []struct {
		name   string
		faults string
		want   want
	}{
		{"20429", `{kind: status, status: 429, code: "20429", count: 1}`, want{Category: resilience.Transient, Status: 429, Codes: []string{"20429"}}},
		{"21211", `{kind: status, status: 400, code: "21211", count: 1}`, want{Category: resilience.Permanent, Status: 400, Codes: []string{"21211"}, Msg: "invalid phone number"}},
		{"13224", `{kind: status, status: 400, code: "13224", count: 1}`, want{Category: resilience.Permanent, Status: 400, Codes: []string{"13224"}, Msg: "invalid phone number"}},
		{"21210", `{kind: status, status: 400, code: "21210", count: 1}`, want{Category: resilience.Permanent, Status: 400, Codes: []string{"21210"}, Msg: "not verified"}},
		{"401", `{kind: status, status: 401, count: 1}`, want{Category: resilience.Permanent, Status: 401, Codes: []string{"20003"}, Msg: "authentication failed"}},
		{"503", `{kind: status, status: 503, count: 1}`, want{Category: resilience.Transient, Status: 503, Codes: []string{"20503"}}},
		{"500", `{kind: status, status: 500, count: 1}`, want{Category: resilience.Transient, Status: 500, Codes: []string{"20500"}}},
		{"slow", `{kind: slow, delay: 2s, count: 1}`, want{Category: resilience.Transient, Codes: []string{resilience.CodeTimeout}}},
		{"stall", `{kind: stall, delay: 2s, count: 1}`, want{Category: resilience.Transient, Codes: []string{resilience.CodeTimeout}}},
		{"refuse", `{kind: refuse, count: 1}`, want{Category: resilience.Transient, Codes: networkCodes}},
		{"reset", `{kind: reset, count: 1}`, want{Category: resilience.Transient, Codes: networkCodes}},
		{"malformed", `{kind: malformed, count: 1}`, want{Category: resilience.Transient, Status: 201, Codes: []string{CodeMalformed}}},
		{"truncated", `{kind: truncated, count: 1}`, want{Category: resilience.Transient, Status: 201, Codes: []string{CodeMalformed}}},
		{"html 502", `{kind: html502, count: 1}`, want{Category: resilience.Transient, Status: 502, Codes: []string{""}, Msg: "text/html"}},
		{"empty body", `{kind: empty_body, count: 1}`, want{Category: resilience.Transient, Status: 201, Codes: []string{CodeMalformed}}},
		{"burst", `{kind: burst, limit: 1, window: 1m, code: "20429"}`, want{Category: resilience.Transient, Status: 429, Codes: []string{"20429"}}},
		{"flap", `{kind: flap, every: 2}`, want{Category: resilience.Transient, Status: 503, Codes: []string{"20503"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The faults hit the call's creation only (POST), not its polls.
			faults := strings.Replace(tt.faults, "{kind", `{match: "POST ", kind`, 1)
			sim := providertest.StartSim(t, "services: {telephony: {faults: ["+faults+"]}}")
			c := simClient(t, sim, testKey)
			if tt.name == "burst" {
				if _, err := c.Place(t.Context(), "call-0", to); err != nil {
					t.Fatalf("first Place within the burst limit: %v", err)
				}
			}
			call, err := c.Place(t.Context(), "call-1", to)
			t.Logf("Place = %+v, %v", call, err)
			checkSim(t, err, tt.want)
		})
	}
}

// The simulator's own checks: a number that is not E.164 is 21211.
func TestSimulatorInvalidNumber(t *testing.T) {
	sim := providertest.StartSim(t, "")
	_, err := simClient(t, sim, testKey).Place(t.Context(), "call-1", "555-0100")
	checkSim(t, err, want{Category: resilience.Permanent, Status: 400, Codes: []string{"21211"}, Msg: "invalid phone number"})
}

// A status poll that fails leaves the call placed; the retried Place follows
// it to its end without placing another.
func TestSimulatorPollFailureResumes(t *testing.T) {
	sim := providertest.StartSim(t, `services: {telephony: {rings: 3, faults: [{match: "GET ", kind: status, status: 503, count: 1}]}}`)
	c := simClient(t, sim, testKey)
	call, err := c.Place(t.Context(), "call-1", to)
	checkSim(t, err, want{Category: resilience.Transient, Status: 503, Codes: []string{"20503"}})
	if call.SID == "" {
		t.Fatal("Place with a failed poll returned no sid")
	}
	again, err := c.Place(t.Context(), "call-1", to)
	if err != nil {
		t.Fatal(err)
	}
	if again.SID != call.SID || again.Status != StatusCompleted {
		t.Errorf("retried Place = %+v, want %s completed", again, call.SID)
	}
	if n := sim.SideEffects(config.ServiceTelephony, "call-1"); n != 1 {
		t.Errorf("side effects = %d, want one call placed", n)
	}
}

// simCalls lists, the way an operator would, the sids of the calls the
// simulator holds to number, newest first.
func simCalls(t *testing.T, sim *simulator.Server, number string) []string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		sim.URL()+"/telephony/2010-04-01/Accounts/"+testSID+"/Calls.json?To="+url.QueryEscape(number), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(testSID, testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page callPage
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list calls: %d %v", resp.StatusCode, err)
	}
	var sids []string
	for _, c := range page.Calls {
		sids = append(sids, c.SID)
	}
	return sids
}

// waitSideEffects polls until the simulator counts n calls placed for callID.
func waitSideEffects(t *testing.T, sim *simulator.Server, callID string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sim.SideEffects(config.ServiceTelephony, callID) != n {
		if time.Now().After(deadline) {
			t.Fatalf("side effects for %s = %d, want %d", callID, sim.SideEffects(config.ServiceTelephony, callID), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A create whose answer is lost after the provider placed the call: the
// error is transient like any, and the retried Dial adopts the call placed
// instead of ringing the contact a second time (Twilio has no idempotency
// key). A create that failed with nothing placed is simply placed again.
func TestSimulatorAmbiguousCreate(t *testing.T) {
	networkCodes := providertest.NetworkCodes()
	tests := []struct {
		name   string
		fault  string
		want   want
		placed bool // the failed create placed the call
		unsure bool // the client cannot know whether it did
	}{
		{"lost response", `{kind: lost_response}`,
			want{Category: resilience.Transient, Codes: []string{resilience.CodeEOF}}, true, true},
		{"reset mid-body", `{kind: reset}`,
			want{Category: resilience.Transient, Codes: networkCodes}, true, true},
		{"slow past the client timeout", `{kind: slow, delay: 600ms}`,
			want{Category: resilience.Transient, Codes: []string{resilience.CodeTimeout}}, true, true},
		{"201 truncated", `{kind: truncated}`,
			want{Category: resilience.Transient, Status: 201, Codes: []string{CodeMalformed}}, true, true},
		{"201 empty", `{kind: empty_body}`,
			want{Category: resilience.Transient, Status: 201, Codes: []string{CodeMalformed}}, true, true},
		// Request sent, connection cut before any work: the look-up finds
		// nothing and the call is placed.
		{"refused after the request", `{kind: refuse}`,
			want{Category: resilience.Transient, Codes: networkCodes}, false, true},
		// The provider's word that nothing was placed: no look-up.
		{"20429", `{kind: status, status: 429, code: "20429"}`,
			want{Category: resilience.Transient, Status: 429, Codes: []string{"20429"}}, false, false},
		{"html 502", `{kind: html502}`,
			want{Category: resilience.Transient, Status: 502, Codes: []string{""}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fault := strings.Replace(tt.fault, "{kind", `{match: "POST ", count: 1, kind`, 1)
			sim := providertest.StartSim(t, "services: {telephony: {rings: 1, faults: ["+fault+"]}}")
			c := simClient(t, sim, testKey)

			_, err := c.Dial(t.Context(), "call-1", to, time.Time{})
			checkSim(t, err, tt.want)
			if _, ok := c.unsureSince("call-1"); ok != tt.unsure {
				t.Errorf("create marked unsure = %v, want %v", ok, tt.unsure)
			}
			var placed []string
			if tt.placed {
				// A slow create is placed after the client gave up.
				waitSideEffects(t, sim, "call-1", 1)
				placed = simCalls(t, sim, to)
			} else if n := sim.SideEffects(config.ServiceTelephony, "call-1"); n != 0 {
				t.Fatalf("side effects after %s = %d, want none", tt.name, n)
			}

			call, err := c.Dial(t.Context(), "call-1", to, time.Time{})
			if err != nil {
				t.Fatalf("retried Dial: %v", err)
			}
			if n := sim.SideEffects(config.ServiceTelephony, "call-1"); n != 1 {
				t.Errorf("side effects = %d, want the contact rung once", n)
			}
			if tt.placed && (len(placed) != 1 || call.SID != placed[0]) {
				t.Errorf("retried Dial = %+v, want the call placed, %v", call, placed)
			}
			if _, ok := c.unsureSince("call-1"); ok {
				t.Error("the call id is still marked unsure after its call was found")
			}
			ended, err := c.Follow(t.Context(), "call-1", call.SID, to)
			if err != nil || ended.SID != call.SID || ended.Status != StatusCompleted {
				t.Errorf("Follow = %+v, %v, want %s completed", ended, err, call.SID)
			}
		})
	}
}

// A look-up that fails fails the Dial: placing a call without knowing
// whether the lost one exists could ring the contact twice. The next Dial
// looks again.
func TestSimulatorAmbiguousCreateLookupFails(t *testing.T) {
	sim := providertest.StartSim(t, `services: {telephony: {faults: [
		{match: "POST ", kind: lost_response, count: 1},
		{match: "Calls.json?", kind: status, status: 503, count: 1}]}}`)
	c := simClient(t, sim, testKey)
	if _, err := c.Dial(t.Context(), "call-1", to, time.Time{}); err == nil {
		t.Fatal("Dial with a lost response succeeded")
	}
	_, err := c.Dial(t.Context(), "call-1", to, time.Time{})
	checkSim(t, err, want{Category: resilience.Transient, Status: 503, Codes: []string{"20503"}})
	if n := sim.SideEffects(config.ServiceTelephony, "call-1"); n != 1 {
		t.Errorf("side effects after the failed look-up = %d, want 1", n)
	}
	call, err := c.Dial(t.Context(), "call-1", to, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if placed := simCalls(t, sim, to); len(placed) != 1 || call.SID != placed[0] {
		t.Errorf("Dial = %+v, want the one call placed, %v", call, placed)
	}
}

// The look-up adopts only this call id's call: not one to another number,
// not one to the same number that another call id placed or adopted here.
func TestSimulatorAmbiguousCreateOtherCalls(t *testing.T) {
	const other = "+14155550199"
	tests := []struct {
		name   string
		fault  simulator.FaultKind
		placed bool
	}{
		{"lost response", simulator.KindLostResponse, true},
		{"nothing placed", simulator.KindRefuse, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := providertest.StartSim(t, "")
			c := simClient(t, sim, testKey)
			b, err := c.Dial(t.Context(), "call-b", other, time.Time{}) // another contact
			if err != nil {
				t.Fatal(err)
			}
			// Another call id to the same number, placed and adopted here.
			sim.SetScenario(simulator.Scenario{Name: "lost", Services: map[string]simulator.Service{config.ServiceTelephony: {
				Faults: []simulator.Fault{{Kind: simulator.KindLostResponse, Match: "call-c", Count: 1}},
			}}})
			if _, err := c.Dial(t.Context(), "call-c", to, time.Time{}); err == nil {
				t.Fatal("Dial with a lost response succeeded")
			}
			cc, err := c.Dial(t.Context(), "call-c", to, time.Time{})
			if err != nil {
				t.Fatal(err)
			}

			sim.SetScenario(simulator.Scenario{Name: "fault", Services: map[string]simulator.Service{config.ServiceTelephony: {
				Faults: []simulator.Fault{{Kind: tt.fault, Match: "POST ", Count: 1}},
			}}})
			if _, err := c.Dial(t.Context(), "call-a", to, time.Time{}); err == nil {
				t.Fatal("Dial with a fault succeeded")
			}
			call, err := c.Dial(t.Context(), "call-a", to, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if call.SID == b.SID || call.SID == cc.SID {
				t.Errorf("call-a adopted another call id's call %s (b %s, c %s)", call.SID, b.SID, cc.SID)
			}
			for id, n := range map[string]int{"call-a": 1, "call-b": 1, "call-c": 1} {
				if got := sim.SideEffects(config.ServiceTelephony, id); got != n {
					t.Errorf("side effects for %s = %d, want %d", id, got, n)
				}
			}
			if calls := simCalls(t, sim, to); len(calls) != 2 || calls[0] != call.SID {
				t.Errorf("calls to the number %v, want call-a's %s and call-c's", calls, call.SID)
			}
		})
	}
}

// Another process (a caller taking the call over) knows only when the
// first attempt began: given since, its Dial adopts the call placed since
// then, and leaves alone a call to the same number placed well before.
func TestSimulatorAmbiguousCreateElsewhere(t *testing.T) {
	t.Run("takeover adopts the call placed", func(t *testing.T) {
		sim := providertest.StartSim(t, `services: {telephony: {faults: [{match: "POST ", kind: lost_response, count: 1}]}}`)
		first, second := simClient(t, sim, testKey), simClient(t, sim, testKey)
		began := time.Now()
		if _, err := first.Dial(t.Context(), "call-1", to, time.Time{}); err == nil {
			t.Fatal("Dial with a lost response succeeded")
		}
		waitSideEffects(t, sim, "call-1", 1)
		placed := simCalls(t, sim, to)
		// first dies; second takes call-1 over with the time its first try
		// began.
		call, err := second.Dial(t.Context(), "call-1", to, began)
		if err != nil {
			t.Fatal(err)
		}
		if n := sim.SideEffects(config.ServiceTelephony, "call-1"); len(placed) != 1 || call.SID != placed[0] || n != 1 {
			t.Errorf("Dial = %+v with %d calls placed, want the call placed, %v", call, n, placed)
		}
	})
	t.Run("a call placed before the window is not adopted", func(t *testing.T) {
		sim := providertest.StartSim(t, "")
		first, second := simClient(t, sim, testKey), simClient(t, sim, testKey)
		earlier, err := first.Dial(t.Context(), "call-0", to, time.Time{}) // an earlier attempt's call
		if err != nil {
			t.Fatal(err)
		}
		// since two skews ahead: call-0's call reads as placed two minutes
		// before call-1's first attempt.
		call, err := second.Dial(t.Context(), "call-1", to, time.Now().Add(2*dialSkew))
		if err != nil {
			t.Fatal(err)
		}
		if n := sim.SideEffects(config.ServiceTelephony, "call-1"); call.SID == earlier.SID || n != 1 {
			t.Errorf("Dial = %+v with %d calls placed, want a new call, not %s", call, n, earlier.SID)
		}
	})
}

func TestSimulatorHealth(t *testing.T) {
	sim := providertest.StartSim(t, "services: {telephony: {faults: [{kind: status, status: 503}]}}")
	c := simClient(t, sim, testKey)
	if err := c.Health(t.Context()); err != nil {
		t.Errorf("Health with a data-only fault (shallow health): %v", err)
	}
	sim.SetScenario(simulator.Scenario{Name: "down", Services: map[string]simulator.Service{
		config.ServiceTelephony: {Faults: []simulator.Fault{{Kind: simulator.KindStatus, Status: 503, Endpoint: simulator.EndpointAll}}},
	}})
	checkSim(t, c.Health(t.Context()), want{Category: resilience.Transient, Status: 503, Codes: []string{"20503"}})
	sim.SetScenario(simulator.Scenario{Name: "rotated", Services: map[string]simulator.Service{
		config.ServiceTelephony: {APIKey: "new-token-0123456789"},
	}})
	checkSim(t, c.Health(t.Context()), want{Category: resilience.Permanent, Status: 401, Codes: []string{"20003"}})
}

// A call dialed by one client and followed by another, as by a caller that
// takes a request over from one that died after placing the call: the
// contact is rung once and the second client sees the call end.
func TestSimulatorDialThenFollowElsewhere(t *testing.T) {
	sim := providertest.StartSim(t, `services: {telephony: {rings: 2, call_duration: 7s}}`)
	first, second := simClient(t, sim, testKey), simClient(t, sim, testKey)
	placed, err := first.Dial(t.Context(), "call-takeover", to, time.Time{})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if !strings.HasPrefix(placed.SID, "CA") || placed.Final() {
		t.Fatalf("Dial = %+v, want a call just placed", placed)
	}
	call, err := second.Follow(t.Context(), "call-takeover", placed.SID, to)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if call.SID != placed.SID || call.Status != StatusCompleted || call.Duration != 7*time.Second {
		t.Errorf("Follow = %+v, want %s completed after 7s", call, placed.SID)
	}
	if n := sim.SideEffects(config.ServiceTelephony, "call-takeover"); n != 1 {
		t.Errorf("side effects = %d, want the contact rung once", n)
	}
}
