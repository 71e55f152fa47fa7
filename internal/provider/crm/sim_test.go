package crm

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

func startSim(t *testing.T, services string) *simulator.Server {
	t.Helper()
	sc, err := simulator.ParseScenario([]byte("name: test\n" + services))
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	sim := simulator.New(sc, nil)
	if err := sim.Start(t.Context(), "127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func simClient(t *testing.T, sim *simulator.Server, key string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: sim.URL() + "/crm", APIKey: key, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type simWant struct {
	cat        resilience.Category
	codes      []string
	status     int
	retryAfter time.Duration
	msg        string
}

func checkSim(t *testing.T, err error, w simWant) {
	t.Helper()
	var e *resilience.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *resilience.Error", err)
	}
	if e.Service != config.ServiceCRM || e.Category != w.cat || !slices.Contains(w.codes, e.Code) || e.StatusCode != w.status || e.RetryAfter != w.retryAfter {
		t.Errorf("error = %+v, want %s, status %d, a code in %q, retry after %s", e, w.cat, w.status, w.codes, w.retryAfter)
	}
	if !strings.Contains(e.Message, w.msg) {
		t.Errorf("message %q does not contain %q", e.Message, w.msg)
	}
}

// createOnly restricts a fault to the create request: only its body names
// hs_call_direction.
const createOnly = "match: hs_call_direction, "

func TestSimulatorFaults(t *testing.T) {
	networkCodes := []string{resilience.CodeConnectionReset, resilience.CodeEOF}
	tests := []struct {
		name   string
		faults string
		want   simWant
	}{
		{"429 ten-secondly", `{kind: status, status: 429, count: 1}`,
			simWant{cat: resilience.Transient, status: 429, codes: []string{PolicyTenSecondly}, retryAfter: 10 * time.Second}},
		{"429 ten-secondly with Retry-After", `{kind: status, status: 429, retry_after: "3", count: 1}`,
			simWant{cat: resilience.Transient, status: 429, codes: []string{PolicyTenSecondly}, retryAfter: 3 * time.Second}},
		{"429 daily", `{kind: status, status: 429, policy: DAILY, count: 1}`,
			simWant{cat: resilience.Permanent, status: 429, codes: []string{PolicyDaily}, msg: "do not retry"}},
		{"429 daily on create", `{` + createOnly + `kind: status, status: 429, policy: DAILY, count: 1}`,
			simWant{cat: resilience.Permanent, status: 429, codes: []string{PolicyDaily}, msg: "do not retry"}},
		{"500", `{kind: status, status: 500, count: 1}`, simWant{cat: resilience.Transient, status: 500, codes: []string{"INTERNAL_ERROR"}}},
		{"503 on create", `{` + createOnly + `kind: status, status: 503, count: 1}`, simWant{cat: resilience.Transient, status: 503, codes: []string{"INTERNAL_ERROR"}}},
		{"401", `{kind: status, status: 401, count: 1}`, simWant{cat: resilience.Permanent, status: 401, codes: []string{"INVALID_AUTHENTICATION"}, msg: "authentication failed"}},
		{"403", `{kind: status, status: 403, count: 1}`, simWant{cat: resilience.Permanent, status: 403, codes: []string{"MISSING_SCOPES"}}},
		{"400", `{kind: status, status: 400, count: 1}`, simWant{cat: resilience.Permanent, status: 400, codes: []string{"VALIDATION_ERROR"}}},
		{"slow", `{kind: slow, delay: 2s, count: 1}`, simWant{cat: resilience.Transient, codes: []string{resilience.CodeTimeout}}},
		{"stall", `{kind: stall, delay: 2s, count: 1}`, simWant{cat: resilience.Transient, codes: []string{resilience.CodeTimeout}}},
		{"refuse", `{kind: refuse, count: 1}`, simWant{cat: resilience.Transient, codes: networkCodes}},
		{"reset", `{kind: reset, count: 1}`, simWant{cat: resilience.Transient, codes: networkCodes}},
		{"malformed search", `{kind: malformed, count: 1}`, simWant{cat: resilience.Transient, status: 200, codes: []string{CodeMalformed}}},
		{"truncated create", `{` + createOnly + `kind: truncated, count: 1}`, simWant{cat: resilience.Transient, status: 201, codes: []string{CodeMalformed}}},
		{"html 502", `{kind: html502, count: 1}`, simWant{cat: resilience.Transient, status: 502, codes: []string{""}, msg: "text/html"}},
		{"empty body", `{kind: empty_body, count: 1}`, simWant{cat: resilience.Transient, status: 200, codes: []string{CodeMalformed}}},
		// Every third request fails: the search, then a search and a create succeed.
		{"flap", `{kind: flap, every: 3}`, simWant{cat: resilience.Transient, status: 503, codes: []string{"INTERNAL_ERROR"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSim(t, "services: {crm: {faults: ["+tt.faults+"]}}")
			c := simClient(t, sim, testKey)
			id, err := c.Record(t.Context(), record)
			t.Logf("Record = %q, %v", id, err)
			checkSim(t, err, tt.want)
			if tt.want.cat == resilience.Permanent {
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

// The duplicate a naive retry makes: the create succeeds, its response is
// lost, the client fails transient; the retried Record finds the record and
// the CRM holds one.
func TestSimulatorLostResponseMakesOneRecord(t *testing.T) {
	sim := startSim(t, "services: {crm: {faults: [{"+createOnly+"kind: lost_response, count: 1}]}}")
	c := simClient(t, sim, testKey)
	_, err := c.Record(t.Context(), record)
	checkSim(t, err, simWant{cat: resilience.Transient, codes: []string{resilience.CodeEOF}})
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
	sim := startSim(t, "services: {crm: {unique_property: agent_call_id}}")
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
	sim := startSim(t, "services: {crm: {faults: [{kind: burst, limit: 3, window: 10s}]}}")
	c := simClient(t, sim, testKey)
	if _, err := c.Record(t.Context(), record); err != nil {
		t.Fatal(err)
	}
	rec := record
	rec.CallID = "call-2"
	_, err := c.Record(t.Context(), rec)
	checkSim(t, err, simWant{cat: resilience.Transient, status: 429, codes: []string{PolicyTenSecondly}, retryAfter: 10 * time.Second})
}

func TestSimulatorRecord(t *testing.T) {
	sim := startSim(t, "")
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
	checkSim(t, err, simWant{cat: resilience.Permanent, status: 400, codes: []string{"VALIDATION_ERROR"}})
}

func TestSimulatorHealth(t *testing.T) {
	sim := startSim(t, "services: {crm: {faults: [{kind: status, status: 503}]}}")
	c := simClient(t, sim, testKey)
	if err := c.Health(t.Context()); err != nil {
		t.Errorf("Health with a data-only fault (shallow health): %v", err)
	}
	sim.SetScenario(simulator.Scenario{Name: "rotated", Services: map[string]simulator.Service{
		config.ServiceCRM: {APIKey: "pat-new-0123456789"},
	}})
	checkSim(t, c.Health(t.Context()), simWant{cat: resilience.Permanent, status: 401, codes: []string{"INVALID_AUTHENTICATION"}})
}
