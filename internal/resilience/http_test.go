package resilience_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/resilience"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawServer accepts connections on loopback and hands each to handle.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

func readRequest(c net.Conn) {
	_, _ = http.ReadRequest(bufio.NewReader(c))
}

func TestFromTransport(t *testing.T) {
	const secret = "123456:SECRET-TOKEN"
	refused := freeAddr(t)
	resetBeforeResponse := rawServer(t, func(c net.Conn) {
		readRequest(c)
		c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
	})
	truncatedBody := rawServer(t, func(c net.Conn) {
		readRequest(c)
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
		c.Close()
	})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)

	tests := []struct {
		name      string
		url       string
		timeout   time.Duration
		readBody  bool
		wantCat   resilience.Category
		wantCodes []string
	}{
		{"connection refused", "http://" + refused + "/bot" + secret + "/sendMessage", 0, false,
			resilience.Transient, []string{resilience.CodeConnectionRefused}},
		{"reset before the response", "http://" + resetBeforeResponse + "/", 0, false,
			resilience.Transient, []string{resilience.CodeConnectionReset, resilience.CodeEOF}},
		{"truncated body", "http://" + truncatedBody + "/", 0, true,
			resilience.Transient, []string{resilience.CodeEOF}},
		{"timeout", slow.URL + "/bot" + secret, 50 * time.Millisecond, false,
			resilience.Transient, []string{resilience.CodeTimeout}},
		{"untrusted certificate", tlsSrv.URL + "/", 0, false,
			resilience.Permanent, []string{resilience.CodeTLS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Do(req)
			if err == nil && tt.readBody {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			} else if err == nil {
				resp.Body.Close()
				t.Fatal("request succeeded, want a transport error")
			}
			if err == nil {
				t.Fatal("no error, want a transport error")
			}
			got := resilience.FromTransport("llm", err)
			var e *resilience.Error
			if !errors.As(got, &e) {
				t.Fatalf("FromTransport(%v) = %T, want *resilience.Error", err, got)
			}
			if e.Service != "llm" || e.Category != tt.wantCat {
				t.Errorf("got service %q category %q, want llm %q (from %v)", e.Service, e.Category, tt.wantCat, err)
			}
			if !contains(tt.wantCodes, e.Code) {
				t.Errorf("code %q, want one of %q (from %v)", e.Code, tt.wantCodes, err)
			}
			if !errors.Is(got, err) {
				t.Error("the classified error does not wrap the original")
			}
			if strings.Contains(e.Error(), "SECRET") || strings.Contains(e.Message, "SECRET") {
				t.Errorf("classified error leaks the URL token: %q", e.Error())
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestFromTransportPassThrough(t *testing.T) {
	classified := &resilience.Error{Service: "crm", Category: resilience.Permanent, StatusCode: 400}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+freeAddr(t)+"/", nil)
	_, canceledErr := http.DefaultClient.Do(req)

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"already classified", classified, classified},
		{"wrapped classified", fmt.Errorf("create call: %w", classified), nil},
		{"cancelled by the caller", canceledErr, canceledErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resilience.FromTransport("crm", tt.err)
			want := tt.want
			if want == nil {
				want = tt.err
			}
			if got != want {
				t.Errorf("FromTransport(%v) = %v, want it returned as is", tt.err, got)
			}
		})
	}
	if resilience.Classify(canceledErr) != "" {
		t.Errorf("Classify(cancelled request) = %q, want \"\"", resilience.Classify(canceledErr))
	}
}

func TestFromTransportDNS(t *testing.T) {
	tests := []struct {
		name string
		err  *net.DNSError
		want resilience.Category
	}{
		{"no such host", &net.DNSError{Err: "no such host", Name: "api.example.invalid", IsNotFound: true}, resilience.Permanent},
		{"dns timeout", &net.DNSError{Err: "i/o timeout", Name: "api.example.com", IsTimeout: true}, resilience.Transient},
		{"server failure", &net.DNSError{Err: "server misbehaving", Name: "api.example.com", IsTemporary: true}, resilience.Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := &url.Error{Op: "Post", URL: "https://api.example.com/v1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: tt.err}}
			if got := resilience.Classify(resilience.FromTransport("llm", err)); got != tt.want {
				t.Errorf("category %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	transient := &resilience.Error{Service: "llm", Category: resilience.Transient, StatusCode: 503}
	tests := []struct {
		name string
		err  error
		want resilience.Category
	}{
		{"nil", nil, ""},
		{"classified", transient, resilience.Transient},
		{"wrapped", fmt.Errorf("llm: %w", transient), resilience.Transient},
		{"cancelled", context.Canceled, ""},
		{"cancelled around a service error", errors.Join(transient, context.Canceled), ""},
		{"deadline", context.DeadlineExceeded, resilience.Transient},
		{"unknown error", errors.New("boom"), resilience.Permanent},
		{"open breaker", &resilience.Error{Category: resilience.CircuitOpen, Err: resilience.ErrCircuitOpen}, resilience.CircuitOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resilience.Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
