package simulator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStatusFaults(t *testing.T) {
	tests := []struct {
		name     string
		service  string
		fault    string // one YAML flow mapping
		req      req
		status   int
		check    func(t *testing.T, r result)
		noEffect bool
	}{
		{
			name: "elevenlabs quota_exceeded", service: ServiceElevenLabs,
			fault: "{kind: status, status: 401, code: quota_exceeded}", req: ttsReq("c", "hi"), status: 401,
			check: func(t *testing.T, r result) {
				d := r.json(t)["detail"]
				if dig(d, "code") != "quota_exceeded" || dig(d, "type") != "quota_error" || dig(d, "message") == "" {
					t.Errorf("detail = %v", d)
				}
			},
		},
		{
			name: "elevenlabs rate limit with Retry-After seconds", service: ServiceElevenLabs,
			fault: `{kind: status, status: 429, retry_after: "7"}`, req: ttsReq("c", "hi"), status: 429,
			check: func(t *testing.T, r result) {
				if r.header.Get("Retry-After") != "7" || dig(r.json(t), "detail", "code") != "rate_limit_exceeded" {
					t.Errorf("Retry-After %q body %s", r.header.Get("Retry-After"), r.body)
				}
			},
		},
		{
			name: "llm insufficient_quota must not be retried", service: ServiceLLM,
			fault: `{kind: status, status: 429, code: insufficient_quota, headers: {x-should-retry: "false"}}`,
			req:   chatReq("c", "sk", "hi"), status: 429,
			check: func(t *testing.T, r result) {
				e := r.json(t)["error"]
				if dig(e, "type") != "insufficient_quota" || dig(e, "code") != "insufficient_quota" ||
					r.header.Get("x-should-retry") != "false" || r.header.Get("Retry-After") != "" {
					t.Errorf("error %v headers %v", e, r.header)
				}
			},
		},
		{
			name: "llm 429 with Retry-After date", service: ServiceLLM,
			fault: `{kind: status, status: 429, retry_after: "date+7s"}`, req: chatReq("c", "sk", "hi"), status: 429,
			check: func(t *testing.T, r result) {
				at, err := http.ParseTime(r.header.Get("Retry-After"))
				if d := time.Until(at); err != nil || d < 5*time.Second || d > 8*time.Second {
					t.Errorf("Retry-After %q: %v, %v from now", r.header.Get("Retry-After"), err, d)
				}
				if dig(r.json(t), "error", "type") != "requests" {
					t.Errorf("body %s", r.body)
				}
			},
		},
		{
			name: "llm 401 after key rotation", service: ServiceLLM,
			fault: "{kind: status, status: 401}", req: chatReq("c", "sk", "hi"), status: 401,
			check: func(t *testing.T, r result) {
				if e := r.json(t)["error"]; dig(e, "code") != "invalid_api_key" || dig(e, "type") != "invalid_request_error" {
					t.Errorf("error %v", e)
				}
			},
		},
		{
			name: "llm 529 overloaded", service: ServiceLLM,
			fault: "{kind: status, status: 529}", req: chatReq("c", "sk", "hi"), status: 529,
			check: func(t *testing.T, r result) {
				if dig(r.json(t), "error", "type") != "overloaded_error" {
					t.Errorf("body %s", r.body)
				}
			},
		},
		{
			name: "crm ten-secondly limit", service: ServiceCRM,
			fault: "{kind: status, status: 429}", req: crmCreateReq("c"), status: 429,
			check: func(t *testing.T, r result) {
				m := r.json(t)
				if m["status"] != "error" || m["errorType"] != "RATE_LIMIT" || m["policyName"] != "TEN_SECONDLY_ROLLING" || m["message"] == "" {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "crm daily limit", service: ServiceCRM,
			fault: "{kind: status, status: 429, policy: DAILY}", req: crmCreateReq("c"), status: 429,
			check: func(t *testing.T, r result) {
				if m := r.json(t); m["policyName"] != "DAILY" {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "telephony 20429", service: ServiceTelephony,
			fault: `{kind: status, status: 429, code: "20429"}`, req: placeCallReq("c", "+15551230001"), status: 429,
			check: func(t *testing.T, r result) {
				m := r.json(t)
				if m["code"] != float64(20429) || m["status"] != float64(429) || !strings.Contains(m["more_info"].(string), "20429") {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "telephony 21210 unverified caller id", service: ServiceTelephony,
			fault: `{kind: status, status: 400, code: "21210"}`, req: placeCallReq("c", "+15551230001"), status: 400,
			check: func(t *testing.T, r result) {
				if m := r.json(t); m["code"] != float64(21210) || m["message"] == "" {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "telegram flood wait", service: ServiceTelegram,
			fault: `{kind: status, status: 429, retry_after: "3"}`, req: telegramReq("alert"), status: 429,
			check: func(t *testing.T, r result) {
				m := r.json(t)
				if m["ok"] != false || m["error_code"] != float64(429) || dig(m, "parameters", "retry_after") != float64(3) ||
					m["description"] != "Too Many Requests: retry after 3" {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "telegram bot blocked", service: ServiceTelegram,
			fault: "{kind: status, status: 403}", req: telegramReq("alert"), status: 403,
			check: func(t *testing.T, r result) {
				if m := r.json(t); m["description"] != "Forbidden: bot was blocked by the user" {
					t.Errorf("body %v", m)
				}
			},
		},
		{
			name: "sheets quota", service: ServiceSheets,
			fault: "{kind: status, status: 429}", req: sheetsReq("Log!A1", [][]any{{"x"}}), status: 429,
			check: func(t *testing.T, r result) {
				e := r.json(t)["error"]
				if dig(e, "status") != "RESOURCE_EXHAUSTED" || dig(e, "code") != float64(429) {
					t.Errorf("error %v", e)
				}
			},
		},
		{
			name: "webhook 503", service: ServiceWebhook,
			fault: "{kind: status, status: 503}", req: webhookReq("ops", `{"status":"firing"}`, nil), status: 503,
			check: func(t *testing.T, r result) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, "name: x\nservices:\n  "+tt.service+": {faults: ["+tt.fault+"]}\n", nil)
			r := tt.req.do(t, s, nil)
			if r.err != nil || r.status != tt.status {
				t.Fatalf("status %d err %v, want %d: %s", r.status, r.err, tt.status, r.body)
			}
			tt.check(t, r)
			if n := s.SideEffects(tt.service, "c"); n != 0 {
				t.Errorf("side effects = %d, want none for a rejected request", n)
			}
			if got := s.Requests(tt.service)[tt.status]; got != 1 {
				t.Errorf("Requests[%d] = %d, want 1", tt.status, got)
			}
		})
	}
}

// TestDeliveryFaults covers the faults that spoil an answer on the wire.
func TestDeliveryFaults(t *testing.T) {
	tests := []struct {
		name    string
		service string
		fault   string
		req     req
		effects int // side effects: the work done or not
		check   func(t *testing.T, r result)
	}{
		{
			name: "refuse", service: ServiceLLM, fault: "{kind: refuse}", req: chatReq("c", "sk", "hi"),
			check: func(t *testing.T, r result) {
				if r.err == nil {
					t.Errorf("request succeeded with %d", r.status)
				}
			},
		},
		{
			name: "reset mid-body", service: ServiceElevenLabs, fault: "{kind: reset}", req: ttsReq("c", strings.Repeat("long text ", 50)), effects: 1,
			check: func(t *testing.T, r result) {
				if r.err == nil || r.status != 200 || len(r.body) == 0 {
					t.Errorf("status %d err %v after %d bytes: want headers, part of the body, then an error", r.status, r.err, len(r.body))
				}
			},
		},
		{
			name: "malformed JSON", service: ServiceLLM, fault: "{kind: malformed}", req: chatReq("c", "sk", "hi"), effects: 1,
			check: func(t *testing.T, r result) {
				if r.err != nil || r.status != 200 || json.Valid(r.body) || !strings.HasPrefix(string(r.body), "{") {
					t.Errorf("status %d err %v body %q", r.status, r.err, r.body)
				}
			},
		},
		{
			name: "truncated JSON", service: ServiceCRM, fault: "{kind: truncated}", req: crmCreateReq("c"), effects: 1,
			check: func(t *testing.T, r result) {
				if r.err != nil || r.status != 201 || json.Valid(r.body) || len(r.body) < 10 ||
					r.header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
					t.Errorf("status %d err %v body %q", r.status, r.err, r.body)
				}
			},
		},
		{
			name: "html 502 from a proxy", service: ServiceLLM, fault: "{kind: html502}", req: chatReq("c", "sk", "hi"),
			check: func(t *testing.T, r result) {
				if r.status != 502 || r.header.Get("Content-Type") != "text/html" || !strings.Contains(string(r.body), "502 Bad Gateway") {
					t.Errorf("status %d type %q body %q", r.status, r.header.Get("Content-Type"), r.body)
				}
			},
		},
		{
			name: "200 with empty audio", service: ServiceElevenLabs, fault: "{kind: empty_body}", req: ttsReq("c", "hi"), effects: 1,
			check: func(t *testing.T, r result) {
				if r.err != nil || r.status != 200 || r.header.Get("Content-Type") != "audio/mpeg" || len(r.body) != 0 {
					t.Errorf("status %d type %q %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, "name: x\nservices:\n  "+tt.service+": {faults: ["+strings.TrimSuffix(tt.fault, "}")+", count: 1}]}\n", nil)
			tt.check(t, tt.req.do(t, s, nil))
			if n := s.SideEffects(tt.service, "c"); n != tt.effects {
				t.Errorf("side effects = %d, want %d", n, tt.effects)
			}
			// count: 1, so the next request finds the service recovered.
			if r := tt.req.do(t, s, nil); r.err != nil || r.status >= 300 {
				t.Errorf("after the fault: status %d err %v", r.status, r.err)
			}
		})
	}
}

func TestLostResponse(t *testing.T) {
	s := start(t, "name: x\nservices:\n  crm: {faults: [{kind: lost_response, count: 1}]}\n", nil)
	r := crmCreateReq("call-5").do(t, s, nil)
	if r.err == nil {
		t.Fatalf("lost response answered %d", r.status)
	}
	if n := s.SideEffects(ServiceCRM, "call-5"); n != 1 {
		t.Fatalf("side effects after the lost response = %d, want 1: the record was created", n)
	}
	// A client that looks up before creating finds the record ...
	if sr := crmSearchReq("call-5").do(t, s, nil).json(t); sr["total"] != float64(1) {
		t.Errorf("search after the lost response = %v", sr)
	}
	// ... and a naive retry makes a duplicate, which the counter shows.
	if r := crmCreateReq("call-5").do(t, s, nil); r.status != 201 {
		t.Fatalf("retry: %d %v", r.status, r.err)
	}
	if n := s.SideEffects(ServiceCRM, "call-5"); n != 2 {
		t.Errorf("side effects = %d, want 2 (a duplicate)", n)
	}
	// The client may see the connection close before the server has
	// counted the unanswered request.
	poll(t, "one unanswered request counted", func() bool { return s.Requests(ServiceCRM)[0] == 1 })
}

func TestSlow(t *testing.T) {
	s := start(t, "name: x\nservices:\n  llm: {faults: [{kind: slow, delay: 300ms}]}\n", nil)

	impatient := &http.Client{Timeout: 100 * time.Millisecond}
	if r := chatReq("call-1", "sk", "hi").do(t, s, impatient); r.err == nil {
		t.Fatalf("a 300ms answer beat a 100ms timeout: %d", r.status)
	}
	// The server finishes the work after the client gave up.
	poll(t, "the completion behind the timeout", func() bool { return s.SideEffects(ServiceLLM, "call-1") == 1 })

	began := time.Now()
	r := chatReq("call-2", "sk", "hi").do(t, s, nil)
	if took := time.Since(began); r.status != 200 || took < 300*time.Millisecond {
		t.Errorf("status %d after %v, want 200 after at least 300ms", r.status, took)
	}
}

func TestStall(t *testing.T) {
	t.Run("resumes", func(t *testing.T) {
		s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: stall, delay: 300ms}]}\n", nil)
		q := ttsReq("c", strings.Repeat("words ", 100))
		hr, _ := http.NewRequestWithContext(t.Context(), q.method, s.URL()+q.path, strings.NewReader(q.body))
		for k, v := range q.header {
			hr.Header.Set(k, v)
		}
		began := time.Now()
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		headers := time.Since(began)
		body, err := io.ReadAll(resp.Body)
		whole := time.Since(began)
		if err != nil || !isMP3(body) || resp.ContentLength != int64(len(body)) {
			t.Fatalf("body %d bytes of %d, err %v", len(body), resp.ContentLength, err)
		}
		if headers > 250*time.Millisecond || whole < 300*time.Millisecond {
			t.Errorf("headers after %v, body after %v: want headers at once and the body after the stall", headers, whole)
		}
	})
	t.Run("until the client leaves", func(t *testing.T) {
		s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: stall}]}\n", nil)
		r := ttsReq("c", strings.Repeat("words ", 100)).do(t, s, &http.Client{Timeout: 300 * time.Millisecond})
		if r.status != 200 || r.err == nil || len(r.body) == 0 {
			t.Errorf("status %d, %d bytes, err %v: want headers, half the body, then a timeout", r.status, len(r.body), r.err)
		}
	})
}

func TestConcurrencyLimit(t *testing.T) {
	s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: concurrency, limit: 2, delay: 800ms}]}\n", nil)
	var wg sync.WaitGroup
	results := make([]result, 4)
	gate := make(chan struct{})
	for i := range results {
		wg.Go(func() {
			<-gate
			results[i] = ttsReq("c"+strconv.Itoa(i), "hello").do(t, s, nil)
		})
	}
	close(gate)
	wg.Wait()
	count := map[int]int{}
	for _, r := range results {
		count[r.status]++
		if r.status == 429 {
			if code := dig(r.json(t), "detail", "code"); code != "concurrent_limit_exceeded" {
				t.Errorf("429 code = %v", code)
			}
		}
	}
	if count[200] != 2 || count[429] != 2 {
		t.Errorf("statuses = %v, want two 200 and two 429", count)
	}
	// The slots are free again once the admitted requests are over.
	if r := ttsReq("c9", "hello").do(t, s, nil); r.status != 200 {
		t.Errorf("after the burst: %d", r.status)
	}
}

func TestBurstLimit(t *testing.T) {
	t.Run("crm ten-secondly", func(t *testing.T) {
		clk := newClock()
		s := start(t, "name: x\nservices:\n  crm: {faults: [{kind: burst, limit: 5, window: 10s}]}\n", clk)
		for i := range 5 {
			r := crmCreateReq("c"+strconv.Itoa(i)).do(t, s, nil)
			if r.status != 201 || r.header.Get("X-HubSpot-RateLimit-Remaining") != strconv.Itoa(4-i) || r.header.Get("X-HubSpot-RateLimit-Max") != "5" {
				t.Fatalf("request %d: %d remaining %q", i, r.status, r.header.Get("X-HubSpot-RateLimit-Remaining"))
			}
			clk.Advance(time.Second)
		}
		r := crmCreateReq("c5").do(t, s, nil)
		if m := r.json(t); r.status != 429 || m["errorType"] != "RATE_LIMIT" || m["policyName"] != "TEN_SECONDLY_ROLLING" {
			t.Fatalf("sixth request: %d %v", r.status, m)
		}
		clk.Advance(5 * time.Second) // the first request leaves the window
		if r := crmCreateReq("c6").do(t, s, nil); r.status != 201 {
			t.Errorf("after the window: %d", r.status)
		}
		if n := s.SideEffects(ServiceCRM, "c5"); n != 0 {
			t.Errorf("a rate-limited create made a record")
		}
	})
	t.Run("llm headers count down", func(t *testing.T) {
		clk := newClock()
		s := start(t, "name: x\nservices:\n  llm: {faults: [{kind: burst, limit: 3, window: 1m}]}\n", clk)
		for i := range 3 {
			r := chatReq("c", "sk", "hi").do(t, s, nil)
			if r.status != 200 || r.header.Get("x-ratelimit-remaining-requests") != strconv.Itoa(2-i) || r.header.Get("x-ratelimit-limit-requests") != "3" {
				t.Fatalf("request %d: %d remaining %q", i, r.status, r.header.Get("x-ratelimit-remaining-requests"))
			}
		}
		r := chatReq("c", "sk", "hi").do(t, s, nil)
		if r.status != 429 || r.header.Get("Retry-After") != "60" || r.header.Get("x-ratelimit-remaining-requests") != "0" ||
			r.header.Get("x-ratelimit-reset-requests") != "1m0s" || dig(r.json(t), "error", "code") != "rate_limit_exceeded" {
			t.Fatalf("fourth request: %d %v %s", r.status, r.header, r.body)
		}
		clk.Advance(time.Minute)
		if r := chatReq("c", "sk", "hi").do(t, s, nil); r.status != 200 || r.header.Get("x-ratelimit-remaining-requests") != "2" {
			t.Errorf("after the window: %d remaining %q", r.status, r.header.Get("x-ratelimit-remaining-requests"))
		}
	})
}

func TestBurstCountsAnsweredRequests(t *testing.T) {
	s := start(t, "name: x\nservices:\n  llm: {faults: [{kind: status, status: 429, count: 2}, {kind: burst, limit: 4, window: 1m}]}\n", nil)
	for i, want := range []struct {
		status    int
		remaining string
	}{{429, "3"}, {429, "2"}, {200, "1"}, {200, "0"}, {429, "0"}} {
		r := chatReq("c", "sk", "hi").do(t, s, nil)
		if r.status != want.status || r.header.Get("x-ratelimit-remaining-requests") != want.remaining {
			t.Errorf("request %d: %d remaining %q, want %d %s", i+1, r.status, r.header.Get("x-ratelimit-remaining-requests"), want.status, want.remaining)
		}
	}
}

// TestSlowHoldsConcurrencySlot: a slow answer from a fault listed first
// still occupies one of the plan's in-flight slots.
func TestSlowHoldsConcurrencySlot(t *testing.T) {
	s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: slow, delay: 600ms, count: 1}, {kind: concurrency, limit: 1}]}\n", nil)
	slow := make(chan result, 1)
	go func() { slow <- ttsReq("c1", "hi").do(t, s, nil) }()
	poll(t, "the slow request to take its slot", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.faults[ServiceElevenLabs][1].inflight == 1
	})
	if r := ttsReq("c2", "hi").do(t, s, nil); r.status != 429 || dig(r.json(t), "detail", "code") != "concurrent_limit_exceeded" {
		t.Errorf("second request while the first is in flight: %d %s", r.status, r.body)
	}
	if r := <-slow; r.status != 200 {
		t.Errorf("slow request: %d %v", r.status, r.err)
	}
	if r := ttsReq("c3", "hi").do(t, s, nil); r.status != 200 {
		t.Errorf("after the slow request: %d", r.status)
	}
}

func TestUnknownEndpoint(t *testing.T) {
	s := start(t, "", nil)
	for _, tt := range []struct {
		path string
		key  []string
	}{
		{"/elevenlabs/v1/voices/nope", []string{"detail", "code"}},
		{"/llm/v1/embeddings", []string{"error", "code"}},
		{"/telegram/bot1:SECRET", []string{"description"}},
	} {
		r := req{method: "GET", path: tt.path}.do(t, s, nil)
		if r.status != 404 || dig(r.json(t), tt.key...) == nil || strings.Contains(string(r.body), "SECRET") {
			t.Errorf("%s: %d %s", tt.path, r.status, r.body)
		}
	}
}

// TestHandler mounts the simulator on a server of the test's own.
func TestHandler(t *testing.T) {
	s := New(Scenario{Services: map[string]Service{ServiceCRM: {Faults: []Fault{{Kind: KindLostResponse, Count: 1}}}}}, nil)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	q := crmCreateReq("c")
	hr, _ := http.NewRequestWithContext(t.Context(), q.method, ts.URL+q.path, strings.NewReader(q.body))
	for k, v := range q.header {
		hr.Header.Set(k, v)
	}
	if resp, err := ts.Client().Do(hr); err == nil {
		resp.Body.Close()
		t.Fatalf("lost response answered %d", resp.StatusCode)
	}
	if n := s.SideEffects(ServiceCRM, "c"); n != 1 {
		t.Errorf("side effects = %d, want 1", n)
	}
}

func TestFlap(t *testing.T) {
	tests := []struct {
		fault string
		want  []int
	}{
		{"{kind: flap}", []int{503, 200, 503, 200, 503}},
		{"{kind: flap, every: 3, status: 500}", []int{500, 200, 200, 500, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.fault, func(t *testing.T) {
			s := start(t, "name: x\nservices:\n  llm: {faults: ["+tt.fault+"]}\n", nil)
			for i, want := range tt.want {
				if r := chatReq("c", "sk", "hi").do(t, s, nil); r.status != want {
					t.Errorf("request %d: %d, want %d", i+1, r.status, want)
				}
			}
		})
	}
	t.Run("period", func(t *testing.T) {
		clk := newClock()
		s := start(t, "name: x\nservices:\n  telephony: {faults: [{kind: flap, period: 1m}]}\n", clk)
		for i, want := range []int{503, 503, 201, 201, 503} {
			if r := placeCallReq("c", "+15551230001").do(t, s, nil); r.status != want {
				t.Errorf("request %d at %v: %d, want %d", i+1, clk.Now().Format(time.TimeOnly), r.status, want)
			}
			clk.Advance(30 * time.Second)
		}
	})
}

func TestShallowHealth(t *testing.T) {
	user := req{method: "GET", path: "/elevenlabs/v1/user", header: map[string]string{"xi-api-key": "xi"}}
	models := req{method: "GET", path: "/elevenlabs/v1/models", header: map[string]string{"xi-api-key": "xi"}}
	tts := ttsReq("c", "hi")

	t.Run("data fails, health OK", func(t *testing.T) {
		s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: status, status: 503}]}\n", nil)
		for _, step := range []struct {
			q    req
			want int
		}{{tts, 503}, {user, 200}, {models, 200}, {tts, 503}} {
			if r := step.q.do(t, s, nil); r.status != step.want {
				t.Errorf("%s: %d, want %d", step.q.path, r.status, step.want)
			}
		}
	})
	t.Run("endpoint all: health fails while data requests use up the count", func(t *testing.T) {
		s := start(t, "name: x\nservices:\n  elevenlabs: {faults: [{kind: status, status: 503, count: 2, endpoint: all}]}\n", nil)
		for i, step := range []struct {
			q    req
			want int
		}{{user, 503}, {user, 503}, {tts, 503}, {user, 503}, {tts, 503}, {user, 200}, {tts, 200}} {
			if r := step.q.do(t, s, nil); r.status != step.want {
				t.Errorf("step %d %s: %d, want %d", i, step.q.path, r.status, step.want)
			}
		}
	})
}

func TestMatch(t *testing.T) {
	s := start(t, `name: x
services:
  llm: {faults: [{kind: status, status: 500, match: Alice}]}
  elevenlabs: {faults: [{kind: status, status: 400, code: voice_not_found, match: /text-to-speech/badvoice}]}
`, nil)
	if r := chatReq("c", "sk", "Contact name: Alice").do(t, s, nil); r.status != 500 {
		t.Errorf("Alice: %d, want 500", r.status)
	}
	if r := chatReq("c", "sk", "Contact name: Bob").do(t, s, nil); r.status != 200 {
		t.Errorf("Bob: %d, want 200", r.status)
	}
	bad := ttsReq("c", "hi")
	bad.path = "/elevenlabs/v1/text-to-speech/badvoice"
	if r := bad.do(t, s, nil); r.status != 400 || dig(r.json(t), "detail", "code") != "voice_not_found" {
		t.Errorf("bad voice: %d %s", r.status, r.body)
	}
	if r := ttsReq("c", "hi").do(t, s, nil); r.status != 200 {
		t.Errorf("good voice: %d", r.status)
	}
}

func TestLatency(t *testing.T) {
	// Wide margins: the bounds tell "has the base latency" from "has not"
	// on a busy machine.
	s := start(t, "name: x\nlatency: 1s\nservices:\n  crm: {latency: 10ms}\n", nil)
	for _, tt := range []struct {
		q        req
		min, max time.Duration
	}{
		{chatReq("c", "sk", "hi"), time.Second, 3 * time.Second},
		{crmCreateReq("c"), 10 * time.Millisecond, 900 * time.Millisecond},
		{telegramReq("not a provider"), 0, 900 * time.Millisecond},
	} {
		began := time.Now()
		r := tt.q.do(t, s, nil)
		if took := time.Since(began); r.status >= 300 || took < tt.min || took > tt.max {
			t.Errorf("%s: %d after %v, want between %v and %v", tt.q.path, r.status, took, tt.min, tt.max)
		}
	}
}

func TestCloseEndsStalls(t *testing.T) {
	s := New(Scenario{Services: map[string]Service{ServiceLLM: {Faults: []Fault{{Kind: KindStall}}}}}, nil)
	if err := s.Start(context.Background(), "127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() { done <- chatReq("c", "sk", "hi").do(t, s, nil) }()
	poll(t, "the stalled request", func() bool { return s.SideEffects(ServiceLLM, "c") == 1 })
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	select {
	case r := <-done:
		if r.err == nil {
			t.Errorf("a stalled answer completed after Close")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close left a stalled request hanging")
	}
}
