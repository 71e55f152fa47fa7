// Package providertest is what the provider clients' tests share: canned
// HTTP answers, the fault simulator on a loopback port, and the check that a
// call failed with the classified *resilience.Error a table row wants.
package providertest

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

// Answer is one canned HTTP answer. Written positionally in tables:
// Answer{429, map[string]string{"Retry-After": "7"}, body}.
type Answer struct {
	Status int
	// Header is set on the answer; Content-Type defaults to JSON.
	Header map[string]string
	Body   string
}

// Serve writes the answer.
func (a Answer) Serve(w http.ResponseWriter) {
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	if _, ok := a.Header["Content-Type"]; !ok {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.Status)
	io.WriteString(w, a.Body)
}

// Fake is an HTTP server on loopback that gives one Answer to every request.
type Fake struct {
	URL  string
	mu   sync.Mutex
	last string
}

// Server starts a Fake giving a; it stops when the test ends.
func Server(t testing.TB, a Answer) *Fake {
	t.Helper()
	f := &Fake{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.last = r.Method + " " + r.URL.Path
		f.mu.Unlock()
		a.Serve(w)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// LastRequest is the method and path of the last request, such as
// "GET /v1/models"; "" before the first.
func (f *Fake) LastRequest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// StartSim runs the fault simulator on a free loopback port playing the YAML
// services block given ("" plays a healthy scenario); it stops when the test
// ends.
func StartSim(t testing.TB, services string) *simulator.Server {
	t.Helper()
	sc, err := simulator.ParseScenario([]byte("name: test\n" + services))
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	sim := simulator.New(sc, nil)
	if err := sim.Start(t.Context(), "127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// Want is the classified error a call must fail with.
type Want struct {
	Category resilience.Category
	// Code is the Error.Code wanted, unless Codes is set: then any of those
	// (a connection cut reads as a reset or an EOF, as timing decides).
	Code  string
	Codes []string
	// Status is the HTTP status wanted; 0 for a failure before an answer.
	Status int
	// RetryAfter is the Error.RetryAfter wanted; with RetryAfterMax, the
	// range [RetryAfter, RetryAfterMax] (an HTTP date counts whole seconds).
	RetryAfter, RetryAfterMax time.Duration
	// Msg is a substring of Error.Message.
	Msg string
}

// Transient wants a transient error with the status and one of codes.
func Transient(status int, codes ...string) *Want {
	return &Want{Category: resilience.Transient, Status: status, Codes: codes}
}

// Permanent wants a permanent error with the status and one of codes.
func Permanent(status int, codes ...string) *Want {
	return &Want{Category: resilience.Permanent, Status: status, Codes: codes}
}

// NetworkCodes are the codes of a connection cut by the server.
func NetworkCodes() []string {
	return []string{resilience.CodeConnectionReset, resilience.CodeEOF}
}

// Check fails the test unless err is a *resilience.Error of service that
// matches w and whose text shows none of hidden (API keys, phone numbers).
func Check(t testing.TB, service string, err error, w Want, hidden ...string) {
	t.Helper()
	var e *resilience.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *resilience.Error", err, err)
	}
	codes := w.Codes
	if codes == nil {
		codes = []string{w.Code}
	}
	maxRetryAfter := max(w.RetryAfterMax, w.RetryAfter)
	if e.Service != service || e.Category != w.Category || !slices.Contains(codes, e.Code) || e.StatusCode != w.Status ||
		e.RetryAfter < w.RetryAfter || e.RetryAfter > maxRetryAfter {
		t.Errorf("error = {service %s, %s, status %d, code %q, retry after %s}, want {%s, %s, %d, a code in %q, retry after in [%s, %s]}",
			e.Service, e.Category, e.StatusCode, e.Code, e.RetryAfter, service, w.Category, w.Status, codes, w.RetryAfter, maxRetryAfter)
	}
	if !strings.Contains(e.Message, w.Msg) {
		t.Errorf("message %q does not contain %q", e.Message, w.Msg)
	}
	for _, s := range hidden {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows %q", err, s)
		}
	}
}
