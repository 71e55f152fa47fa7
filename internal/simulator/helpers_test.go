package simulator

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for windows, periods and timestamps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// start runs a simulator playing the YAML scenario on free loopback ports;
// with clk it runs on that clock.
func start(t *testing.T, scenario string, clk *fakeClock) *Server {
	t.Helper()
	sc := Scenario{Name: "test"}
	if scenario != "" {
		var err error
		if sc, err = ParseScenario([]byte(scenario)); err != nil {
			t.Fatalf("parse scenario: %v", err)
		}
	}
	s := New(sc, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	if clk != nil {
		s.now = clk.Now
		s.SetScenario(sc)
	}
	if err := s.Start(t.Context(), "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// result is one answer, or the transport error.
type result struct {
	status int
	header http.Header
	body   []byte
	err    error // the round trip's or the body read's
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %q", err, r.body)
	}
	return m
}

// req is one request to the simulator.
type req struct {
	method, path string
	header       map[string]string
	body         string
}

func (q req) do(t *testing.T, s *Server, client *http.Client) result {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	hr, err := http.NewRequestWithContext(t.Context(), q.method, s.URL()+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range q.header {
		hr.Header.Set(k, v)
	}
	resp, err := client.Do(hr)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func jsonBody(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func ttsReq(callID, text string) req {
	return req{
		method: "POST", path: "/elevenlabs/v1/text-to-speech/voice-rachel?output_format=mp3_44100_128",
		header: map[string]string{"xi-api-key": "xi-test", "Content-Type": "application/json", HeaderCallID: callID},
		body: jsonBody(map[string]any{"text": text, "model_id": "eleven_multilingual_v2",
			"voice_settings": map[string]float64{"stability": 0.5, "similarity_boost": 0.75}}),
	}
}

func chatReq(callID, key, prompt string) req {
	return req{
		method: "POST", path: "/llm/v1/chat/completions",
		header: map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json", HeaderCallID: callID},
		body: jsonBody(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{
			{"role": "system", "content": "You write short outbound call scripts."},
			{"role": "user", "content": prompt},
		}}),
	}
}

func crmCreateReq(callID string) req {
	return req{
		method: "POST", path: "/crm/v3/objects/calls",
		header: map[string]string{"Authorization": "Bearer pat-test", "Content-Type": "application/json", HeaderCallID: callID},
		body: jsonBody(map[string]any{
			"properties": map[string]any{
				"hs_timestamp": "2026-03-02T10:00:00Z", "hs_call_body": "Confirmed the appointment.",
				"hs_call_direction": "OUTBOUND", "hs_call_status": "COMPLETED", "hs_call_duration": 42000,
				"agent_call_id": callID,
			},
			"associations": []any{},
		}),
	}
}

func crmSearchReq(callID string) req {
	return req{
		method: "POST", path: "/crm/crm/v3/objects/calls/search", // base URL + HubSpot's path
		header: map[string]string{"Authorization": "Bearer pat-test", "Content-Type": "application/json"},
		body: jsonBody(map[string]any{"filterGroups": []any{map[string]any{"filters": []any{
			map[string]string{"propertyName": "agent_call_id", "operator": "EQ", "value": callID},
		}}}}),
	}
}

const account = "AC0123456789abcdef0123456789abcdef"

func placeCallReq(callID, to string) req {
	form := url.Values{"To": {to}, "From": {"+15550001111"}, "Twiml": {"<Response><Say>Hello</Say></Response>"}}
	return req{
		method: "POST", path: "/telephony/2010-04-01/Accounts/" + account + "/Calls.json",
		header: map[string]string{"Authorization": basic(account, "tok"), "Content-Type": "application/x-www-form-urlencoded", HeaderCallID: callID},
		body:   form.Encode(),
	}
}

func getCallReq(sid string) req {
	return req{
		method: "GET", path: "/telephony/2010-04-01/Accounts/" + account + "/Calls/" + sid + ".json",
		header: map[string]string{"Authorization": basic(account, "tok")},
	}
}

func basic(user, pass string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// poll waits up to two seconds for cond.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isMP3(b []byte) bool { return bytes.HasPrefix(b, []byte("ID3")) && len(b) > 400 }

// dig walks a decoded JSON value along keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
