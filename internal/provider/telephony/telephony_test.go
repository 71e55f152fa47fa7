package telephony

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

const (
	testKey = "tok-test-0123456789abcdef"
	testSID = "AC0123456789"
	from    = "+15005550006"
	to      = "+14155552671"
)

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func testConfig(url string) config.Service {
	return config.Service{BaseURL: url, APIKey: testKey, Timeout: 5 * time.Second, Options: map[string]string{
		"account_sid": testSID, "from_number": from, "twiml_url": "https://agent.example/twiml?lang=en",
	}}
}

// answer is one canned HTTP answer, written unkeyed in the tables.
type answer providertest.Answer

func (a answer) serve(w http.ResponseWriter) { providertest.Answer(a).Serve(w) }

func newClient(t testing.TB, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(testConfig(url), append([]Option{WithClock(resiliencetest.NewAutoClock(t0)), WithPollInterval(time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func twilioErr(status, code int, msg string) string {
	b, _ := json.Marshal(map[string]any{"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
	return string(b)
}

func callJSON(sid, status string, duration *int) string {
	m := map[string]any{"sid": sid, "status": status, "to": to, "from": from, "duration": nil}
	if duration != nil {
		m["duration"] = fmt.Sprint(*duration)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// want is how a failed call must be classified; check takes the status
// from the answer.
type want = providertest.Want

func check(t *testing.T, err error, status int, w want) {
	t.Helper()
	w.Status = status
	providertest.Check(t, config.ServiceTelephony, err, w, testKey, to, strings.TrimPrefix(to, "+"))
}

func TestPlaceClassifiesErrors(t *testing.T) {
	tests := []struct {
		name string
		answer
		want want
	}{
		{"20429 too many requests", answer{429, nil, twilioErr(429, 20429, "Too Many Requests")},
			want{Category: resilience.Transient, Code: "20429", Msg: "too many concurrent"}},
		{"20429 with Retry-After", answer{429, map[string]string{"Retry-After": "2"}, twilioErr(429, 20429, "Too Many Requests")},
			want{Category: resilience.Transient, Code: "20429", RetryAfter: 2 * time.Second}},
		{"20429 under another status", answer{400, nil, twilioErr(400, 20429, "Too Many Requests")},
			want{Category: resilience.Transient, Code: "20429"}},
		{"21211 invalid to, number echoed", answer{400, nil, twilioErr(400, 21211, "The 'To' number "+to+" is not a valid phone number.")},
			want{Category: resilience.Permanent, Code: "21211", Msg: "invalid phone number: The 'To' number +1415****671"}},
		{"13224 not e164", answer{400, nil, twilioErr(400, 13224, "Dial: Invalid phone number format: 14155552671")},
			want{Category: resilience.Permanent, Code: "13224", Msg: "invalid phone number"}},
		{"21210 unverified caller id", answer{400, nil, twilioErr(400, 21210, "The source phone number provided, "+from+", is not yet verified for your account.")},
			want{Category: resilience.Permanent, Code: "21210", Msg: "not verified"}},
		{"401 auth", answer{401, nil, twilioErr(401, 20003, "Authenticate")},
			want{Category: resilience.Permanent, Code: "20003", Msg: "authentication failed"}},
		{"404 unknown account", answer{404, nil, twilioErr(404, 20404, "The requested resource was not found")},
			want{Category: resilience.Permanent, Code: "20404"}},
		{"500", answer{500, nil, twilioErr(500, 20500, "Internal Server Error")},
			want{Category: resilience.Transient, Code: "20500"}},
		{"503", answer{503, nil, twilioErr(503, 20503, "Service Unavailable")},
			want{Category: resilience.Transient, Code: "20503"}},
		{"502 html", answer{502, map[string]string{"Content-Type": "text/html"}, "<html>502</html>"},
			want{Category: resilience.Transient, Msg: "text/html answer"}},
		{"201 malformed", answer{201, nil, `{"sid": "CA1", "status": `},
			want{Category: resilience.Transient, Code: CodeMalformed}},
		{"201 without sid", answer{201, nil, `{}`},
			want{Category: resilience.Transient, Code: CodeMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, err := newClient(t, providertest.Server(t, providertest.Answer(tt.answer)).URL).Place(t.Context(), "c1", to)
			if err == nil {
				t.Fatalf("Place = %+v, want an error", call)
			}
			check(t, err, tt.Status, tt.want)
		})
	}
}

// fakeTwilio places calls and walks each through ringing and in-progress to
// its final status, one step per status poll.
type fakeTwilio struct {
	t       *testing.T
	final   string
	mu      sync.Mutex
	posts   int
	polls   int
	form    url.Values
	callIDs []string
	// pollFail, when set, answers the first polls with it.
	pollFail  []answer
	afterPost func() // called after a call is placed
}

func (f *fakeTwilio) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if !ok || user != testSID || pass != testKey {
		answer{401, nil, twilioErr(401, 20003, "Authenticate")}.serve(w)
		return
	}
	f.callIDs = append(f.callIDs, r.Header.Get("X-Agent-Call-Id"))
	prefix := "/2010-04-01/Accounts/" + testSID
	switch {
	case r.Method == http.MethodPost && r.URL.Path == prefix+"/Calls.json":
		r.ParseForm()
		f.form = r.PostForm
		f.posts++
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, callJSON("CA0001", StatusQueued, nil))
		if f.afterPost != nil {
			f.afterPost()
		}
	case r.Method == http.MethodGet && r.URL.Path == prefix+"/Calls/CA0001.json":
		f.polls++
		if len(f.pollFail) > 0 {
			a := f.pollFail[0]
			f.pollFail = f.pollFail[1:]
			a.serve(w)
			return
		}
		steps := []string{StatusRinging, StatusInProgress, f.final}
		status := steps[min(f.polls-1, len(steps)-1)]
		var d *int
		if status == StatusCompleted {
			d = new(int)
			*d = 42
		}
		io.WriteString(w, callJSON("CA0001", status, d))
	default:
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		answer{404, nil, twilioErr(404, 20404, "not found")}.serve(w)
	}
}

func TestPlaceOutcomes(t *testing.T) {
	tests := []struct {
		final    string
		duration time.Duration
	}{
		{StatusCompleted, 42 * time.Second},
		{StatusBusy, 0},
		{StatusNoAnswer, 0},
		{StatusFailed, 0},
		{StatusCanceled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.final, func(t *testing.T) {
			f := &fakeTwilio{t: t, final: tt.final}
			srv := httptest.NewServer(f)
			defer srv.Close()
			clock := resiliencetest.NewAutoClock(t0)
			c := newClient(t, srv.URL, WithClock(clock), WithPollInterval(3*time.Second))
			call, err := c.Place(t.Context(), "call-1", to)
			if err != nil {
				t.Fatalf("Place: %v (a %s call is an outcome, not an error)", err, tt.final)
			}
			want := Call{SID: "CA0001", Status: tt.final, Duration: tt.duration}
			if call != want || !call.Final() {
				t.Errorf("Place = %+v, want %+v", call, want)
			}
			if f.posts != 1 || f.polls != 3 {
				t.Errorf("%d posts and %d polls, want 1 and 3", f.posts, f.polls)
			}
			if w := clock.Waits(); len(w) != 3 || w[0] != 3*time.Second {
				t.Errorf("poll waits = %v, want three of 3s", w)
			}
			wantForm := url.Values{"To": {to}, "From": {from}, "Url": {"https://agent.example/twiml?call_id=call-1&lang=en"}}
			for k := range wantForm {
				if f.form.Get(k) != wantForm.Get(k) {
					t.Errorf("form %s = %q, want %q", k, f.form.Get(k), wantForm.Get(k))
				}
			}
			for i, id := range f.callIDs {
				if id != "call-1" {
					t.Errorf("request %d X-Agent-Call-Id = %q", i, id)
				}
			}
		})
	}
}

// A failed status poll returns the call placed so far with the error, and a
// second Place for the same call id follows that call instead of placing
// another one.
func TestPlaceResumesAfterPollFailure(t *testing.T) {
	f := &fakeTwilio{t: t, final: StatusCompleted, pollFail: []answer{{503, nil, twilioErr(503, 20503, "Service Unavailable")}}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := newClient(t, srv.URL)

	call, err := c.Place(t.Context(), "call-1", to)
	check(t, err, 503, want{Category: resilience.Transient, Code: "20503"})
	if call.SID != "CA0001" || call.Status != StatusQueued {
		t.Errorf("Place with a failed poll = %+v, want the queued call CA0001", call)
	}

	call, err = c.Place(t.Context(), "call-1", to)
	if err != nil {
		t.Fatal(err)
	}
	if call.Status != StatusCompleted || f.posts != 1 {
		t.Errorf("second Place = %+v after %d posts, want completed after 1", call, f.posts)
	}

	// The call ended: a later Place for the same call id is a new call.
	f.mu.Lock()
	f.polls = 0
	f.mu.Unlock()
	if _, err := c.Place(t.Context(), "call-1", to); err != nil {
		t.Fatal(err)
	}
	if f.posts != 2 {
		t.Errorf("%d posts, want a new call after the first one ended", f.posts)
	}
}

func TestPlaceCanceledWhilePolling(t *testing.T) {
	f := &fakeTwilio{t: t, final: StatusCompleted}
	srv := httptest.NewServer(f)
	defer srv.Close()
	clock := resiliencetest.NewClock(t0) // manual: the poll wait lasts until cancelled
	c := newClient(t, srv.URL, WithClock(clock))

	ctx, cancel := context.WithCancel(t.Context())
	type result struct {
		call Call
		err  error
	}
	done := make(chan result, 1)
	go func() {
		call, err := c.Place(ctx, "call-1", to)
		done <- result{call, err}
	}()
	for clock.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Place error = %v, want one wrapping context.Canceled", r.err)
	}
	if resilience.Classify(r.err) != "" {
		t.Errorf("Classify = %q, want \"\"", resilience.Classify(r.err))
	}
	if r.call.SID != "CA0001" {
		t.Errorf("Place = %+v, want the placed call's sid", r.call)
	}
}

func TestPlaceCallerDeadlineWhilePolling(t *testing.T) {
	f := &fakeTwilio{t: t, final: StatusCompleted}
	srv := httptest.NewServer(f)
	defer srv.Close()
	clock := resiliencetest.NewClock(t0)
	c := newClient(t, srv.URL, WithClock(clock))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	call, err := c.Place(ctx, "call-1", to)
	var e *resilience.Error
	if !errors.As(err, &e) || e.Category != resilience.Transient || e.Code != resilience.CodeTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Place error = %v, want a transient timeout wrapping the deadline", err)
	}
	if call.SID != "CA0001" {
		t.Errorf("Place = %+v, want the placed call's sid", call)
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name string
		answer
		want *want
	}{
		{"active", answer{200, nil, `{"sid":"` + testSID + `","status":"active"}`}, nil},
		{"suspended", answer{200, nil, `{"sid":"` + testSID + `","status":"suspended"}`},
			&want{Category: resilience.Permanent, Code: CodeAccountInactive, Msg: "suspended"}},
		{"not json", answer{200, map[string]string{"Content-Type": "text/html"}, "<html>"},
			&want{Category: resilience.Transient, Code: CodeMalformed}},
		{"bad credentials", answer{401, nil, twilioErr(401, 20003, "Authenticate")},
			&want{Category: resilience.Permanent, Code: "20003"}},
		{"down", answer{503, nil, twilioErr(503, 20503, "Service Unavailable")},
			&want{Category: resilience.Transient, Code: "20503"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := providertest.Server(t, providertest.Answer(tt.answer))
			err := newClient(t, srv.URL).Health(t.Context())
			if path := srv.LastRequest(); path != "GET /2010-04-01/Accounts/"+testSID+".json" {
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
	cfg := testConfig("http://127.0.0.1")
	cfg.APIKey = ""
	delete(cfg.Options, "from_number")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "api_key, options.from_number required") {
		t.Errorf("New = %v, want the missing settings named", err)
	}
	cfg = testConfig("http://127.0.0.1")
	cfg.Options["twiml_url"] = "/relative"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "twiml_url") {
		t.Errorf("New with a relative twiml_url = %v", err)
	}
	c, err := New(testConfig("http://127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if c.poll != DefaultPollInterval || c.http.Timeout != 5*time.Second {
		t.Errorf("poll %s, timeout %s", c.poll, c.http.Timeout)
	}
}

func BenchmarkPlace(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, callJSON("CA0001", StatusQueued, nil))
			return
		}
		d := 30
		io.WriteString(w, callJSON("CA0001", StatusCompleted, &d))
	}))
	defer srv.Close()
	c := newClient(b, srv.URL)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Place(b.Context(), "bench", to); err != nil {
			b.Fatal(err)
		}
	}
}

// With WithTwiML the create's Url is the call's own TwiML on the media
// server, and twiml_url is not required.
func TestWithTwiML(t *testing.T) {
	f := &fakeTwilio{t: t, final: StatusCompleted}
	srv := httptest.NewServer(f)
	defer srv.Close()
	cfg := testConfig(srv.URL)
	delete(cfg.Options, "twiml_url")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "options.twiml_url required") {
		t.Fatalf("New without twiml_url or WithTwiML = %v", err)
	}
	twiml := func(callID string) string {
		return "https://media.example/twiml/" + url.PathEscape(callID) + "?exp=1&sig=ab"
	}
	c, err := New(cfg, WithTwiML(twiml), WithClock(resiliencetest.NewAutoClock(t0)), WithPollInterval(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Place(t.Context(), "camp/call-1", "+14155550101"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.form.Get("Url"), "https://media.example/twiml/camp%2Fcall-1?exp=1&sig=ab"; got != want {
		t.Errorf("Url = %q, want %q", got, want)
	}
}
