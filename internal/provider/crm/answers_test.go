package crm

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/callagent/agent/internal/resilience"
)

// Bodies shaped the way HubSpot documents POST /crm/v3/objects/calls/search
// and POST /crm/v3/objects/calls: search results carry id (a string),
// properties (null when unset), createdAt, updatedAt and archived; total and
// paging are optional (paging is absent on the last page); a create answer
// carries id, properties, createdAt, updatedAt and archived.
const (
	searchNone          = `{"results":[]}`
	searchNoneWithTotal = `{"total":0,"results":[]}`
	searchNonePaging    = `{"results":[],"paging":{"next":{"after":"10","link":"https://api.hubapi.com/crm/v3/objects/calls/search?after=10"}}}`
	searchHit           = `{"results":[{"id":"51000000042","properties":{"agent_call_id":"call-1","hs_createdate":"2026-03-14T15:09:26.000Z","hs_lastmodifieddate":"2026-03-14T15:09:27.113Z","hs_object_id":"51000000042","hs_call_status":null},"createdAt":"2026-03-14T15:09:26.000Z","updatedAt":"2026-03-14T15:09:27.113Z","archived":false}]}`
	searchHitWithTotal  = `{"total":1,"results":[{"id":"51000000042","properties":{"agent_call_id":"call-1"},"createdAt":"2026-03-14T15:09:26.000Z","updatedAt":"2026-03-14T15:09:26.000Z","archived":false}],"paging":{"next":{"after":"1"}}}`
	searchHitNumericID  = `{"results":[{"id":51000000042,"properties":{"agent_call_id":"call-1"}}]}`
	// A search that ignored the filter: the record belongs to another call.
	searchOtherCall = `{"total":1,"results":[{"id":"51000000007","properties":{"agent_call_id":"call-0"},"archived":false}]}`
	created         = `{"id":"51000000099","properties":{"agent_call_id":"call-1","hs_call_direction":"OUTBOUND","hs_createdate":"2026-03-14T15:09:26.000Z","hs_lastmodifieddate":"2026-03-14T15:09:26.000Z","hs_object_id":"51000000099","hs_timestamp":"2026-03-14T15:09:26.000Z"},"createdAt":"2026-03-14T15:09:26.000Z","updatedAt":"2026-03-14T15:09:26.000Z","archived":false}`
)

// scripted answers searches and creates with fixed bodies and counts them.
type scripted struct {
	search, create answer
	mu             sync.Mutex
	searches       int
	creates        int
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/crm/v3/objects/calls/search":
		s.searches++
		s.search.serve(w)
	case "/crm/v3/objects/calls":
		s.creates++
		s.create.serve(w)
	default:
		http.NotFound(w, r)
	}
}

func jsonAnswer(status int, body string) answer {
	return answer{status, map[string]string{"Content-Type": "application/json;charset=utf-8"}, body}
}

func TestRecordReadsDocumentedAnswers(t *testing.T) {
	tests := []struct {
		name        string
		search      string
		wantID      string
		wantCreates int
	}{
		{"no results, no total", searchNone, "51000000099", 1},
		{"no results, total 0", searchNoneWithTotal, "51000000099", 1},
		{"no results, paging", searchNonePaging, "51000000099", 1},
		{"found, no total, null property", searchHit, "51000000042", 0},
		{"found, total and paging", searchHitWithTotal, "51000000042", 0},
		{"found, numeric id", searchHitNumericID, "51000000042", 0},
		{"another call's record is not ours", searchOtherCall, "51000000099", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{search: jsonAnswer(200, tt.search), create: jsonAnswer(201, created)}
			srv := httptest.NewServer(s)
			defer srv.Close()
			id, err := newClient(t, srv.URL).Record(t.Context(), record)
			if err != nil {
				t.Fatalf("Record: %v", err)
			}
			if id != tt.wantID || s.creates != tt.wantCreates {
				t.Errorf("Record = %q with %d creates, want %q with %d", id, s.creates, tt.wantID, tt.wantCreates)
			}
		})
	}
}

// TestRecordExplainsUnreadableAnswers: a 2xx that is well-formed JSON of
// another shape is a contract mismatch, the same on every try: permanent,
// naming the field. One that is not JSON at all (cut, empty, a proxy's
// page) was spoiled on the way: transient.
func TestRecordExplainsUnreadableAnswers(t *testing.T) {
	tests := []struct {
		name     string
		search   answer
		create   answer
		want     want
		contains []string
	}{
		{"search without results", jsonAnswer(200, `{"total":0}`), jsonAnswer(201, created),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{"search answer", `no "results"`, `body starts: {"total":0}`}},
		{"search results not a list", jsonAnswer(200, `{"results":{"id":"1"}}`), jsonAnswer(201, created),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{`"results"`, "object", "array"}},
		{"search id an object", jsonAnswer(200, `{"results":[{"id":{"value":"1"}}]}`), jsonAnswer(201, created),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{`"results.id"`, "object"}},
		{"search result without id", jsonAnswer(200, `{"results":[{"properties":{"agent_call_id":"call-1"}}]}`), jsonAnswer(201, created),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{"no id"}},
		{"search answer a json array", jsonAnswer(200, `[]`), jsonAnswer(201, created),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{"array", "object"}},
		{"search cut short", jsonAnswer(200, `{"results":[{"id":"5`), jsonAnswer(201, created),
			want{Category: resilience.Transient, Code: CodeMalformed}, []string{"ends early", `body starts: {"results":[{"id":"5`}},
		{"search not json", jsonAnswer(200, `{"results": [1,}`), jsonAnswer(201, created),
			want{Category: resilience.Transient, Code: CodeMalformed}, []string{"not valid json at byte"}},
		{"search empty", jsonAnswer(200, ``), jsonAnswer(201, created),
			want{Category: resilience.Transient, Code: CodeMalformed}, []string{"is empty", "0 bytes"}},
		{"search html page", answer{200, map[string]string{"Content-Type": "text/html"}, "<html><body>Please wait</body></html>"}, jsonAnswer(201, created),
			want{Category: resilience.Transient, Code: CodeMalformed}, []string{"text/html", "<html><body>Please wait"}},
		{"create without id, not found", jsonAnswer(200, searchNone), jsonAnswer(201, `{"properties":{},"archived":false}`),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{"create answer", "no id", "not found by call id"}},
		{"create id an array", jsonAnswer(200, searchNone), jsonAnswer(201, `{"id":["1"],"properties":{}}`),
			want{Category: resilience.Permanent, Code: CodeUnexpected}, []string{`"id"`, "array"}},
		{"create cut short", jsonAnswer(200, searchNone), jsonAnswer(201, `{"id":"510`),
			want{Category: resilience.Transient, Code: CodeMalformed}, []string{"create answer", "ends early"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &scripted{search: tt.search, create: tt.create}
			srv := httptest.NewServer(s)
			defer srv.Close()
			id, err := newClient(t, srv.URL).Record(t.Context(), record)
			if err == nil {
				t.Fatalf("Record = %q, want an error", id)
			}
			status := tt.search.Status
			if strings.HasPrefix(tt.name, "create") {
				status = tt.create.Status
			}
			check(t, err, status, tt.want)
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// A create answered 2xx did the work even when its answer cannot be read:
// the record is looked up instead of failing the write.
func TestRecordUnreadableCreateFindsTheRecord(t *testing.T) {
	var mu sync.Mutex
	var searches, creates int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/search") {
			searches++
			if creates == 0 {
				jsonAnswer(200, searchNone).serve(w)
				return
			}
			jsonAnswer(200, searchHit).serve(w)
			return
		}
		creates++
		jsonAnswer(201, `{"id":51000000042`).serve(w) // cut by a gateway
	}))
	defer srv.Close()
	id, err := newClient(t, srv.URL).Record(t.Context(), record)
	if err != nil || id != "51000000042" || creates != 1 || searches != 2 {
		t.Errorf("Record = %q, %v after %d creates and %d searches, want the record found after one create", id, err, creates, searches)
	}
}
