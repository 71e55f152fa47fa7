package httpx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/resilience"
)

func TestParseBase(t *testing.T) {
	tests := []struct {
		raw, want, err string
	}{
		{raw: "http://127.0.0.1:8900/llm", want: "http://127.0.0.1:8900/llm"},
		{raw: "https://api.elevenlabs.io/", want: "https://api.elevenlabs.io"},
		{raw: "https://api.hubapi.com", want: "https://api.hubapi.com"},
		{raw: "", err: "empty"},
		{raw: "api.openai.com", err: "scheme"},
		{raw: "ftp://example.com", err: "scheme"},
		{raw: "http://", err: "no host"},
		{raw: "https://user:hunter2@example.com", err: "credentials"},
		{raw: "https://example.com/?key=abc", err: "query"},
		{raw: "http://[::1", err: "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, err := ParseBase(tt.raw)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseBase(%q) error = %v, want one mentioning %q", tt.raw, err, tt.err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBase(%q): %v", tt.raw, err)
			}
			if u.String() != tt.want {
				t.Errorf("ParseBase(%q) = %s, want %s", tt.raw, u, tt.want)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	tests := []struct {
		name, msg string
		secrets   []string
		want      string
	}{
		{"key", "Incorrect API key provided: sk-live-0123456789.", []string{"sk-live-0123456789"}, "Incorrect API key provided: [redacted]."},
		{"phone", "The 'To' number +14155552671 is not a valid phone number.", nil, "The 'To' number +1415****671 is not a valid phone number."},
		{"bare digits", "To: 14155552671 rejected", []string{"14155552671"}, "To: [redacted] rejected"},
		{"short secret ignored", "a b c", []string{"a"}, "a b c"},
		{"control characters", "line one\nline two\x00", nil, "line one line two"},
		{"masked stays", "call to +1415****671", nil, "call to +1415****671"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Scrub(tt.msg, tt.secrets...); got != tt.want {
				t.Errorf("Scrub(%q) = %q, want %q", tt.msg, got, tt.want)
			}
		})
	}
	long := Scrub(strings.Repeat("é", 1000))
	if n := len([]rune(long)); n != MaxMessage {
		t.Errorf("Scrub of 1000 runes kept %d, want %d", n, MaxMessage)
	}
}

func TestCategory(t *testing.T) {
	transient := []int{408, 425, 429, 500, 502, 503, 504, 529}
	permanent := []int{400, 401, 403, 404, 409, 422}
	for _, s := range transient {
		if got := Category(s); got != resilience.Transient {
			t.Errorf("Category(%d) = %s, want transient", s, got)
		}
	}
	for _, s := range permanent {
		if got := Category(s); got != resilience.Permanent {
			t.Errorf("Category(%d) = %s, want permanent", s, got)
		}
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		ct, body, want string
	}{
		{"text/html", "<html>502</html>", "http 502 Bad Gateway (text/html answer, likely from a proxy)"},
		{"", "", "http 502 Bad Gateway (empty answer)"},
		{"", "x", "http 502 Bad Gateway (untyped answer)"},
		{"application/json; charset=utf-8", "{", "http 502 Bad Gateway (unreadable json)"},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.ct != "" {
			h.Set("Content-Type", tt.ct)
		}
		if got := Describe(&Response{StatusCode: 502, Header: h, Body: []byte(tt.body)}); got != tt.want {
			t.Errorf("Describe(%q, %q) = %q, want %q", tt.ct, tt.body, got, tt.want)
		}
	}
}

// hijack answers with raw bytes, then closes (reset: with a TCP RST).
func hijack(raw string, reset bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Write([]byte(raw))
		if tcp, ok := conn.(*net.TCPConn); ok && reset {
			tcp.SetLinger(0)
		}
		conn.Close()
	}
}

func TestDoTransportErrors(t *testing.T) {
	// A port with nothing listening: bind, note the address, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	tests := []struct {
		name    string
		handler http.HandlerFunc
		url     string
		timeout time.Duration
		maxBody int64
		code    string
		cat     resilience.Category
		msg     string
	}{
		{name: "refused", url: refused, code: resilience.CodeConnectionRefused, cat: resilience.Transient},
		{name: "reset before answer", handler: hijack("", true), code: resilience.CodeConnectionReset, cat: resilience.Transient},
		{name: "closed before answer", handler: hijack("", false), code: resilience.CodeEOF, cat: resilience.Transient},
		{
			name:    "eof mid body",
			handler: hijack("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"half\":", false),
			code:    resilience.CodeEOF, cat: resilience.Transient,
		},
		{
			name:    "reset mid body",
			handler: hijack("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 50000), true),
			cat:     resilience.Transient,
		},
		{
			name: "slow headers past own timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			timeout: 50 * time.Millisecond,
			code:    resilience.CodeTimeout, cat: resilience.Transient, msg: "no complete answer within 50ms",
		},
		{
			name: "body stalls past own timeout",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "20")
				w.WriteHeader(http.StatusOK)
				w.Write([]byte("0123456789"))
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
			},
			timeout: 50 * time.Millisecond,
			code:    resilience.CodeTimeout, cat: resilience.Transient, msg: "no complete answer within 50ms",
		},
		{
			name: "too large",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte(strings.Repeat("x", 2000)))
			},
			maxBody: 1000,
			code:    CodeTooLarge, cat: resilience.Permanent,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url
			if tt.handler != nil {
				srv := httptest.NewServer(tt.handler)
				defer srv.Close()
				url = srv.URL
			}
			c := &Client{Service: "llm", HTTP: &http.Client{}, Timeout: tt.timeout, MaxBody: tt.maxBody}
			resp, err := c.Do(t.Context(), Request{Method: http.MethodGet, URL: url})
			if err == nil {
				t.Fatalf("Do = %d %q, want an error", resp.StatusCode, resp.Body)
			}
			var e *resilience.Error
			if !errors.As(err, &e) {
				t.Fatalf("Do error %v (%T) is not a *resilience.Error", err, err)
			}
			if e.Service != "llm" || e.Category != tt.cat || (tt.code != "" && e.Code != tt.code) {
				t.Errorf("Do error = %+v, want service llm, %s, code %q", e, tt.cat, tt.code)
			}
			if tt.msg != "" && e.Message != tt.msg {
				t.Errorf("message = %q, want %q", e.Message, tt.msg)
			}
			if errors.Is(err, context.Canceled) {
				t.Errorf("error %v wraps context.Canceled", err)
			}
		})
	}
}

func TestDoCallerContext(t *testing.T) {
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := &Client{Service: "crm", HTTP: &http.Client{}, Timeout: time.Minute}

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-started
			cancel()
		}()
		_, err := c.Do(ctx, Request{Method: http.MethodGet, URL: srv.URL})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Do error = %v, want one wrapping context.Canceled", err)
		}
		if got := resilience.Classify(err); got != "" {
			t.Errorf("Classify = %q, want \"\" (neither success nor failure)", got)
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Do(ctx, Request{Method: http.MethodGet, URL: srv.URL})
		<-started
		var e *resilience.Error
		if !errors.As(err, &e) || e.Category != resilience.Transient || e.Code != resilience.CodeTimeout {
			t.Fatalf("Do error = %v, want a transient timeout", err)
		}
		if !strings.Contains(e.Message, "caller's deadline") {
			t.Errorf("message %q does not say it was the caller's deadline", e.Message)
		}
	})
}

func TestDoHeaders(t *testing.T) {
	var got http.Header
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		b := make([]byte, 100)
		n, _ := r.Body.Read(b)
		body = string(b[:n])
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("short and stout"))
	}))
	defer srv.Close()
	c := &Client{Service: "crm", HTTP: &http.Client{}}
	resp, err := c.Do(t.Context(), Request{
		Method: http.MethodPost, URL: srv.URL, Body: []byte(`{"a":1}`), ContentType: "application/json",
		Header: http.Header{"Authorization": {"Bearer k"}}, CallID: "call-7",
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusTeapot || string(resp.Body) != "short and stout" {
		t.Errorf("response = %d %q", resp.StatusCode, resp.Body)
	}
	want := map[string]string{
		HeaderCallID:    "call-7",
		"User-Agent":    UserAgent,
		"Content-Type":  "application/json",
		"Authorization": "Bearer k",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, got.Get(k), v)
		}
	}
	if body != `{"a":1}` {
		t.Errorf("body = %q", body)
	}
}
