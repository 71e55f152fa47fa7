package llm

import (
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

// simClient is a client of the simulator with a short timeout, so that slow
// and stalled answers time out quickly.
func simClient(t *testing.T, sim *simulator.Server, key string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: sim.URL() + "/llm", APIKey: key, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkSim checks one call: w nil wants a script, else that error.
func checkSim(t *testing.T, script string, err error, w *want) {
	t.Helper()
	if w == nil {
		if err != nil || script == "" {
			t.Fatalf("Script = %q, %v; want a script", script, err)
		}
		return
	}
	providertest.Check(t, config.ServiceLLM, err, *w)
}

var (
	transient    = providertest.Transient
	permanent    = providertest.Permanent
	networkCodes = providertest.NetworkCodes()
)

func TestSimulatorFaults(t *testing.T) {
	sevenSeconds := &want{Category: resilience.Transient, Status: 429, Codes: []string{"rate_limit_exceeded"},
		RetryAfter: 6 * time.Second, RetryAfterMax: 7 * time.Second}
	tests := []struct {
		name   string
		faults string
		// calls are the expected results of consecutive calls.
		calls []*want
	}{
		{"status 503 twice then recovery", `{kind: status, status: 503, count: 2}`,
			[]*want{transient(503, "service_unavailable"), transient(503, "service_unavailable"), nil}},
		{"429 Retry-After seconds", `{kind: status, status: 429, retry_after: "7", count: 1}`, []*want{sevenSeconds, nil}},
		{"429 Retry-After date", `{kind: status, status: 429, retry_after: "date+7s", count: 1}`, []*want{sevenSeconds, nil}},
		{"429 slow_down", `{kind: status, status: 429, code: slow_down, count: 1}`, []*want{transient(429, "slow_down"), nil}},
		{"429 insufficient_quota", `{kind: status, status: 429, code: insufficient_quota}`,
			[]*want{{Category: resilience.Permanent, Status: 429, Codes: []string{CodeInsufficientQuota}, Msg: "billing"}}},
		{"x-should-retry false", `{kind: status, status: 503, headers: {x-should-retry: "false"}}`,
			[]*want{permanent(503, "service_unavailable")}},
		{"529 overloaded", `{kind: status, status: 529, count: 1}`, []*want{transient(529, "overloaded_error"), nil}},
		{"408", `{kind: status, status: 408, count: 1}`, []*want{transient(408, "timeout"), nil}},
		{"409", `{kind: status, status: 409, count: 1}`, []*want{transient(409, "conflict"), nil}},
		{"400", `{kind: status, status: 400}`, []*want{permanent(400, "invalid_request")}},
		{"403", `{kind: status, status: 403}`, []*want{permanent(403, "unsupported_country_region_territory")}},
		{"404", `{kind: status, status: 404}`, []*want{permanent(404, "model_not_found")}},
		{"slow past the timeout", `{kind: slow, delay: 2s, count: 1}`, []*want{transient(0, resilience.CodeTimeout), nil}},
		{"stall mid body", `{kind: stall, delay: 2s, count: 1}`, []*want{transient(0, resilience.CodeTimeout), nil}},
		{"refuse", `{kind: refuse, count: 1}`, []*want{transient(0, networkCodes...), nil}},
		{"reset mid body", `{kind: reset, count: 1}`, []*want{transient(0, networkCodes...), nil}},
		{"malformed json", `{kind: malformed, count: 1}`, []*want{transient(200, CodeMalformed), nil}},
		{"truncated json", `{kind: truncated, count: 1}`, []*want{transient(200, CodeMalformed), nil}},
		{"html 502", `{kind: html502, count: 1}`,
			[]*want{{Category: resilience.Transient, Status: 502, Codes: []string{""}, Msg: "text/html answer"}, nil}},
		{"empty body", `{kind: empty_body, count: 1}`, []*want{transient(200, CodeMalformed), nil}},
		{"burst", `{kind: burst, limit: 2, window: 1m}`,
			[]*want{nil, nil, {Category: resilience.Transient, Status: 429, Codes: []string{"rate_limit_exceeded"},
				RetryAfter: 59 * time.Second, RetryAfterMax: 60 * time.Second}}},
		{"flap", `{kind: flap, every: 2}`, []*want{transient(503, "service_unavailable"), nil, transient(503, "service_unavailable"), nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := providertest.StartSim(t, "services: {llm: {faults: ["+tt.faults+"]}}")
			c := simClient(t, sim, testKey)
			for i, w := range tt.calls {
				script, err := c.Script(t.Context(), ScriptRequest{CallID: "call-1", ContactName: "Ada Lovelace"})
				t.Logf("call %d: %v", i+1, err)
				checkSim(t, script, err, w)
			}
		})
	}
}

func TestSimulatorScript(t *testing.T) {
	sim := providertest.StartSim(t, "")
	script, err := simClient(t, sim, testKey).Script(t.Context(), ScriptRequest{CallID: "call-1", ContactName: "Ada Lovelace", Campaign: "spring"})
	if err != nil {
		t.Fatal(err)
	}
	// The simulated model greets the contact it finds in the prompt.
	if !strings.HasPrefix(script, "Hi Ada,") {
		t.Errorf("script = %q, want it to greet Ada", script)
	}
	if n := sim.SideEffects(config.ServiceLLM, "call-1"); n != 1 {
		t.Errorf("side effects = %d, want 1", n)
	}
}

// A lost response: the completion was made (and paid for) but the client
// saw the connection close. Transient; a retry makes a second completion,
// which for a script is harmless.
func TestSimulatorLostResponse(t *testing.T) {
	sim := providertest.StartSim(t, "services: {llm: {faults: [{kind: lost_response, count: 1}]}}")
	c := simClient(t, sim, testKey)
	script, err := c.Script(t.Context(), ScriptRequest{CallID: "call-1", ContactName: "Ada"})
	checkSim(t, script, err, transient(0, resilience.CodeEOF))
	if n := sim.SideEffects(config.ServiceLLM, "call-1"); n != 1 {
		t.Errorf("side effects = %d, want 1: the work was done", n)
	}
}

func TestSimulatorKeyRotation(t *testing.T) {
	sim := providertest.StartSim(t, "services: {llm: {api_key: new-key-0123456789}}")
	script, err := simClient(t, sim, testKey).Script(t.Context(), ScriptRequest{CallID: "call-1"})
	checkSim(t, script, err, &want{Category: resilience.Permanent, Status: 401, Codes: []string{"invalid_api_key"}, Msg: "authentication failed"})
	if err := simClient(t, sim, "new-key-0123456789").Health(t.Context()); err != nil {
		t.Errorf("Health with the new key: %v", err)
	}
}

// Shallow health: a fault on the data endpoint leaves the models list
// answering; a fault on all endpoints fails Health too.
func TestSimulatorHealth(t *testing.T) {
	sim := providertest.StartSim(t, "services: {llm: {faults: [{kind: status, status: 503}]}}")
	if err := simClient(t, sim, testKey).Health(t.Context()); err != nil {
		t.Errorf("Health with a data-only fault: %v", err)
	}
	sim = providertest.StartSim(t, "services: {llm: {faults: [{kind: status, status: 503, endpoint: all}]}}")
	err := simClient(t, sim, testKey).Health(t.Context())
	checkSim(t, "", err, transient(503, "service_unavailable"))
}
