package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// plugin is the real sheets binary, built once for the package.
var plugin string

func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "sheets")) }

const sheetID = "1AbCdEfGhIjKlMnOpQrStUvWxYz"

// appendCall is one spreadsheets.values.append the fake API received.
type appendCall struct {
	rng, valueInput, insertData, auth string
	rows                              [][]any
}

// sheetsAPI is a fake Google Sheets API on 127.0.0.1: values.append,
// spreadsheets.get and an OAuth token endpoint, with scripted errors.
type sheetsAPI struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []appendCall
	errs    []apiError // answered to the next appends, in order
	tokens  int
	gets    int
	missing bool // every request answers 404
}

type apiError struct {
	code   int
	status string
}

func newSheetsAPI(t *testing.T, errs ...apiError) *sheetsAPI {
	a := &sheetsAPI{errs: errs}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *sheetsAPI) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fail := func(code int, status, msg string) {
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"status":%q}}`, code, msg, status)
	}
	switch {
	case r.URL.Path == "/token":
		a.tokens++
		fmt.Fprint(w, `{"access_token":"ya29.test-token","token_type":"Bearer","expires_in":3600}`)
		return
	case a.missing:
		fail(404, "NOT_FOUND", "Requested entity was not found.")
		return
	case r.Method == http.MethodGet && r.URL.Path == "/v4/spreadsheets/"+sheetID:
		a.gets++
		fmt.Fprintf(w, `{"spreadsheetId":%q}`, sheetID)
		return
	}
	prefix := "/v4/spreadsheets/" + sheetID + "/values/"
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, prefix) || !strings.HasSuffix(r.URL.Path, ":append") {
		fail(404, "NOT_FOUND", "no such method "+r.URL.Path)
		return
	}
	var body struct {
		Values [][]any `json:"values"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(400, "INVALID_ARGUMENT", err.Error())
		return
	}
	a.calls = append(a.calls, appendCall{
		rng:        strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, prefix), ":append"),
		valueInput: r.URL.Query().Get("valueInputOption"),
		insertData: r.URL.Query().Get("insertDataOption"),
		auth:       r.Header.Get("Authorization"),
		rows:       body.Values,
	})
	if len(a.errs) > 0 {
		e := a.errs[0]
		a.errs = a.errs[1:]
		fail(e.code, e.status, "scripted "+e.status)
		return
	}
	fmt.Fprintf(w, `{"spreadsheetId":%q,"updates":{"updatedRows":%d}}`, sheetID, len(body.Values))
}

func (a *sheetsAPI) appends() []appendCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appendCall(nil), a.calls...)
}

func config(endpoint string, extra ...any) map[string]any {
	return sinktest.With(map[string]any{"endpoint": endpoint, "spreadsheet_id": sheetID, "range": "Log!A:F", "writes_per_minute": 6000}, extra...)
}

var t0 = time.Date(2025, 3, 14, 9, 27, 5, 589_000_000, time.UTC)

func seedBatch(t *testing.T) []sink.Record {
	ref := events.CallRef{CallID: "call-7f3a9c2e", Contact: "+91888****882"}
	return []sink.Record{
		sinktest.Record(t, &events.Attempt{Header: events.Header{Time: t0}, CallRef: ref, Service: "elevenlabs",
			Attempt: 1, Outcome: events.OutcomeFailure, ErrorCategory: events.CategoryTransient, StatusCode: 503,
			Message: "503 Service Unavailable", BreakerState: events.BreakerClosed}),
		sinktest.Record(t, &events.Retry{Header: events.Header{Time: t0.Add(time.Millisecond)}, CallRef: ref,
			Service: "elevenlabs", Attempt: 1, RetryInMs: 5000, ErrorCategory: events.CategoryTransient,
			BreakerState: events.BreakerClosed, Message: "retry in 5s"}),
		sinktest.Record(t, &events.Breaker{Header: events.Header{Time: t0.Add(2 * time.Millisecond)}, Service: "elevenlabs",
			From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen,
			Message: "=HYPERLINK(\"http://evil\")"}),
	}
}

func TestAppendsOneRequestPerBatch(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		wantInput string
		// lastMessage is the breaker's message cell: a formula must stay text.
		lastMessage string
	}{
		{"RAW by default", "", "RAW", `=HYPERLINK("http://evil")`},
		{"USER_ENTERED", "USER_ENTERED", "USER_ENTERED", `'=HYPERLINK("http://evil")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newSheetsAPI(t)
			cfg := config(api.URL)
			if tt.input != "" {
				cfg["value_input_option"] = tt.input
			}
			p := sinktest.Start(t, plugin, cfg)
			sinktest.DeliverAll(t, p, seedBatch(t))
			calls := api.appends()
			if len(calls) != 1 {
				t.Fatalf("%d append requests, want 1 for the batch", len(calls))
			}
			c := calls[0]
			if c.rng != "Log!A:F" || c.insertData != "INSERT_ROWS" || c.valueInput != tt.wantInput {
				t.Errorf("range %q valueInputOption %q insertDataOption %q", c.rng, c.valueInput, c.insertData)
			}
			want := [][]any{
				{"2025-03-14T09:27:05.589Z", "elevenlabs", "transient", 0.0, "closed", "503 Service Unavailable"},
				{"2025-03-14T09:27:05.59Z", "elevenlabs", "transient", 1.0, "closed", "retry in 5s"},
				{"2025-03-14T09:27:05.591Z", "elevenlabs", "", 0.0, "open", tt.lastMessage},
			}
			if fmt.Sprint(c.rows) != fmt.Sprint(want) {
				t.Errorf("rows\n got %v\nwant %v", c.rows, want)
			}
		})
	}
}

func TestQuotaBackoff(t *testing.T) {
	exhausted := apiError{429, "RESOURCE_EXHAUSTED"}
	api := newSheetsAPI(t, exhausted, exhausted)
	p := sinktest.Start(t, plugin, config(api.URL))

	// min(2^n s + random ms, 64 s): n counts the 429s in a row.
	steps := []struct {
		status   sink.Status
		min, max time.Duration
	}{
		{sink.Retryable, 1 * time.Second, 2 * time.Second},
		{sink.Retryable, 2 * time.Second, 3 * time.Second},
		{sink.Delivered, 0, 0},
	}
	for i, st := range steps {
		res, err := p.Deliver(t.Context(), seedBatch(t)[:1])
		if err != nil {
			t.Fatal(err)
		}
		r := res[0]
		if r.Status != st.status || r.RetryAfter < st.min || (st.max > 0 && r.RetryAfter >= st.max) {
			t.Errorf("step %d: %+v, want %v with a delay in [%v, %v)", i, r, st.status, st.min, st.max)
		}
		if st.status == sink.Retryable && !strings.Contains(r.Reason, "429") {
			t.Errorf("step %d: reason %q", i, r.Reason)
		}
	}
	// Success reset the count: the next 429 waits about a second again.
	api.mu.Lock()
	api.errs = []apiError{exhausted}
	api.mu.Unlock()
	res, err := p.Deliver(t.Context(), seedBatch(t)[:1])
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Status != sink.Retryable || r.RetryAfter < time.Second || r.RetryAfter >= 2*time.Second {
		t.Errorf("after reset: %+v", r)
	}
}

func TestPacingUnderTheQuota(t *testing.T) {
	api := newSheetsAPI(t)
	p := sinktest.Start(t, plugin, config(api.URL, "writes_per_minute", 1))
	if res, err := p.Deliver(t.Context(), seedBatch(t)); err != nil || res[0].Status != sink.Delivered {
		t.Fatalf("first: %v %v", res, err)
	}
	// The next token is a minute away: a deliver that cannot wait that long
	// is told so at once, and sends nothing.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	res, err := p.Deliver(ctx, seedBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Status != sink.Retryable || r.RetryAfter < 55*time.Second || r.RetryAfter > time.Minute {
		t.Errorf("second: %+v, want retryable in about a minute", r)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("second deliver took %v: it waited instead of answering", d)
	}
	if n := len(api.appends()); n != 1 {
		t.Errorf("%d appends, want 1", n)
	}
}

func TestClassifiesErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    apiError
		status sink.Status
	}{
		{"permission denied", apiError{403, "PERMISSION_DENIED"}, sink.Permanent},
		{"bad range", apiError{400, "INVALID_ARGUMENT"}, sink.Permanent},
		{"unauthenticated", apiError{401, "UNAUTHENTICATED"}, sink.Permanent},
		{"backend error", apiError{500, "INTERNAL"}, sink.Retryable},
		{"unavailable", apiError{503, "UNAVAILABLE"}, sink.Retryable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newSheetsAPI(t, tt.err)
			p := sinktest.Start(t, plugin, config(api.URL))
			res, err := p.Deliver(t.Context(), seedBatch(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Status != tt.status || !strings.Contains(r.Reason, fmt.Sprint(tt.err.code)) {
					t.Errorf("result %+v, want %v", r, tt.status)
				}
			}
		})
	}
	t.Run("api down", func(t *testing.T) {
		api := newSheetsAPI(t)
		api.Close()
		p := sinktest.Start(t, plugin, config(api.URL))
		res, err := p.Deliver(t.Context(), seedBatch(t))
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Status != sink.Retryable {
			t.Errorf("result %+v", res[0])
		}
	})
}

func TestServiceAccountCredentials(t *testing.T) {
	api := newSheetsAPI(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))})
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "agent-test", "private_key_id": "k1",
		"private_key": string(pemKey), "client_email": "agent@agent-test.iam.gserviceaccount.com",
		"client_id": "1", "token_uri": api.URL + "/token",
	})
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	p := sinktest.Start(t, plugin, config(api.URL, "credentials_file", path))
	res, err := p.Deliver(t.Context(), seedBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != sink.Delivered {
		t.Fatalf("result %+v", res[0])
	}
	// The key signed a JWT that the token endpoint exchanged for this token.
	if auth := api.appends()[0].auth; auth != "Bearer ya29.test-token" {
		t.Errorf("Authorization %q, want the token issued for the service account", auth)
	}
	if err := p.Health(t.Context()); err != nil {
		t.Errorf("health: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestHealthAndConfig(t *testing.T) {
	api := newSheetsAPI(t)
	p := sinktest.Start(t, plugin, config(api.URL))
	if err := p.Health(t.Context()); err != nil {
		t.Errorf("health: %v", err)
	}
	api.mu.Lock()
	api.missing = true
	api.mu.Unlock()
	if err := p.Health(t.Context()); err == nil {
		t.Error("health of a missing spreadsheet passed")
	}

	for name, cfg := range map[string]map[string]any{
		"no spreadsheet":      {"endpoint": api.URL},
		"bad input option":    {"spreadsheet_id": sheetID, "value_input_option": "FORMULA"},
		"negative pace":       {"spreadsheet_id": sheetID, "writes_per_minute": -1},
		"two credentials":     {"spreadsheet_id": sheetID, "credentials_file": "a.json", "credentials_json": "{}"},
		"missing credentials": {"spreadsheet_id": sheetID, "credentials_file": "/nonexistent/sa.json"},
		"misspelt key":        {"spreadsheet_id": sheetID, "spreadsheetid": sheetID},
	} {
		t.Run(name, func(t *testing.T) {
			if err := p.Configure(t.Context(), sinktest.JSON(t, cfg)); !errors.Is(err, sink.ErrConfig) {
				t.Errorf("configure: %v, want ErrConfig", err)
			}
		})
	}
}
