package observer

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/lease"
	ot "github.com/callagent/agent/internal/observer/observertest"
)

type fakeSinks []delivery.SinkStatus

func (f fakeSinks) Status(context.Context) []delivery.SinkStatus { return f }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestHTTP(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock(at(-time.Second))
	r := startPipeline(t, conn, Options{Rules: config.Rules{GroupWait: -1}, Now: clock.Now, Metrics: m}, nil)
	sinks := fakeSinks{{Name: "telegram", Kind: "alert", Healthy: true, Backlog: 3, Delivered: 7}}
	web := httptest.NewServer(Handler(r.p, sinks, nil, reg, nil))
	defer web.Close()

	emit(t, conn, ot.Stamped(
		ok("s1", 0, "call-1"),
		fail("f1", time.Second, "call-2"),
		ot.Retry("r1", at(time.Second), "call-2", tts, 1, 5*time.Second),
		ot.Breaker("b1", at(2*time.Second), tts, events.BreakerClosed, events.BreakerOpen),
	)...)
	caughtUp(t, conn, r.p)
	waitFor(t, "ready", 5*time.Second, r.p.Ready)

	t.Run("healthz", func(t *testing.T) {
		if code, body := get(t, web.URL+"/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("%d %q", code, body)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		if code, _ := get(t, web.URL+"/readyz"); code != 200 {
			t.Errorf("status %d while consuming", code)
		}
	})
	t.Run("status", func(t *testing.T) {
		code, body := get(t, web.URL+"/status")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		var s Snapshot
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(s.Services) != 1 || s.Services[0].Service != tts || s.Services[0].Status != events.StatusDown || s.Services[0].Since.IsZero() {
			t.Errorf("services %+v", s.Services)
		}
		if b := s.Breakers[tts]; b.State != events.BreakerOpen || b.NotClosed[ot.Source] != events.BreakerOpen {
			t.Errorf("breakers %+v", s.Breakers)
		}
		if len(s.RecentAlerts) != 1 || s.RecentAlerts[0].Rule != "breaker_open" || len(s.ActiveAlerts) != 1 {
			t.Errorf("recent %+v active %+v", s.RecentAlerts, s.ActiveAlerts)
		}
		if len(s.Sinks) != 1 || s.Sinks[0].Name != "telegram" || s.Sinks[0].Backlog != 3 {
			t.Errorf("sinks %+v", s.Sinks)
		}
		if s.Consumer.Name != "observer" || s.Consumer.Seq == 0 {
			t.Errorf("consumer %+v", s.Consumer)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		// The backlog is measured on the ticker's next round.
		var body string
		waitFor(t, "the backlog measured empty", 5*time.Second, func() bool {
			_, body = get(t, web.URL+"/metrics")
			return strings.Contains(body, "agent_observer_consumer_backlog 0")
		})
		for _, want := range []string{
			`agent_attempts_total{outcome="failure",service="elevenlabs"} 1`,
			`agent_attempts_total{outcome="success",service="elevenlabs"} 1`,
			`agent_retries_total{service="elevenlabs"} 1`,
			`agent_breaker_transitions_total{service="elevenlabs",to="open"} 1`,
			`agent_breaker_state{service="elevenlabs",state="open"} 1`,
			`agent_breaker_state{service="elevenlabs",state="closed"} 0`,
			`agent_alerts_total{rule="breaker_open",severity="critical",status="firing"} 1`,
			`agent_service_status{service="elevenlabs",status="down"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
	t.Run("not ready once stopped", func(t *testing.T) {
		r.stop()
		if code, _ := get(t, web.URL+"/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("status %d after stop, want 503", code)
		}
	})
}

type fakeElection struct{ st lease.Status }

func (f *fakeElection) Status() lease.Status { return f.st }

// /readyz and /status say whether this observer is active or stands by,
// and which one is active; a standby that watches the lease is ready.
func TestReadyzLease(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A standby's pipeline is made but not run.
	p, err := New(ctx, conn, Options{Rules: config.Rules{GroupWait: -1}})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	other := &lease.Holder{Holder: "observer-b-12", Addr: "10.0.0.2:8080", Since: since}
	el := &fakeElection{}
	web := httptest.NewServer(Handler(p, nil, el, prometheus.NewRegistry(), nil))
	defer web.Close()
	for _, tc := range []struct {
		name string
		st   lease.Status
		code int
		body string
	}{
		{"standby", lease.Status{Role: lease.RoleStandby, Self: "observer-a-11", Active: other, Running: true}, 200,
			"ready: standby (observer-a-11); active observer: observer-b-12 at 10.0.0.2:8080 since 2026-03-14T09:00:00Z\n"},
		{"standby, lease free", lease.Status{Role: lease.RoleStandby, Self: "observer-a-11", Running: true}, 200,
			"ready: standby (observer-a-11); no observer is active: the lease is free\n"},
		{"standby not watching", lease.Status{Role: lease.RoleStandby, Self: "observer-a-11"}, 503,
			"not ready: standby (observer-a-11) not connected to NATS or not watching the lease\n"},
		{"active, not consuming yet", lease.Status{Role: lease.RoleActive, Self: "observer-a-11", Running: true}, 503,
			"not ready: active (observer-a-11) but not connected to NATS or not consuming yet\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			el.st = tc.st
			if code, body := get(t, web.URL+"/readyz"); code != tc.code || body != tc.body {
				t.Errorf("/readyz = %d %q, want %d %q", code, body, tc.code, tc.body)
			}
		})
	}
	el.st = lease.Status{Role: lease.RoleStandby, Self: "observer-a-11", Active: other, Running: true, TTL: "10s"}
	_, body := get(t, web.URL+"/status")
	var s struct {
		Lease map[string]any `json:"lease"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if s.Lease["role"] != "standby" || s.Lease["self"] != "observer-a-11" || s.Lease["active"].(map[string]any)["holder"] != "observer-b-12" {
		t.Errorf("/status lease = %v", s.Lease)
	}
}
