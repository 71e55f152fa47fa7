package simulator

import (
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSeed is the seed scenario from its file: four 503 system_busy, then recovery.
func TestSeed(t *testing.T) {
	sc, err := LoadScenario("../../scenarios/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := New(sc, nil)
	if err := s.Start(t.Context(), "127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A health probe in between neither fails nor uses up the count.
	health := req{method: "GET", path: "/elevenlabs/v1/user", header: map[string]string{"xi-api-key": "xi-test"}}
	for i := 1; i <= 4; i++ {
		r := ttsReq("call-1", "Hello Alice").do(t, s, nil)
		if r.err != nil || r.status != 503 {
			t.Fatalf("try %d: status %d err %v, want 503", i, r.status, r.err)
		}
		d := r.json(t)["detail"]
		if dig(d, "code") != "system_busy" || dig(d, "status") != "system_busy" || dig(d, "message") == "" || dig(d, "request_id") == "" {
			t.Errorf("try %d: detail = %v", i, d)
		}
		if h := health.do(t, s, nil); h.status != 200 {
			t.Errorf("health during outage: %d", h.status)
		}
	}
	r := ttsReq("call-2", "Hello Bob").do(t, s, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "audio/mpeg" || !isMP3(r.body) {
		t.Fatalf("after recovery: status %d type %q body %q...", r.status, r.header.Get("Content-Type"), r.body[:min(10, len(r.body))])
	}
	if got := s.SideEffects(ServiceElevenLabs, "call-1"); got != 0 {
		t.Errorf("side effects for the failed call = %d, want 0", got)
	}
	if got := s.SideEffects(ServiceElevenLabs, "call-2"); got != 1 {
		t.Errorf("side effects for the recovered call = %d, want 1", got)
	}
	if got, want := s.Requests(ServiceElevenLabs), map[int]int{503: 4, 200: 5}; !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

func TestElevenLabs(t *testing.T) {
	s := start(t, "name: x\nservices:\n  elevenlabs: {api_key: xi-test}\n", nil)
	long := strings.Repeat("a", 10_001)
	tests := []struct {
		name     string
		req      req
		status   int
		wantCode string
	}{
		{"render", ttsReq("c1", "Hello Alice, this is a reminder."), 200, ""},
		{"stream", func() req {
			q := ttsReq("c1", "Hello again")
			q.path = "/elevenlabs/v1/text-to-speech/v1/stream"
			return q
		}(), 200, ""},
		{"wrong key", func() req { q := ttsReq("c1", "x"); q.header["xi-api-key"] = "old"; return q }(), 401, "invalid_api_key"},
		{"no text", ttsReq("c1", ""), 422, "validation_error"},
		{"too long", ttsReq("c1", long), 400, "max_character_limit_exceeded"},
		{"bad format", func() req {
			q := ttsReq("c1", "x")
			q.path = "/elevenlabs/v1/text-to-speech/v1?output_format=wav"
			return q
		}(), 422, "validation_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req.do(t, s, nil)
			if r.err != nil || r.status != tt.status {
				t.Fatalf("status %d err %v, want %d: %s", r.status, r.err, tt.status, r.body)
			}
			if tt.wantCode == "" {
				if !isMP3(r.body) || r.header.Get("x-character-count") == "" {
					t.Errorf("not audio: %q", r.body[:min(16, len(r.body))])
				}
				return
			}
			if got := dig(r.json(t), "detail", "code"); got != tt.wantCode {
				t.Errorf("detail.code = %v, want %s", got, tt.wantCode)
			}
		})
	}
	if got := s.SideEffects(ServiceElevenLabs, "c1"); got != 2 {
		t.Errorf("side effects = %d, want 2 renders", got)
	}
	for _, path := range []string{"/elevenlabs/v1/user", "/elevenlabs/v1/models"} {
		if r := (req{method: "GET", path: path, header: map[string]string{"xi-api-key": "xi-test"}}).do(t, s, nil); r.status != 200 {
			t.Errorf("GET %s = %d", path, r.status)
		}
	}
}

func TestLLM(t *testing.T) {
	s := start(t, "", nil)
	tests := []struct {
		prompt, want string
	}{
		{"Write a short call script. Contact name: Alice Smith. Purpose: confirm appointment.", "Hi Alice,"},
		{`Write a call script for this contact: {"name": "Bob Jones", "phone": "+1555****003"}`, "Hi Bob,"},
		{"Write a short call script for Carla.", "Hi Carla,"},
		{"Write a short call script.", "Hi there,"},
	}
	remaining := -1
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			r := chatReq("call-7", "sk-test", tt.prompt).do(t, s, nil)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			m := r.json(t)
			content, _ := dig(m["choices"].([]any)[0], "message", "content").(string)
			if m["object"] != "chat.completion" || !strings.HasPrefix(content, tt.want) {
				t.Errorf("object %v content %q, want it to start %q", m["object"], content, tt.want)
			}
			if dig(m, "usage", "total_tokens") == nil {
				t.Errorf("no usage: %v", m)
			}
			rem, err := strconv.Atoi(r.header.Get("x-ratelimit-remaining-requests"))
			if err != nil || (remaining >= 0 && rem != remaining-1) || r.header.Get("x-ratelimit-reset-requests") == "" {
				t.Errorf("x-ratelimit-remaining-requests = %q after %d", r.header.Get("x-ratelimit-remaining-requests"), remaining)
			}
			remaining = rem
		})
	}
	if got := s.SideEffects(ServiceLLM, "call-7"); got != len(tests) {
		t.Errorf("side effects = %d, want %d", got, len(tests))
	}
	if r := chatReq("c", "", "x").do(t, s, nil); r.status != 401 || dig(r.json(t), "error", "code") != "invalid_api_key" {
		t.Errorf("no key: %d %s", r.status, r.body)
	}
	if r := (req{method: "GET", path: "/llm/v1/models", header: map[string]string{"Authorization": "Bearer sk"}}).do(t, s, nil); r.status != 200 {
		t.Errorf("models: %d", r.status)
	}
}

func TestCRM(t *testing.T) {
	s := start(t, "name: x\nservices:\n  crm: {unique_property: agent_call_id}\n", nil)
	r := crmCreateReq("call-9").do(t, s, nil)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	m := r.json(t)
	id, _ := m["id"].(string)
	if id == "" || dig(m, "properties", "hs_call_duration") != "42000" || m["createdAt"] == nil {
		t.Errorf("create answer = %v", m)
	}
	if r.header.Get("X-HubSpot-RateLimit-Remaining") == "" {
		t.Error("no X-HubSpot-RateLimit-Remaining header")
	}

	sr := crmSearchReq("call-9").do(t, s, nil).json(t)
	results, _ := sr["results"].([]any)
	if sr["total"] != float64(1) || len(results) != 1 || dig(results[0], "id") != id {
		t.Errorf("search = %v", sr)
	}
	if sr := crmSearchReq("call-other").do(t, s, nil).json(t); sr["total"] != float64(0) {
		t.Errorf("search for an unknown call = %v", sr)
	}

	if r := crmCreateReq("call-9").do(t, s, nil); r.status != 409 || r.json(t)["category"] != "CONFLICT" {
		t.Errorf("duplicate on a unique property: %d %s", r.status, r.body)
	}
	get := req{method: "GET", path: "/crm/v3/objects/calls/call-9?idProperty=agent_call_id", header: map[string]string{"Authorization": "Bearer pat"}}
	if r := get.do(t, s, nil); r.status != 200 || r.json(t)["id"] != id {
		t.Errorf("get by idProperty: %d %s", r.status, r.body)
	}
	bad := crmCreateReq("call-10")
	bad.body = `{"properties":{"hs_call_status":"completed"}}`
	if r := bad.do(t, s, nil); r.status != 400 || r.json(t)["category"] != "VALIDATION_ERROR" {
		t.Errorf("invalid create: %d %s", r.status, r.body)
	}
	if got := s.SideEffects(ServiceCRM, "call-9"); got != 1 {
		t.Errorf("side effects = %d, want 1", got)
	}
	if r := (req{method: "GET", path: "/crm/account-info/v3/details", header: map[string]string{"Authorization": "Bearer pat"}}).do(t, s, nil); r.status != 200 {
		t.Errorf("account details: %d", r.status)
	}
}

func TestTelephonyOutcomes(t *testing.T) {
	s := start(t, `name: x
services:
  telephony:
    rings: 1
    call_duration: 42s
    outcomes: {"+15551230003": busy, "+15551230004": no-answer, "+15551230005": failed}
`, nil)
	tests := []struct {
		to, want, duration string
	}{
		{"+15551230001", "completed", "42"},
		{"+15551230003", "busy", "0"},
		{"+15551230004", "no-answer", "0"},
		{"+15551230005", "failed", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			r := placeCallReq("call-"+tt.to, tt.to).do(t, s, nil)
			if r.status != 201 {
				t.Fatalf("place: %d %s", r.status, r.body)
			}
			c := r.json(t)
			sid, _ := c["sid"].(string)
			if !strings.HasPrefix(sid, "CA") || c["status"] != "queued" || c["to"] != tt.to {
				t.Fatalf("placed call = %v", c)
			}
			if got := getCallReq(sid).do(t, s, nil).json(t); got["status"] != "ringing" {
				t.Errorf("first poll status = %v, want ringing", got["status"])
			}
			got := getCallReq(sid).do(t, s, nil).json(t)
			if got["status"] != tt.want || got["duration"] != tt.duration {
				t.Errorf("final status %v duration %v, want %s %s", got["status"], got["duration"], tt.want, tt.duration)
			}
			if n := s.SideEffects(ServiceTelephony, "call-"+tt.to); n != 1 {
				t.Errorf("side effects = %d", n)
			}
		})
	}

	invalid := []struct {
		name   string
		req    req
		status int
		code   float64
	}{
		{"not E.164", placeCallReq("c", "5551230003"), 400, 21211},
		{"wrong token account", func() req {
			q := placeCallReq("c", "+15551230001")
			q.header["Authorization"] = basic("ACother", "tok")
			return q
		}(), 401, 20003},
		{"unknown call", getCallReq("CAnope"), 404, 20404},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req.do(t, s, nil)
			m := r.json(t)
			if r.status != tt.status || m["code"] != tt.code || m["status"] != float64(tt.status) || m["more_info"] == "" {
				t.Errorf("%d %v, want %d code %v", r.status, m, tt.status, tt.code)
			}
		})
	}
	health := req{method: "GET", path: "/telephony/2010-04-01/Accounts/" + account + ".json", header: map[string]string{"Authorization": basic(account, "tok")}}
	if r := health.do(t, s, nil); r.status != 200 || r.json(t)["status"] != "active" {
		t.Errorf("account: %d %s", r.status, r.body)
	}
}

// TestTelephonyRealTime: with real_time a completed call stays in progress
// for its duration in (simulated) wall time, however often it is polled,
// and only then shows completed; without it, polls alone end it.
func TestTelephonyRealTime(t *testing.T) {
	clk := newClock()
	s := start(t, `name: x
services:
  telephony:
    real_time: true
    call_duration: 60s
    outcomes: {"+15551230003": busy}
`, clk)
	r := placeCallReq("call-rt", "+15551230001").do(t, s, nil)
	if r.status != 201 {
		t.Fatalf("place: %d %s", r.status, r.body)
	}
	sid, _ := r.json(t)["sid"].(string)
	poll := func() string {
		t.Helper()
		st, _ := getCallReq(sid).do(t, s, nil).json(t)["status"].(string)
		return st
	}
	if got := poll(); got != "ringing" {
		t.Fatalf("first poll = %q, want ringing", got)
	}
	for i := range 5 {
		clk.Advance(10 * time.Second)
		if got := poll(); got != "in-progress" {
			t.Fatalf("poll %d at +%ds = %q, want in-progress", i+2, 10*(i+1), got)
		}
	}
	clk.Advance(10 * time.Second)
	if got := poll(); got != "completed" {
		t.Fatalf("poll after 60s = %q, want completed", got)
	}

	// A call that is not answered ends at once, as before.
	r = placeCallReq("call-busy", "+15551230003").do(t, s, nil)
	sid, _ = r.json(t)["sid"].(string)
	if got := poll(); got != "busy" {
		t.Fatalf("busy call first poll = %q, want busy", got)
	}
}
