package observer

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/lease"
	ot "github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/silence"
)

// liveViews reads the views /live streams, one per event.
func liveViews(t *testing.T, url string) <-chan View {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/live", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("/live content type %q", ct)
	}
	out := make(chan View, 100)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "view":
				var v View
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v); err == nil {
					out <- v
				}
			}
		}
	}()
	return out
}

// nextView waits for a view satisfying cond.
func nextView(t *testing.T, views <-chan View, what string, cond func(View) bool) View {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case v := <-views:
			if cond(v) {
				return v
			}
		case <-deadline:
			t.Fatalf("no view with %s on /live", what)
		}
	}
}

// The page and its live stream against a real pipeline: the HTML and its
// assets come from this server only, and /live pushes a new view when an
// event arrives (a breaker opening, with its time to half-open; closing),
// when the dispatcher's campaign state changes and when a silence is added.
func TestPageLive(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := t.Context()
	hub := NewHub()
	clock := newClock(at(-time.Second))
	r := startPipeline(t, conn, Options{Rules: config.Rules{GroupWait: -1}, Now: clock.Now, OnChange: hub.Notify,
		RecoveryTimeout: map[string]time.Duration{tts: 30 * time.Second}}, nil)
	campaigns := NewCampaigns("campaigns", natstest.Logger(t), hub.Notify)
	silences := silence.NewSet(natstest.Logger(t), hub.Notify)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { campaigns.Run(wctx, conn, 50*time.Millisecond); done <- struct{}{} }()
	go func() { silences.Run(wctx, conn, 50*time.Millisecond); done <- struct{}{} }()
	defer func() { stop(); <-done; <-done }()
	// A long refresh: every view after the first is caused by a change.
	el := &fakeElection{st: lease.Status{Role: lease.RoleStandby, Self: "observer-b", Running: true,
		Active: &lease.Holder{Holder: "observer-a", Addr: "10.0.0.1:8081"}}}
	web := httptest.NewServer(Handler(r.p, fakeSinks{{Name: "webhook", Kind: "alert", Healthy: true, Backlog: 2, DeadLetters: 1}}, el, nil,
		&Live{Campaigns: campaigns, Silences: silences, Hub: hub, Refresh: time.Hour}))
	t.Cleanup(web.Close) // after the live stream's cancel, registered later

	t.Run("page and assets", func(t *testing.T) {
		for _, path := range []string{"/", "/assets/app.js", "/assets/style.css"} {
			resp, err := http.Get(web.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
				t.Errorf("%s: %d, CSP %q", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
			}
		}
		code, body := get(t, web.URL+"/")
		if code != 200 || !strings.Contains(body, `<script src="/assets/app.js"`) || !strings.Contains(body, `name="viewport"`) {
			t.Errorf("page: %d %s", code, body)
		}
		for _, external := range []string{"http://", "https://", "//cdn"} {
			if strings.Contains(body, external) {
				t.Errorf("page refers to %s", external)
			}
		}
	})

	views := liveViews(t, web.URL)
	first := nextView(t, views, "the first view", func(View) bool { return true })
	if len(first.Sinks) != 1 || first.Sinks[0].Backlog != 2 || first.Sinks[0].DeadLetters != 1 {
		t.Errorf("sinks in the first view: %+v", first.Sinks)
	}
	if l := first.Lease; l == nil || l.Role != lease.RoleStandby || l.Active == nil || l.Active.Holder != "observer-a" {
		t.Errorf("lease in the first view: %+v, want observer-a active", l)
	}

	open := ot.Breaker("b1", at(2*time.Second), tts, events.BreakerClosed, events.BreakerOpen)
	until := at(32 * time.Second)
	open.OpenUntil = &until
	emit(t, conn, ot.Stamped(open)...)
	v := nextView(t, views, "the breaker open", func(v View) bool { return v.Breakers[tts].State == events.BreakerOpen })
	if h := v.Breakers[tts].HalfOpenAt; h == nil || !h.Equal(until) {
		t.Errorf("half open at %v, want the transition's open_until %v", h, until)
	}
	emit(t, conn, ot.Stamped(ot.Breaker("b2", at(40*time.Second), tts, events.BreakerHalfOpen, events.BreakerClosed))...)
	v = nextView(t, views, "the breaker closed", func(v View) bool { return v.Breakers[tts].State == events.BreakerClosed })
	if v.Breakers[tts].HalfOpenAt != nil {
		t.Errorf("a closed breaker has a time to half-open: %v", v.Breakers[tts].HalfOpenAt)
	}

	kv, err := conn.KeyValue(ctx, "campaigns", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range []string{"completed", "failed", "in_progress", "pending"} {
		data := `{"campaign":"spring","contact_id":"c` + string(rune('1'+i)) + `","contact":"+1415****100","status":"` + st + `"}`
		if _, err := kv.Put(ctx, "spring.c"+string(rune('1'+i)), []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "spring", []byte(`{"paused":true}`)); err != nil { // not a contact: ignored
		t.Fatal(err)
	}
	v = nextView(t, views, "the campaign", func(v View) bool { return len(v.Campaigns) == 1 && v.Campaigns[0].Total == 4 })
	if c := v.Campaigns[0]; c.Name != "spring" || c.Done != 2 || c.Counts["in_progress"] != 1 || c.Counts["completed"] != 1 {
		t.Errorf("campaign %+v, want 2 of 4 done", c)
	}
	if _, err := kv.Put(ctx, "spring.c3", []byte(`{"campaign":"spring","contact_id":"c3","status":"completed"}`)); err != nil {
		t.Fatal(err)
	}
	v = nextView(t, views, "the campaign's progress", func(v View) bool { return len(v.Campaigns) == 1 && v.Campaigns[0].Done == 3 })
	if c := v.Campaigns[0]; c.State != "running" || c.MaxCallsPerSecond != 0 {
		t.Errorf("campaign nobody paused: %+v, want running without limits", c)
	}

	// The operator pauses it and sets its pacing.
	ctl, err := control.Open(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Update(ctx, "spring", "test", time.Now(), func(c *control.Control) error {
		c.State, c.MaxCallsPerSecond = control.Paused, 3
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nextView(t, views, "the campaign paused", func(v View) bool {
		return len(v.Campaigns) == 1 && v.Campaigns[0].State == "paused" && v.Campaigns[0].MaxCallsPerSecond == 3
	})
	if _, err := ctl.SetState(ctx, "spring", "test", time.Now(), control.Cancelled); err != nil {
		t.Fatal(err)
	}
	nextView(t, views, "the campaign cancelled", func(v View) bool { return len(v.Campaigns) == 1 && v.Campaigns[0].State == "cancelled" })

	if _, err := conn.KeyValue(ctx, silence.Bucket, 0); err != nil {
		t.Fatal(err)
	}
	st, err := silence.Open(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.Add(ctx, silence.Silence{Matchers: silence.Matchers{Service: "elevenlabs"}, EndsAt: time.Now().Add(time.Hour), Comment: "INC-42"})
	if err != nil {
		t.Fatal(err)
	}
	v = nextView(t, views, "the silence", func(v View) bool { return len(v.Silences) == 1 })
	if v.Silences[0].ID != s.ID || v.Silences[0].Comment != "INC-42" {
		t.Errorf("silences %+v", v.Silences)
	}
}
