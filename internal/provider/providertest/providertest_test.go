package providertest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/resilience"
)

// recorder is a testing.TB that notes failures instead of failing.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failures []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, a...))
}

func (r *recorder) Fatalf(format string, a ...any) {
	r.Errorf(format, a...)
	runtime.Goexit()
}

func TestCheck(t *testing.T) {
	got := &resilience.Error{Service: "llm", Category: resilience.Transient, Code: "rate_limit_exceeded", StatusCode: 429,
		RetryAfter: 7 * time.Second, Message: "rate limited; key sk-secret"}
	ok := Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 429, RetryAfter: 7 * time.Second, Msg: "rate limited"}
	tests := []struct {
		name   string
		err    error
		w      Want
		hidden []string
		fails  bool
	}{
		{"match", got, ok, nil, false},
		{"wrapped", fmt.Errorf("script: %w", got), ok, nil, false},
		{"one of codes", got, Want{Category: resilience.Transient, Codes: []string{"x", "rate_limit_exceeded"}, Status: 429, RetryAfter: 7 * time.Second}, nil, false},
		{"retry after in range", got, Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 429, RetryAfter: 6 * time.Second, RetryAfterMax: 7 * time.Second}, nil, false},
		{"not classified", errors.New("plain"), ok, nil, true},
		{"other category", got, Want{Category: resilience.Permanent, Code: "rate_limit_exceeded", Status: 429, RetryAfter: 7 * time.Second}, nil, true},
		{"other code", got, Want{Category: resilience.Transient, Code: "slow_down", Status: 429, RetryAfter: 7 * time.Second}, nil, true},
		{"none of codes", got, Want{Category: resilience.Transient, Codes: []string{"x"}, Status: 429, RetryAfter: 7 * time.Second}, nil, true},
		{"other status", got, Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 503, RetryAfter: 7 * time.Second}, nil, true},
		{"retry after not exact", got, Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 429}, nil, true},
		{"retry after out of range", got, Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 429, RetryAfter: 8 * time.Second, RetryAfterMax: 9 * time.Second}, nil, true},
		{"message", got, Want{Category: resilience.Transient, Code: "rate_limit_exceeded", Status: 429, RetryAfter: 7 * time.Second, Msg: "quota"}, nil, true},
		{"shows a secret", got, ok, []string{"sk-secret"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Check(r, "llm", tt.err, tt.w, tt.hidden...)
			}()
			<-done
			if failed := len(r.failures) > 0; failed != tt.fails {
				t.Errorf("Check failed %v (%q), want %v", failed, r.failures, tt.fails)
			}
		})
	}
}

func TestServer(t *testing.T) {
	tests := []struct {
		name        string
		a           Answer
		contentType string
	}{
		{"json by default", Answer{503, map[string]string{"Retry-After": "3"}, `{"error":"busy"}`}, "application/json"},
		{"own content type", Answer{502, map[string]string{"Content-Type": "text/html", "Retry-After": "3"}, "<html>"}, "text/html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := Server(t, tt.a)
			if got := srv.LastRequest(); got != "" {
				t.Errorf("LastRequest before any = %q", got)
			}
			resp, err := http.Get(srv.URL + "/v1/models?x=1")
			if err != nil {
				t.Fatal(err)
			}
			if got := srv.LastRequest(); got != "GET /v1/models" {
				t.Errorf("LastRequest = %q, want GET /v1/models", got)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.a.Status || resp.Header.Get("Content-Type") != tt.contentType ||
				resp.Header.Get("Retry-After") != "3" || string(body) != tt.a.Body {
				t.Errorf("answer %d %v %q, want %+v with content type %s", resp.StatusCode, resp.Header, body, tt.a, tt.contentType)
			}
		})
	}
}
