package telephony

import (
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

// A lost response on create: the call was placed, the client cannot know
// its sid. Transient, as every network failure; note that a retry places a
// second call (Twilio has no idempotency key), which the caller's retry
// policy for telephony has to weigh.
func TestSimulatorLostResponse(t *testing.T) {
	sim := providertest.StartSim(t, `services: {telephony: {faults: [{kind: lost_response, count: 1}]}}`)
	c := simClient(t, sim, testKey)
	_, err := c.Place(t.Context(), "call-1", to)
	checkSim(t, err, want{Category: resilience.Transient, Codes: []string{resilience.CodeEOF}})
	if n := sim.SideEffects(config.ServiceTelephony, "call-1"); n != 1 {
		t.Errorf("side effects = %d, want the call placed once", n)
	}
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
	placed, err := first.Dial(t.Context(), "call-takeover", to)
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
