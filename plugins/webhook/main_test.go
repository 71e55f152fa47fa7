package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// plugin is the real webhook binary, built once for the package.
var plugin string

func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "webhook")) }

const secret = "whsec-test-secret"

// receiver is a webhook endpoint on 127.0.0.1 that checks the signature the
// way a real receiver should, and answers with a scripted status.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
	answer  func(w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get("X-Agent-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		http.Error(w, "stale or missing timestamp", http.StatusUnauthorized)
		return
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(r.Header.Get("X-Agent-Signature")), []byte(want)) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, body)
	rc.headers = append(rc.headers, r.Header.Clone())
	answer := rc.answer
	rc.mu.Unlock()
	if answer != nil {
		answer(w, r)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) received() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...)
}

func config(url string, extra ...any) map[string]any {
	return sinktest.With(map[string]any{"url": url, "secret": secret}, extra...)
}

func TestAgentFormat(t *testing.T) {
	rc := newReceiver(t)
	p := sinktest.Start(t, plugin, config(rc.URL, "headers", map[string]string{"Authorization": "Bearer abc"}))
	batch := []sink.Record{
		sinktest.Record(t, sinktest.Alert("elevenlabs", "elevenlabs circuit breaker opened")),
		sinktest.Record(t, &events.Attempt{Service: "llm", Attempt: 1, Outcome: events.OutcomeSuccess, LatencyMs: 12}),
	}
	sinktest.DeliverAll(t, p, batch)
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("%d POSTs, want 1", len(got))
	}
	var body struct {
		Version string            `json:"version"`
		Events  []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(got[0], &body); err != nil {
		t.Fatal(err)
	}
	if body.Version != "1" || len(body.Events) != 2 {
		t.Fatalf("body %s", got[0])
	}
	for i, raw := range body.Events {
		if !sameJSON(t, raw, batch[i].Data) {
			t.Errorf("event %d = %s, want %s", i, raw, batch[i].Data)
		}
	}
	if h := rc.headers[0].Get("Authorization"); h != "Bearer abc" {
		t.Errorf("Authorization = %q", h)
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

func TestAlertmanagerFormat(t *testing.T) {
	rc := newReceiver(t)
	p := sinktest.Start(t, plugin, config(rc.URL, "format", "alertmanager", "receiver", "oncall",
		"external_url", "http://observer.local:8080/status"))

	starts := time.Date(2025, 3, 14, 9, 27, 26, 0, time.UTC)
	ends := starts.Add(3 * time.Minute)
	breaker := sinktest.Alert("elevenlabs", "elevenlabs circuit breaker opened")
	breaker.StartsAt, breaker.Message, breaker.Fingerprint = starts, "5 consecutive failures", "b7e1c0d2a9f3"
	errRate := sinktest.Alert("elevenlabs", "elevenlabs error rate above 50%")
	errRate.Rule, errRate.Severity, errRate.StartsAt = "error_rate", events.SeverityWarning, starts
	errRate.Status, errRate.EndsAt = events.AlertResolved, &ends
	crm := sinktest.Alert("crm", "crm down")
	crm.StartsAt = starts
	batch := []sink.Record{
		sinktest.Record(t, breaker), sinktest.Record(t, crm), sinktest.Record(t, errRate),
		sinktest.Record(t, &events.Attempt{Service: "llm", Attempt: 1, Outcome: events.OutcomeSuccess}),
	}
	res, err := p.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []sink.Status{sink.Delivered, sink.Delivered, sink.Delivered, sink.Permanent}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("result %d = %+v, want %v", i, r, want[i])
		}
	}
	got := rc.received()
	if len(got) != 2 {
		t.Fatalf("%d POSTs, want 2 (one per service)", len(got))
	}
	wantFirst := `{
	  "version": "4",
	  "groupKey": "{}:{service=\"elevenlabs\"}",
	  "truncatedAlerts": 0,
	  "status": "firing",
	  "receiver": "oncall",
	  "groupLabels": {"service": "elevenlabs"},
	  "commonLabels": {"campaign": "spring-renewals", "service": "elevenlabs"},
	  "commonAnnotations": {},
	  "externalURL": "http://observer.local:8080/status",
	  "alerts": [
	    {"status": "firing",
	     "labels": {"alertname": "breaker_open", "severity": "critical", "service": "elevenlabs", "campaign": "spring-renewals"},
	     "annotations": {"summary": "elevenlabs circuit breaker opened", "description": "5 consecutive failures"},
	     "startsAt": "2025-03-14T09:27:26Z", "endsAt": "0001-01-01T00:00:00Z",
	     "generatorURL": "http://observer.local:8080/status", "fingerprint": "b7e1c0d2a9f3"},
	    {"status": "resolved",
	     "labels": {"alertname": "error_rate", "severity": "warning", "service": "elevenlabs", "campaign": "spring-renewals"},
	     "annotations": {"summary": "elevenlabs error rate above 50%"},
	     "startsAt": "2025-03-14T09:27:26Z", "endsAt": "2025-03-14T09:30:26Z",
	     "generatorURL": "http://observer.local:8080/status", "fingerprint": "fp-elevenlabs"}
	  ]
	}`
	if !sameJSON(t, got[0], []byte(wantFirst)) {
		t.Errorf("first POST:\n%s\nwant\n%s", got[0], wantFirst)
	}
	var second struct {
		Status      string            `json:"status"`
		GroupLabels map[string]string `json:"groupLabels"`
	}
	if err := json.Unmarshal(got[1], &second); err != nil {
		t.Fatal(err)
	}
	if second.Status != "firing" || second.GroupLabels["service"] != "crm" {
		t.Errorf("second POST %s", got[1])
	}
}

func TestClassifiesAnswers(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request)
		config []any
		closed bool
		status sink.Status
		after  time.Duration
		inText string
	}{
		{name: "200", answer: status(200, ""), status: sink.Delivered},
		{name: "202", answer: status(202, ""), status: sink.Delivered},
		{name: "500", answer: status(500, "boom"), status: sink.Retryable, inText: "500 Internal Server Error: boom"},
		{name: "503 with Retry-After", answer: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
		}, status: sink.Retryable, after: 7 * time.Second},
		{name: "429", answer: status(429, ""), status: sink.Retryable},
		{name: "429 with fractional Retry-After", answer: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "1.5") // not RFC 9110, but sent: the one parser reads it
			w.WriteHeader(429)
		}, status: sink.Retryable, after: 1500 * time.Millisecond},
		{name: "400", answer: status(400, "bad payload"), status: sink.Permanent, inText: "bad payload"},
		{name: "404", answer: status(404, ""), status: sink.Permanent},
		{name: "redirect", answer: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, status: sink.Permanent, inText: "redirects are not followed"},
		{name: "wrong secret", config: []any{"secret", "not-the-secret"}, status: sink.Permanent, inText: "bad signature"},
		{name: "timeout", answer: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, config: []any{"timeout", "200ms"}, status: sink.Retryable, inText: "timeout"},
		{name: "connection refused", closed: true, status: sink.Retryable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			rc.answer = tt.answer
			if tt.closed {
				rc.Close()
			}
			p := sinktest.Start(t, plugin, config(rc.URL+"/hook?token=url-secret", tt.config...))
			res, err := p.Deliver(t.Context(), []sink.Record{sinktest.Record(t, sinktest.Alert("llm", "llm down"))})
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Status != tt.status || r.RetryAfter != tt.after || !strings.Contains(r.Reason, tt.inText) {
				t.Errorf("result %+v, want %v after %v with %q", r, tt.status, tt.after, tt.inText)
			}
			if strings.Contains(r.Reason, "url-secret") {
				t.Errorf("reason leaks the URL: %s", r.Reason)
			}
		})
	}
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]map[string]any{
		"no url":            {"secret": "s"},
		"bad url":           {"url": "ftp://x"},
		"bad format":        {"url": "http://127.0.0.1:1", "format": "slack"},
		"signature header":  {"url": "http://127.0.0.1:1", "headers": map[string]string{"x-agent-signature": "forged"}},
		"misspelt key":      {"url": "http://127.0.0.1:1", "secrets": "s"},
		"malformed timeout": {"url": "http://127.0.0.1:1", "timeout": "quick"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := sink.Start(t.Context(), sinktest.Spec(t, plugin, cfg))
			if !errors.Is(err, sink.ErrConfig) {
				t.Errorf("start: %v, want ErrConfig", err)
			}
		})
	}
}
