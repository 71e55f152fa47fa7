package caller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/natstest"
)

// hubSpot is a CRM fake that answers the way HubSpot documents its call
// objects, not the way internal/simulator does: a search answer has results
// and no total, a create answer carries extra fields. While status is set,
// every request gets that status with HubSpot's error body.
type hubSpot struct {
	mu       sync.Mutex
	status   int
	records  map[string]string // agent_call_id -> record id
	creates  int
	requests int
}

func newHubSpot(t *testing.T) (*hubSpot, string) {
	h := &hubSpot{records: map[string]string{}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

func (h *hubSpot) fail(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = status
}

func (h *hubSpot) counts() (requests, creates int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests, h.creates
}

func (h *hubSpot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	if h.status != 0 {
		category := map[int]string{401: "INVALID_AUTHENTICATION"}[h.status]
		w.WriteHeader(h.status)
		fmt.Fprintf(w, `{"status":"error","message":"down for the test","correlationId":"c0ffee","category":%q}`, category)
		return
	}
	var body struct {
		FilterGroups []struct {
			Filters []struct{ Value string } `json:"filters"`
		} `json:"filterGroups"`
		// A list on search, an object on create.
		Properties json.RawMessage `json:"properties"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/crm/v3/objects/calls/search":
		results := "[]"
		if id, ok := h.records[body.FilterGroups[0].Filters[0].Value]; ok {
			results = fmt.Sprintf(`[{"id":%q,"properties":{"agent_call_id":%q,"hs_createdate":"2026-03-14T15:09:26.000Z"},"createdAt":"2026-03-14T15:09:26.000Z","updatedAt":"2026-03-14T15:09:26.000Z","archived":false}]`,
				id, body.FilterGroups[0].Filters[0].Value)
		}
		fmt.Fprintf(w, `{"results":%s}`, results)
	case "/crm/v3/objects/calls":
		var props map[string]string
		if err := json.Unmarshal(body.Properties, &props); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.creates++
		id := fmt.Sprint(51_000_000_000 + h.creates)
		h.records[props["agent_call_id"]] = id
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%q,"properties":{"hs_object_id":%q},"createdAt":"2026-03-14T15:09:26.000Z","updatedAt":"2026-03-14T15:09:26.000Z","archived":false}`, id, id)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// TestCRMOutageAfterPlacementHoldsTheCall: once the contact has been rung, a
// CRM that refuses the record for longer than the retry chain holds the
// request in the stream instead of failing the call; when the CRM is back
// the record is written once, the contact was rung once, and the call ends
// completed with its record id. A second caller taking over the held
// request does not dial again.
func TestCRMOutageAfterPlacementHoldsTheCall(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		refusals int // CRM requests refused before it recovers
		takeover bool
	}{
		// A retry chain is 4 attempts: 6 refusals are a chain and more.
		{name: "503 outage", status: 503, refusals: 6},
		{name: "503 outage, another caller takes over", status: 503, refusals: 6, takeover: true},
		// Permanent: held too, until an operator fixes the key.
		{name: "401 until the key is fixed", status: 401, refusals: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSimulator(t, "name: calm")
			hub, hubURL := newHubSpot(t)
			hub.fail(tt.status)
			srv := natstest.Start(t)
			admin := srv.Conn(t)
			rec := record(t, admin)
			cfg := testConfig(sim.URL())
			crmCfg := cfg.Services["crm"]
			crmCfg.BaseURL = hubURL
			cfg.Services["crm"] = crmCfg
			req := request(1)

			ctxA, cancelA := context.WithCancel(context.Background())
			defer cancelA()
			doneA := startCaller(t, ctxA, srv, cfg, "caller-a")
			dispatch(t, admin, req)
			waitFor(t, 20*time.Second, "the CRM refusing the placed call's record", func() bool {
				n, _ := hub.counts()
				return n >= tt.refusals || len(rec.terminals()[req.CallID]) > 0
			})
			if got := rec.terminals()[req.CallID]; len(got) != 0 {
				t.Fatalf("the call ended %s (%s: %s) while the CRM was down; want it held", got[0].Outcome, got[0].Reason, got[0].Message)
			}
			// Alerts are derived from the attempt events: they go on.
			var failed int
			for _, ev := range rec.snapshot() {
				if a, ok := ev.(*events.Attempt); ok && a.Service == "crm" && a.Outcome == events.OutcomeFailure && a.StatusCode == tt.status {
					failed++
				}
			}
			if failed < tt.refusals-1 {
				t.Errorf("%d failed CRM attempt events for %d refusals", failed, tt.refusals)
			}

			telephonyBefore := total(sim.Requests("telephony"))
			if tt.takeover {
				cancelA()
				<-doneA
				startCaller(t, t.Context(), srv, cfg, "caller-b")
			}
			hub.fail(0)
			waitFor(t, 20*time.Second, "the terminal outcome", func() bool { return len(rec.terminals()[req.CallID]) > 0 })

			_, creates := hub.counts()
			if creates != 1 {
				t.Errorf("%d CRM records created, want 1", creates)
			}
			if n := sim.SideEffects("telephony", req.CallID); n != 1 {
				t.Errorf("contact rung %d times, want once", n)
			}
			if tt.takeover {
				if n := total(sim.Requests("telephony")) - telephonyBefore; n != 0 {
					t.Errorf("the caller taking over made %d telephony requests, want none", n)
				}
			}
			hub.mu.Lock()
			want := hub.records[req.CallID]
			hub.mu.Unlock()
			waitFor(t, 10*time.Second, "the request acknowledged", func() bool { return acked(t, admin) })
			got := rec.terminals()[req.CallID]
			if len(got) != 1 || got[0].Outcome != events.CallCompleted || got[0].CallStatus != "completed" || got[0].CRMRecordID != want {
				t.Errorf("terminal events %+v, want one completed with crm_record_id %s", got, want)
			}
			var started int
			for _, ev := range rec.snapshot() {
				if c, ok := ev.(*events.Call); ok && c.Outcome == events.CallStarted {
					started++
				}
			}
			if started != 1 {
				t.Errorf("%d started events, want 1", started)
			}
		})
	}
}

// acked says the CALLS stream is empty (a work queue drops a message once
// acknowledged) and the callers' consumer holds nothing pending. It also
// checks that the consumer never gives up on a held request.
func acked(t *testing.T, admin *bus.Conn) bool {
	t.Helper()
	stream, err := admin.Stream(t.Context(), events.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	si, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.Consumer(t.Context(), "callers")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if ci.Config.MaxDeliver != -1 {
		t.Fatalf("the callers' consumer has max_deliver %d: a request held for a long CRM outage would be dropped", ci.Config.MaxDeliver)
	}
	return si.State.Msgs == 0 && ci.NumAckPending == 0
}

func total(m map[int]int) int {
	var n int
	for _, v := range m {
		n += v
	}
	return n
}
