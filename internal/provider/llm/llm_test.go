package llm

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

const testKey = "sk-test-0123456789abcdef"

// t0 is the fake clock's time; HTTP dates in Retry-After are relative to it.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// answer is one canned HTTP answer, written unkeyed in the tables.
type answer providertest.Answer

func (a answer) serve(w http.ResponseWriter) { providertest.Answer(a).Serve(w) }

func newClient(t testing.TB, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: url, APIKey: testKey, Timeout: 5 * time.Second,
		Options: map[string]string{"model": "gpt-test"}},
		append([]Option{WithClock(resiliencetest.NewClock(t0))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openai(code, typ, msg string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
	return string(b)
}

func completion(content string) string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": content}, "finish_reason": "stop"}},
	})
	return string(b)
}

// want is how a failed call must be classified; check takes the status
// from the answer.
type want = providertest.Want

func check(t *testing.T, err error, status int, w want) {
	t.Helper()
	w.Status = status
	providertest.Check(t, config.ServiceLLM, err, w, testKey)
}

func TestScriptClassifiesErrors(t *testing.T) {
	date7 := t0.Add(7 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name string
		answer
		want want
	}{
		// Retried: 408, 409, 429 rate_limit_exceeded and slow_down, 5xx, 529.
		{"408", answer{408, nil, openai("timeout", "invalid_request_error", "Request timed out.")},
			want{Category: resilience.Transient, Code: "timeout"}},
		{"409", answer{409, nil, openai("conflict", "invalid_request_error", "Conflict")},
			want{Category: resilience.Transient, Code: "conflict"}},
		{"429 rate limit, Retry-After seconds", answer{429, map[string]string{"Retry-After": "7"}, openai("rate_limit_exceeded", "requests", "Rate limit reached")},
			want{Category: resilience.Transient, Code: "rate_limit_exceeded", RetryAfter: 7 * time.Second, Msg: "Rate limit reached"}},
		{"429 rate limit, Retry-After date", answer{429, map[string]string{"Retry-After": date7}, openai("rate_limit_exceeded", "requests", "Rate limit reached")},
			want{Category: resilience.Transient, Code: "rate_limit_exceeded", RetryAfter: 7 * time.Second}},
		{"429 rate limit, retry-after-ms", answer{429, map[string]string{"retry-after-ms": "1500", "Retry-After": "2"}, openai("rate_limit_exceeded", "requests", "Rate limit reached")},
			want{Category: resilience.Transient, Code: "rate_limit_exceeded", RetryAfter: 1500 * time.Millisecond}},
		{"429 rate limit, reset header only", answer{429, map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}, openai("rate_limit_exceeded", "requests", "Rate limit reached")},
			want{Category: resilience.Transient, Code: "rate_limit_exceeded", RetryAfter: 1500 * time.Millisecond}},
		{"429 slow_down", answer{429, nil, openai("slow_down", "requests", "Please reduce the rate")},
			want{Category: resilience.Transient, Code: "slow_down"}},
		{"500", answer{500, nil, openai("", "server_error", "The server had an error")},
			want{Category: resilience.Transient, Code: "server_error"}},
		{"502 html from a proxy", answer{502, map[string]string{"Content-Type": "text/html"}, "<html><body><h1>502 Bad Gateway</h1></body></html>"},
			want{Category: resilience.Transient, Msg: "text/html answer"}},
		{"503", answer{503, map[string]string{"Retry-After": "3"}, openai("service_unavailable", "server_error", "The engine is currently overloaded")},
			want{Category: resilience.Transient, Code: "service_unavailable", RetryAfter: 3 * time.Second}},
		{"504 empty", answer{504, nil, ""},
			want{Category: resilience.Transient, Msg: "empty answer"}},
		{"529 anthropic overloaded", answer{529, nil, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
			want{Category: resilience.Transient, Code: "overloaded_error", Msg: "Overloaded"}},
		// Never retried.
		{"400", answer{400, nil, openai("invalid_request", "invalid_request_error", "you must provide a model parameter")},
			want{Category: resilience.Permanent, Code: "invalid_request"}},
		{"401 key echoed", answer{401, nil, openai("invalid_api_key", "invalid_request_error", "Incorrect API key provided: "+testKey)},
			want{Category: resilience.Permanent, Code: "invalid_api_key", Msg: "authentication failed"}},
		{"403", answer{403, nil, openai("unsupported_country_region_territory", "request_forbidden", "Country not supported")},
			want{Category: resilience.Permanent, Code: "unsupported_country_region_territory", Msg: "access denied"}},
		{"404", answer{404, nil, openai("model_not_found", "invalid_request_error", "The model does not exist")},
			want{Category: resilience.Permanent, Code: "model_not_found"}},
		{"422", answer{422, nil, openai("", "invalid_request_error", "Unprocessable")},
			want{Category: resilience.Permanent, Code: "invalid_request_error"}},
		{"429 insufficient_quota", answer{429, nil, openai("insufficient_quota", "insufficient_quota", "You exceeded your current quota")},
			want{Category: resilience.Permanent, Code: "insufficient_quota", Msg: "billing"}},
		{"429 insufficient_quota despite x-should-retry", answer{429, map[string]string{"x-should-retry": "true", "Retry-After": "1"}, openai("insufficient_quota", "insufficient_quota", "You exceeded your current quota")},
			want{Category: resilience.Permanent, Code: "insufficient_quota", RetryAfter: time.Second, Msg: "quota"}},
		// x-should-retry overrides the status.
		{"x-should-retry true on 400", answer{400, map[string]string{"x-should-retry": "true"}, openai("invalid_request", "invalid_request_error", "try again")},
			want{Category: resilience.Transient, Code: "invalid_request"}},
		{"x-should-retry false on 503", answer{503, map[string]string{"x-should-retry": "false"}, openai("service_unavailable", "server_error", "down")},
			want{Category: resilience.Permanent, Code: "service_unavailable"}},
		{"numeric code", answer{500, nil, `{"error":{"message":"boom","code":500}}`},
			want{Category: resilience.Transient, Code: "500"}},
		// A 2xx that is no completion: transient (see Client.script).
		{"200 malformed json", answer{200, nil, `{"id": "x", "choices": [{"message": {"content": "Hi`},
			want{Category: resilience.Transient, Code: CodeMalformed}},
		{"200 html", answer{200, map[string]string{"Content-Type": "text/html"}, "<html>captive portal</html>"},
			want{Category: resilience.Transient, Code: CodeMalformed, Msg: "text/html"}},
		{"200 no choices", answer{200, nil, `{"id":"x","choices":[]}`},
			want{Category: resilience.Transient, Code: CodeEmpty}},
		{"200 empty text", answer{200, nil, completion("  ")},
			want{Category: resilience.Transient, Code: CodeEmpty}},
		{"200 null content", answer{200, nil, `{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"stop"}]}`},
			want{Category: resilience.Transient, Code: CodeEmpty}},
		{"200 content filter", answer{200, nil, `{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}]}`},
			want{Category: resilience.Permanent, Code: CodeContentFilter}},
		{"200 refusal", answer{200, nil, `{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help"},"finish_reason":"stop"}]}`},
			want{Category: resilience.Permanent, Code: CodeContentFilter}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newClient(t, providertest.Server(t, providertest.Answer(tt.answer)).URL).Script(t.Context(), ScriptRequest{CallID: "c1", ContactName: "Ada"})
			if err == nil {
				t.Fatalf("Script = %q, want an error", got)
			}
			check(t, err, tt.Status, tt.want)
		})
	}
}

func TestScript(t *testing.T) {
	var req chatRequest
	var header http.Header
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, header = r.Method+" "+r.URL.Path, r.Header.Clone()
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("request body: %v", err)
		}
		answer{200, nil, completion("  Hi Ada, this is Sam.  ")}.serve(w)
	}))
	defer srv.Close()

	// A base URL written the OpenAI SDK way, with /v1, works too.
	c := newClient(t, srv.URL+"/v1")
	got, err := c.Script(t.Context(), ScriptRequest{
		CallID: "call-42", ContactName: "Ada Lovelace", Campaign: "spring",
		Vars: map[string]string{"product": "engine", "appointment": "Tuesday 10:00"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != "Hi Ada, this is Sam." {
		t.Errorf("Script = %q", got)
	}
	if path != "POST /v1/chat/completions" {
		t.Errorf("request %s", path)
	}
	for k, v := range map[string]string{"Authorization": "Bearer " + testKey, "X-Agent-Call-Id": "call-42", "Content-Type": "application/json"} {
		if header.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, header.Get(k), v)
		}
	}
	if !strings.HasPrefix(header.Get("User-Agent"), "callagent/") {
		t.Errorf("User-Agent = %q", header.Get("User-Agent"))
	}
	if req.Model != "gpt-test" || req.MaxTokens != DefaultMaxTokens || len(req.Messages) != 2 || req.Messages[0].Role != "system" {
		t.Fatalf("request = %+v", req)
	}
	user := req.Messages[1].Content
	wantUser := "Write the script for an outbound call.\nCampaign: spring\nContact name: Ada Lovelace\nDetails:\n- appointment: Tuesday 10:00\n- product: engine\n"
	if user != wantUser {
		t.Errorf("user message = %q, want %q", user, wantUser)
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name string
		answer
		want *want
	}{
		{"ok", answer{200, nil, `{"object":"list","data":[{"id":"gpt-test"}]}`}, nil},
		{"bad key", answer{401, nil, openai("invalid_api_key", "invalid_request_error", "Incorrect API key")},
			&want{Category: resilience.Permanent, Code: "invalid_api_key"}},
		{"down", answer{503, nil, openai("", "server_error", "down")},
			&want{Category: resilience.Transient, Code: "server_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := providertest.Server(t, providertest.Answer(tt.answer))
			err := newClient(t, srv.URL).Health(t.Context())
			if path := srv.LastRequest(); path != "GET /v1/models" {
				t.Errorf("health request %s", path)
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Health: %v", err)
				}
				return
			}
			check(t, err, tt.Status, *tt.want)
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Service
		err  string
	}{
		{"no base", config.Service{}, "base url is empty"},
		{"bad scheme", config.Service{BaseURL: "localhost:8080"}, "scheme"},
		{"bad max_tokens", config.Service{BaseURL: "http://127.0.0.1", Options: map[string]string{"max_tokens": "lots"}}, "max_tokens"},
		{"no key is fine", config.Service{BaseURL: "http://127.0.0.1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.err == "" {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v", c, err)
				}
				if c.http.Timeout != DefaultTimeout || c.model != DefaultModel {
					t.Errorf("defaults: timeout %s, model %s", c.http.Timeout, c.model)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("New error = %v, want one mentioning %q", err, tt.err)
			}
		})
	}
}

func BenchmarkScript(b *testing.B) {
	body := completion("Hi Ada, this is Sam calling from Northwind Health about your appointment.")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer{200, nil, body}.serve(w)
	}))
	defer srv.Close()
	c := newClient(b, srv.URL)
	req := ScriptRequest{CallID: "bench", ContactName: "Ada", Campaign: "bench", Vars: map[string]string{"product": "engine"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Script(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
