package crm

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

const testKey = "pat-na1-0123456789abcdef"

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// answer is one canned HTTP answer, written unkeyed in the tables.
type answer providertest.Answer

func (a answer) serve(w http.ResponseWriter) { providertest.Answer(a).Serve(w) }

func newClient(t testing.TB, url string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: url, APIKey: testKey, Timeout: 5 * time.Second}, WithClock(resiliencetest.NewClock(t0)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rateLimit(policy string) string {
	b, _ := json.Marshal(map[string]any{"status": "error", "message": "You have reached your limit.", "errorType": "RATE_LIMIT",
		"correlationId": "c0ffee", "policyName": policy, "groupName": "publicapi:private-app"})
	return string(b)
}

func hubErr(category, msg string) string {
	b, _ := json.Marshal(map[string]any{"status": "error", "message": msg, "correlationId": "c0ffee", "category": category})
	return string(b)
}

var record = CallRecord{
	CallID: "call-1", Campaign: "spring", ContactID: "C7", Contact: "+1415****671",
	Status: "no-answer", Body: "No answer. Script: Hi Ada.", Duration: 2500 * time.Millisecond, Timestamp: t0,
}

// want is how a failed call must be classified; check takes the status
// from the answer.
type want = providertest.Want

func check(t *testing.T, err error, status int, w want) {
	t.Helper()
	w.Status = status
	providertest.Check(t, config.ServiceCRM, err, w, testKey)
}

func TestRecordClassifiesErrors(t *testing.T) {
	tests := []struct {
		name string
		answer
		want want
	}{
		{"429 ten-secondly without Retry-After", answer{429, nil, rateLimit(PolicyTenSecondly)},
			want{Category: resilience.Transient, Code: PolicyTenSecondly, RetryAfter: 10 * time.Second}},
		{"429 ten-secondly with Retry-After", answer{429, map[string]string{"Retry-After": "3"}, rateLimit(PolicyTenSecondly)},
			want{Category: resilience.Transient, Code: PolicyTenSecondly, RetryAfter: 3 * time.Second}},
		{"429 secondly", answer{429, nil, rateLimit(PolicySecondly)},
			want{Category: resilience.Transient, Code: PolicySecondly, RetryAfter: time.Second}},
		{"429 without policy", answer{429, nil, `{"status":"error","message":"slow down"}`},
			want{Category: resilience.Transient, RetryAfter: 10 * time.Second}},
		{"429 daily", answer{429, nil, rateLimit(PolicyDaily)},
			want{Category: resilience.Permanent, Code: PolicyDaily, Msg: "do not retry before it resets at midnight"}},
		{"500", answer{500, nil, hubErr("INTERNAL_ERROR", "internal error")},
			want{Category: resilience.Transient, Code: "INTERNAL_ERROR"}},
		{"502 html", answer{502, map[string]string{"Content-Type": "text/html"}, "<html>502 Bad Gateway</html>"},
			want{Category: resilience.Transient, Msg: "text/html answer"}},
		{"503", answer{503, nil, hubErr("", "unavailable")},
			want{Category: resilience.Transient}},
		{"401", answer{401, nil, hubErr("INVALID_AUTHENTICATION", "Authentication credentials not found.")},
			want{Category: resilience.Permanent, Code: "INVALID_AUTHENTICATION", Msg: "authentication failed"}},
		{"403", answer{403, nil, hubErr("MISSING_SCOPES", "This app hasn't been granted all required scopes.")},
			want{Category: resilience.Permanent, Code: "MISSING_SCOPES", Msg: "scope"}},
		{"400", answer{400, nil, hubErr("VALIDATION_ERROR", "Invalid input JSON")},
			want{Category: resilience.Permanent, Code: "VALIDATION_ERROR"}},
		{"404", answer{404, nil, hubErr("OBJECT_NOT_FOUND", "Object not found.")},
			want{Category: resilience.Permanent, Code: "OBJECT_NOT_FOUND"}},
		{"200 malformed search", answer{200, nil, `{"total": 1, "results": [`},
			want{Category: resilience.Transient, Code: CodeMalformed}},
		{"200 html search", answer{200, map[string]string{"Content-Type": "text/html"}, "<html>"},
			want{Category: resilience.Transient, Code: CodeMalformed, Msg: "text/html"}},
		{"200 empty search", answer{200, nil, ""},
			want{Category: resilience.Transient, Code: CodeMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := newClient(t, providertest.Server(t, providertest.Answer(tt.answer)).URL).Record(t.Context(), record)
			if err == nil {
				t.Fatalf("Record = %q, want an error", id)
			}
			check(t, err, tt.Status, tt.want)
		})
	}
}

// fakeHub is a HubSpot-like call store.
type fakeHub struct {
	t        *testing.T
	mu       sync.Mutex
	records  map[string]map[string]string // id -> properties
	order    []string
	creates  int
	searches int
	// lag hides records from the first lag searches (search indexing lag).
	lag int
	// unique makes a second create for a call id a 409.
	unique bool
	// conflictID, with unique, says whether the 409 names the existing id.
	conflictID bool
	// loseCreate creates the record, then hangs up without answering.
	loseCreate bool
	// createAnswer, when set, answers creates instead of the store.
	createAnswer *answer
}

func newHub(t *testing.T) *fakeHub {
	return &fakeHub{t: t, records: make(map[string]map[string]string)}
}

func (h *fakeHub) find(callID string) string {
	for _, id := range h.order {
		if h.records[id][PropertyCallID] == callID {
			return id
		}
	}
	return ""
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+testKey {
		answer{401, nil, hubErr("INVALID_AUTHENTICATION", "no")}.serve(w)
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /crm/v3/objects/calls/search":
		h.searches++
		var req searchRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			h.t.Errorf("search body: %v", err)
		}
		f := req.FilterGroups[0].Filters[0]
		if f.PropertyName != PropertyCallID || f.Operator != "EQ" || f.Value != r.Header.Get("X-Agent-Call-Id") {
			h.t.Errorf("search filter %+v for call id header %q", f, r.Header.Get("X-Agent-Call-Id"))
		}
		results := []object{}
		if id := h.find(f.Value); id != "" && h.searches > h.lag {
			results = append(results, object{ID: objectID(id)})
		}
		b, _ := json.Marshal(map[string]any{"total": len(results), "results": results})
		answer{200, nil, string(b)}.serve(w)
	case "POST /crm/v3/objects/calls":
		if h.createAnswer != nil {
			h.createAnswer.serve(w)
			return
		}
		var req createRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			h.t.Errorf("create body: %v", err)
		}
		callID := req.Properties[PropertyCallID]
		if existing := h.find(callID); h.unique && existing != "" {
			msg := "A call with agent_call_id=" + callID + " already exists."
			if h.conflictID {
				msg += " Existing ID: " + existing
			}
			answer{409, nil, hubErr("CONFLICT", msg)}.serve(w)
			return
		}
		h.creates++
		id := strconv.Itoa(51_000_000_000 + len(h.order) + 1)
		h.records[id] = req.Properties
		h.order = append(h.order, id)
		if h.loseCreate {
			h.loseCreate = false
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		answer{201, nil, fmt.Sprintf(`{"id":%q,"properties":{},"archived":false}`, id)}.serve(w)
	case "GET /crm/account-info/v3/details":
		answer{200, nil, `{"portalId":1}`}.serve(w)
	default:
		h.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		answer{404, nil, hubErr("OBJECT_NOT_FOUND", "no route")}.serve(w)
	}
}

func TestRecordIsIdempotent(t *testing.T) {
	h := newHub(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := newClient(t, srv.URL)

	id, err := c.Record(t.Context(), record)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Record(t.Context(), record)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || again != id || h.creates != 1 {
		t.Errorf("Record twice = %q, %q with %d creates, want the same id and one create", id, again, h.creates)
	}
	want := map[string]string{
		PropertyCallID:      "call-1",
		"hs_timestamp":      "2026-03-14T15:09:26.000Z",
		"hs_call_direction": "OUTBOUND",
		"hs_call_status":    "NO_ANSWER",
		"hs_call_duration":  "2500",
		"hs_call_body":      "No answer. Script: Hi Ada.",
		"hs_call_title":     "Outbound call · campaign spring · contact C7 · +1415****671",
	}
	got := h.records[id]
	for k, v := range want {
		if got[k] != v {
			t.Errorf("property %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestRecordLostResponse(t *testing.T) {
	h := newHub(t)
	h.loseCreate = true
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := newClient(t, srv.URL)

	_, err := c.Record(t.Context(), record)
	check(t, err, 0, want{Category: resilience.Transient, Code: resilience.CodeEOF})
	id, err := c.Record(t.Context(), record)
	if err != nil {
		t.Fatal(err)
	}
	if id != h.order[0] || h.creates != 1 {
		t.Errorf("retried Record = %q with %d creates, want %q and one create", id, h.creates, h.order[0])
	}
}

func TestRecordConflict(t *testing.T) {
	tests := []struct {
		name       string
		conflictID bool
		lag        int
		wantErr    bool
	}{
		// Search lags behind the lost create; the 409 names the record.
		{name: "409 names the record", conflictID: true, lag: 2},
		// The 409 does not name it, the second search finds it.
		{name: "409 then found", lag: 1},
		// Neither: transient, the next try finds it.
		{name: "409 not found yet", lag: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t)
			h.unique, h.conflictID = true, tt.conflictID
			srv := httptest.NewServer(h)
			defer srv.Close()
			c := newClient(t, srv.URL)
			first, err := c.Record(t.Context(), record)
			if err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			h.lag, h.searches = tt.lag, 0
			h.mu.Unlock()

			id, err := c.Record(t.Context(), record)
			if tt.wantErr {
				check(t, err, 409, want{Category: resilience.Transient, Code: CodeConflict, Msg: "cannot be found yet"})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id != first || h.creates != 1 {
				t.Errorf("Record after conflict = %q with %d creates, want %q and one create", id, h.creates, first)
			}
		})
	}
}

func TestRecordCreateErrors(t *testing.T) {
	tests := []struct {
		name string
		answer
		want want
	}{
		{"429", answer{429, nil, rateLimit(PolicyTenSecondly)}, want{Category: resilience.Transient, Code: PolicyTenSecondly, RetryAfter: 10 * time.Second}},
		{"400 bad property", answer{400, nil, hubErr("VALIDATION_ERROR", "Property values were not valid")}, want{Category: resilience.Permanent, Code: "VALIDATION_ERROR"}},
		{"201 malformed", answer{201, nil, `{"id":`}, want{Category: resilience.Transient, Code: CodeMalformed}},
		// JSON of another shape: the same on every try.
		{"201 without id", answer{201, nil, `{"properties":{}}`}, want{Category: resilience.Permanent, Code: CodeUnexpected}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t)
			h.createAnswer = &tt.answer
			srv := httptest.NewServer(h)
			defer srv.Close()
			_, err := newClient(t, srv.URL).Record(t.Context(), record)
			check(t, err, tt.Status, tt.want)
		})
	}
}

func TestRecordMasksNumbers(t *testing.T) {
	h := newHub(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	rec := record
	rec.Contact = "+14155552671" // a caller's mistake: a full number
	rec.Body = "Called +14155552671."
	id, err := newClient(t, srv.URL).Record(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h.records[id] {
		if strings.Contains(v, "14155552671") {
			t.Errorf("property %s = %q holds the full number", k, v)
		}
	}
}

func TestStatusMapping(t *testing.T) {
	for in, want := range map[string]string{
		"completed": "COMPLETED", "busy": "BUSY", "no-answer": "NO_ANSWER", "failed": "FAILED",
		"canceled": "CANCELED", "in-progress": "IN_PROGRESS", "NO_ANSWER": "NO_ANSWER", "": "",
	} {
		if got := hubspotStatus(in); got != want {
			t.Errorf("hubspotStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHealth(t *testing.T) {
	h := newHub(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	if err := newClient(t, srv.URL).Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer{503, nil, hubErr("", "unavailable")}.serve(w)
	}))
	defer down.Close()
	check(t, newClient(t, down.URL).Health(t.Context()), 503, want{Category: resilience.Transient})
}

func TestNew(t *testing.T) {
	if _, err := New(config.Service{BaseURL: "http://127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "api_key") {
		t.Errorf("New without a key = %v", err)
	}
	if _, err := New(config.Service{BaseURL: "https://u:p@api.hubapi.com", APIKey: "k"}); err == nil || strings.Contains(err.Error(), ":p@") {
		t.Errorf("New with credentials in the url = %v", err)
	}
	c, err := New(config.Service{BaseURL: "https://api.hubapi.com", APIKey: "k"})
	if err != nil || c.http.Timeout != DefaultTimeout {
		t.Errorf("New = %v, %v", c, err)
	}
	if _, err := c.Record(t.Context(), CallRecord{}); err == nil {
		t.Error("Record without a call id succeeded")
	}
}

func BenchmarkRecord(b *testing.B) {
	// The search finds nothing, so each Record is a search and a create.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/search") {
			answer{200, nil, `{"total":0,"results":[]}`}.serve(w)
			return
		}
		answer{201, nil, `{"id":"51000000001","properties":{},"archived":false}`}.serve(w)
	}))
	defer srv.Close()
	c := newClient(b, srv.URL)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Record(b.Context(), record); err != nil {
			b.Fatal(err)
		}
	}
}
