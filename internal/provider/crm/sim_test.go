package crm

import (
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

func simClient(t *testing.T, sim *simulator.Server, key string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: sim.URL() + "/crm", APIKey: key, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func checkSim(t *testing.T, err error, w want) {
	t.Helper()
	providertest.Check(t, config.ServiceCRM, err, w)
}

// createOnly restricts a fault to the create request: only its body names
// hs_call_direction.
const createOnly = "match: hs_call_direction, "

func TestSimulatorFaults(t *testing.T) {
	networkCodes := providertest.NetworkCodes()
	tests := []struct {
		name   string
		faults string
		want   want
	}{
		{"429 ten-secondly", `{kind: status, status: 429, count: 1}`,
			want{Category: resilience.Transient, Status: 429, Codes: []string{PolicyTenSecondly}, RetryAfter: 10 * time.Second}},
		{"429 ten-secondly with Retry-After", `{kind: status, status: 429, retry_after: "3", count: 1}`,
			want{Category: resilience.Transient, Status: 429, Codes: []string{PolicyTenSecondly}, RetryAfter: 3 * time.Second}},
		{"429 daily", `{kind: status, status: 429, policy: DAILY, count: 1}`,
			want{Category: resilience.Permanent, Status: 429, Codes: []string{PolicyDaily}, Msg: "do not retry"}},
		{"429 daily on create", `{` + createOnly + `kind: status, status: 429, policy: DAILY, count: 1}`,
			want{Category: resilience.Permanent, Status: 429, Codes: []string{PolicyDaily}, Msg: "do not retry"}},
		{"500", `{kind: status, status: 500, count: 1}`, want{Category: resilience.Transient, Status: 500, Codes: []string{"INTERNAL_ERROR"}}},
		{"503 on create", `{` + createOnly + `kind: status, status: 503, count: 1}`, want{Category: resilience.Transient, Status: 503, Codes: []string{"INTERNAL_ERROR"}}},
		{"401", `{kind: status, status: 401, count: 1}`, want{Category: resilience.Permanent, Status: 401, Codes: []string{"INVALID_AUTHENTICATION"}, Msg: "authentication failed"}},
		{"403", `{kind: status, status: 403, count: 1}`, want{Category: resilience.Permanent, Status: 403, Codes: []string{"MISSING_SCOPES"}}},
		{"400", `{kind: status, status: 400, count: 1}`, want{Category: resilience.Permanent, Status: 400, Codes: []string{"VALIDATION_ERROR"}}},
		{"slow", `{kind: slow, delay: 2s, count: 1}`, want{Category: resilience.Transient, Codes: []string{resilience.CodeTimeout}}},
		{"stall", `{kind: stall, delay: 2s, count: 1}`, want{Category: resilience.Transient, Codes: []string{resilience.CodeTimeout}}},
		{"refuse", `{kind: refuse, count: 1}`, want{Category: resilience.Transient, Codes: networkCodes}},
		{"reset", `{kind: reset, count: 1}`, want{Category: resilience.Transient, Codes: networkCodes}},
		{"malformed search", `{kind: malformed, count: 1}`, want{Category: resilience.Transient, Status: 200, Codes: []string{CodeMalformed}}},
		{"html 502", `{kind: html502, count: 1}`, want{Category: resilience.Transient, Status: 502, Codes: []string{""}, Msg: "text/html"}},
		{"empty body", `{kind: empty_body, count: 1}`, want{Category: resilience.Transient, Status: 200, Codes: []string{CodeMalformed}}},
		// Every third request fails: the search, then a search and a create succeed.
		{"flap", `{kind: flap, every: 3}`, want{Category: resilience.Transient, Status: 503, Codes: []string{"INTERNAL_ERROR"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := providertest.StartSim(t, "services: {crm: {faults: ["+tt.faults+"]}}")
			c := simClient(t, sim, testKey)
			id, err := c.Record(t.Context(), record)
			t.Logf("Record = %q, %v", id, err)
			checkSim(t, err, tt.want)
			if tt.want.Category == resilience.Permanent {
				return
			}
			// The fault is over: the retry records the call once.
			if _, err := c.Record(t.Context(), record); err != nil {
				t.Fatalf("Record after the fault: %v", err)
			}
			if n := sim.SideEffects(config.ServiceCRM, record.CallID); n != 1 {
				t.Errorf("side effects = %d, want one record", n)
			}
		})
	}
}

// A create answered 201 with its JSON cut short did the work: the record is
// looked up by call id instead of the write failing, and there is one.
func TestSimulatorTruncatedCreateFindsTheRecord(t *testing.T) {
	sim := providertest.StartSim(t, "services: {crm: {faults: [{"+createOnly+"kind: truncated, count: 1}]}}")
	c := simClient(t, sim, testKey)
	id, err := c.Record(t.Context(), record)
	if err != nil || id == "" {
		t.Fatalf("Record = %q, %v; want the record created by the truncated create", id, err)
	}
	if n := sim.SideEffects(config.ServiceCRM, record.CallID); n != 1 {
		t.Errorf("side effects = %d, want one record", n)
	}
}

// The duplicate a naive retry makes: the create succeeds, its response is
// lost, the client fails transient; the retried Record finds the record and
// the CRM holds one.
func TestSimulatorLostResponseMakesOneRecord(t *testing.T) {
	sim := providertest.StartSim(t, "services: {crm: {faults: [{"+createOnly+"kind: lost_response, count: 1}]}}")
	c := simClient(t, sim, testKey)
	_, err := c.Record(t.Context(), record)
	checkSim(t, err, want{Category: resilience.Transient, Codes: []string{resilience.CodeEOF}})
	if n := sim.SideEffects(config.ServiceCRM, record.CallID); n != 1 {
		t.Fatalf("side effects after the lost response = %d, want 1", n)
	}
	id, err := c.Record(t.Context(), record)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		t.Error("retried Record returned no id")
	}
	if n := sim.SideEffects(config.ServiceCRM, record.CallID); n != 1 {
		t.Errorf("side effects = %d, want 1: the retry made a duplicate", n)
	}
}

// Someone else created the record between the lookup and the create (the
// search index lags behind writes, so the lookup missed it): the CRM's
// unique property answers 409 naming the record, and the create step
// returns that record instead of failing.
func TestSimulatorConflict(t *testing.T) {
	sim := providertest.StartSim(t, "services: {crm: {unique_property: agent_call_id}}")
	c := simClient(t, sim, testKey)
	first, err := c.Record(t.Context(), record)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.create(t.Context(), record) // the create a missed lookup leads to
	if err != nil || id != first {
		t.Errorf("create of an existing record = %q, %v; want %q", id, err, first)
	}
	if got := sim.Requests(config.ServiceCRM)[409]; got != 1 {
		t.Errorf("the CRM answered 409 %d times, want 1", got)
	}
	if n := sim.SideEffects(config.ServiceCRM, record.CallID); n != 1 {
		t.Errorf("side effects = %d, want 1", n)
	}
}

// The CRM's burst limit, 100 requests per 10 s by default, here 3: a Record
// is a search and a create, so the second one's create is refused.
func TestSimulatorBurst(t *testing.T) {
	sim := providertest.StartSim(t, "services: {crm: {faults: [{kind: burst, limit: 3, window: 10s}]}}")
	c := simClient(t, sim, testKey)
	if _, err := c.Record(t.Context(), record); err != nil {
		t.Fatal(err)
	}
	rec := record
	rec.CallID = "call-2"
	_, err := c.Record(t.Context(), rec)
	checkSim(t, err, want{Category: resilience.Transient, Status: 429, Codes: []string{PolicyTenSecondly}, RetryAfter: 10 * time.Second})
}

func TestSimulatorRecord(t *testing.T) {
	sim := providertest.StartSim(t, "")
	c := simClient(t, sim, testKey)
	for _, status := range []string{"completed", "busy", "no-answer", "failed", "canceled"} {
		rec := record
		rec.CallID, rec.Status = "call-"+status, status
		if _, err := c.Record(t.Context(), rec); err != nil {
			t.Errorf("Record with status %s: %v", status, err)
		}
	}
	rec := record
	rec.CallID, rec.Status = "call-bad", "voicemail"
	_, err := c.Record(t.Context(), rec)
	checkSim(t, err, want{Category: resilience.Permanent, Status: 400, Codes: []string{"VALIDATION_ERROR"}})
}

func TestSimulatorHealth(t *testing.T) {
	sim := providertest.StartSim(t, "services: {crm: {faults: [{kind: status, status: 503}]}}")
	c := simClient(t, sim, testKey)
	if err := c.Health(t.Context()); err != nil {
		t.Errorf("Health with a data-only fault (shallow health): %v", err)
	}
	sim.SetScenario(simulator.Scenario{Name: "rotated", Services: map[string]simulator.Service{
		config.ServiceCRM: {APIKey: "pat-new-0123456789"},
	}})
	checkSim(t, c.Health(t.Context()), want{Category: resilience.Permanent, Status: 401, Codes: []string{"INVALID_AUTHENTICATION"}})
}
