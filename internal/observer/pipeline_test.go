package observer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	ot "github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/rules"
)

var t0 = time.Now().UTC().Truncate(time.Second).Add(-time.Hour)

func at(d time.Duration) time.Time { return t0.Add(d) }

const tts = "elevenlabs"

var testRules = config.Rules{
	GroupWait: 10 * time.Second, RepeatInterval: time.Hour, DownFor: 5 * time.Minute,
	RateWindow: time.Minute, RateMinRequests: 10, ErrorRate: 0.1, RetryRate: 0.3, Latency: 5 * time.Second,
}

// phase publishes events, then moves the wall clock to now, then waits for
// the stream to hold alerts notifications in all.
type phase struct {
	events []events.Event
	now    time.Duration
	alerts int
}

func ok(id string, d time.Duration, call string) events.Event {
	return ot.Success(id, at(d), call, tts, 200*time.Millisecond)
}

func fail(id string, d time.Duration, call string) events.Event {
	return ot.Failure(id, at(d), call, tts, 1, events.CategoryTransient, 503, "service_unavailable", "503 Service Unavailable")
}

func TestLiveRules(t *testing.T) {
	tests := []struct {
		name     string
		phases   []phase
		want     []string
		statuses []string
		check    func(t *testing.T, as []*events.Alert)
	}{
		{
			name: "permanent failure fires and resolves",
			phases: []phase{
				{events: ot.Stamped(ot.Failure("p1", at(0), "call-1", tts, 1, events.CategoryPermanent, 401, "quota_exceeded", "quota of 100000 exceeded")), now: 5 * time.Second},
				{events: ot.Stamped(ok("s1", time.Minute, "call-2")), now: 2 * time.Minute, alerts: 2},
			},
			want: []string{"firing permanent_failure elevenlabs critical n=1", "resolved permanent_failure elevenlabs critical n=1"},
			check: func(t *testing.T, as []*events.Alert) {
				if !strings.Contains(as[0].Message, "quota exceeded, not an auth failure") {
					t.Errorf("message %q does not say it is the quota", as[0].Message)
				}
			},
		},
		{
			name: "retries exhausted: the ticker flushes the group, a success resolves it",
			phases: []phase{
				{events: ot.Stamped(ot.Call("c1", at(0), "call-1", events.CallFailed, tts, "retries_exhausted")), now: 11 * time.Second, alerts: 1},
				{events: ot.Stamped(ok("s1", 20*time.Second, "call-2")), now: 30 * time.Second, alerts: 2},
			},
			want: []string{"firing retries_exhausted elevenlabs warning n=1", "resolved retries_exhausted elevenlabs warning n=1"},
		},
		{
			name: "the breaker's close resolves its open",
			phases: []phase{
				{events: ot.Stamped(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)), now: 15 * time.Second, alerts: 1},
				{events: ot.Stamped(
					ot.Breaker("b2", at(30*time.Second), tts, events.BreakerOpen, events.BreakerHalfOpen),
					ot.Breaker("b3", at(31*time.Second), tts, events.BreakerHalfOpen, events.BreakerClosed),
				), now: time.Minute, alerts: 2},
			},
			want:     []string{"firing breaker_open elevenlabs critical n=1", "resolved breaker_open elevenlabs critical n=1"},
			statuses: []string{"elevenlabs ->down", "elevenlabs down->up"},
			check: func(t *testing.T, as []*events.Alert) {
				if as[0].Fingerprint != as[1].Fingerprint {
					t.Errorf("fingerprints differ: %s, %s", as[0].Fingerprint, as[1].Fingerprint)
				}
			},
		},
		{
			name: "service down longer than down_for",
			phases: []phase{
				{events: ot.Stamped(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)), now: 6 * time.Minute, alerts: 2},
				{events: ot.Stamped(ot.Breaker("b2", at(7*time.Minute), tts, events.BreakerOpen, events.BreakerClosed)), now: 8 * time.Minute, alerts: 4},
			},
			want: []string{
				"firing breaker_open elevenlabs critical n=1", "firing service_down elevenlabs critical n=1",
				"resolved breaker_open elevenlabs critical n=1", "resolved service_down elevenlabs critical n=1",
			},
		},
		{
			name: "error rate fires and resolves as the window slides",
			phases: []phase{
				{events: func() []events.Event {
					var evs []events.Event
					for i := range 10 {
						d := time.Duration(i) * time.Second
						if i == 3 || i == 7 {
							evs = append(evs, fail(fmt.Sprint("f", i), d, "c"))
						} else {
							evs = append(evs, ok(fmt.Sprint("s", i), d, "c"))
						}
					}
					return ot.Stamped(evs...)
				}(), now: 30 * time.Second, alerts: 1},
				{now: 3 * time.Minute, alerts: 2},
			},
			want: []string{"firing error_rate elevenlabs warning n=1", "resolved error_rate elevenlabs warning n=1"},
		},
		{
			name: "a burst is one notification and repeats are deduplicated",
			phases: []phase{
				{events: func() []events.Event {
					var evs []events.Event
					for i := range 5 {
						evs = append(evs, ot.Call(fmt.Sprint("c", i), at(time.Duration(i)*time.Second), fmt.Sprint("call-", i), events.CallFailed, tts, "retries_exhausted"))
					}
					return ot.Stamped(evs...)
				}(), now: 20 * time.Second, alerts: 1},
				{events: func() []events.Event {
					var evs []events.Event
					for i := range 3 {
						evs = append(evs, ot.Call(fmt.Sprint("d", i), at(time.Minute+time.Duration(i)*time.Second), fmt.Sprint("call-x", i), events.CallFailed, tts, "retries_exhausted"))
					}
					return ot.Stamped(evs...)
				}(), now: 30 * time.Minute, alerts: 1},
			},
			want: []string{"firing retries_exhausted elevenlabs warning n=5"},
			check: func(t *testing.T, as []*events.Alert) {
				if len(as[0].CallIDs) != 5 {
					t.Errorf("call ids %v, want the 5 calls of the burst", as[0].CallIDs)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			conn := srv.Conn(t)
			clock := newClock(at(-time.Second))
			r := startPipeline(t, conn, Options{Rules: testRules, Now: clock.Now}, nil)
			for i, ph := range tt.phases {
				emit(t, conn, ph.events...)
				caughtUp(t, conn, r.p)
				clock.Set(at(ph.now))
				waitFor(t, fmt.Sprintf("phase %d: the clock to reach %s", i, ph.now), 10*time.Second, func() bool {
					return !r.p.Snapshot().Clock.Before(at(ph.now))
				})
				waitFor(t, fmt.Sprintf("phase %d: %d alerts", i, ph.alerts), 10*time.Second, func() bool {
					return len(alertsStored(t, conn)) >= ph.alerts
				})
			}
			as := alertsStored(t, conn)
			if got := brief(as); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("alerts on ALERTS\n got %q\nwant %q", got, tt.want)
			}
			if tt.check != nil {
				tt.check(t, as)
			}
			if tt.statuses != nil {
				var got []string
				for _, s := range stored[*events.Status](t, conn, events.StreamEvents, events.StatusPrefix) {
					got = append(got, fmt.Sprintf("%s %s->%s", s.Service, s.From, s.To))
				}
				if !reflect.DeepEqual(got, tt.statuses) {
					t.Errorf("status events\n got %q\nwant %q", got, tt.statuses)
				}
				kv, err := conn.KeyValue(context.Background(), StatusBucket, 0)
				if err != nil {
					t.Fatal(err)
				}
				entry, err := kv.Get(context.Background(), tts)
				if err != nil {
					t.Fatalf("service_status %s: %v", tts, err)
				}
				var st ServiceStatus
				if err := json.Unmarshal(entry.Value(), &st); err != nil {
					t.Fatal(err)
				}
				last := tt.statuses[len(tt.statuses)-1]
				if !strings.HasSuffix(last, "->"+st.Status) {
					t.Errorf("service_status %s = %+v, want the last status of %q", tts, st, last)
				}
			}
		})
	}
}

// An observer stopped and started again on the same server picks up its
// state: a group that was waiting is sent once, an alert sent before the
// restart is not sent again, and the close after the restart resolves the
// open from before it.
func TestStateSurvivesRestart(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	// A duplicate window far shorter than the test, so that a re-publish
	// after the restart would be stored twice and counted.
	s, err := conn.Stream(ctx, events.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js(t, srv).UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	clock := newClock(at(-time.Second))
	first := startPipeline(t, conn, Options{Rules: testRules, Now: clock.Now}, nil)
	emit(t, conn, ot.Stamped(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen))...)
	caughtUp(t, conn, first.p)
	clock.Set(at(11 * time.Second))
	waitFor(t, "breaker_open sent", 10*time.Second, func() bool { return len(alertsStored(t, conn)) == 1 })
	// Calls fail while it is open: a group that is waiting at the restart.
	emit(t, conn, ot.Stamped(
		ot.Call("c1", at(12*time.Second), "call-1", events.CallFailed, tts, "retries_exhausted"),
		ot.Call("c2", at(13*time.Second), "call-2", events.CallFailed, tts, "retries_exhausted"),
	)...)
	caughtUp(t, conn, first.p)
	first.stop()
	time.Sleep(300 * time.Millisecond) // past the shortened duplicate window

	second := startPipeline(t, srv.Connect(t, config.NATS{}, "observer-2"), Options{Rules: testRules, Now: clock.Now}, nil)
	clock.Set(at(30 * time.Second))
	waitFor(t, "the waiting group sent after the restart", 10*time.Second, func() bool { return len(alertsStored(t, conn)) == 2 })
	emit(t, conn, ot.Stamped(
		ot.Breaker("b2", at(40*time.Second), tts, events.BreakerOpen, events.BreakerClosed),
		ok("s1", 41*time.Second, "call-3"),
	)...)
	caughtUp(t, conn, second.p)
	clock.Set(at(time.Minute))
	waitFor(t, "resolutions", 10*time.Second, func() bool { return len(alertsStored(t, conn)) >= 4 })
	time.Sleep(100 * time.Millisecond)

	got := brief(alertsStored(t, conn))
	want := []string{
		"firing breaker_open elevenlabs critical n=1",
		"firing retries_exhausted elevenlabs critical n=2",
		"resolved breaker_open elevenlabs critical n=1",
		"resolved retries_exhausted elevenlabs critical n=2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("alerts across the restart\n got %q\nwant %q", got, want)
	}
	if n := len(second.p.Snapshot().ActiveAlerts); n != 0 {
		t.Errorf("%d alerts still active", n)
	}
}

// An observer killed after publishing an alert and before acknowledging the
// event that caused it: the next one re-derives the event and publishes the
// same id, which the stream stores once.
func TestCrashBetweenPublishAndAck(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	clock := newClock(at(-time.Second))
	cfg := config.Rules{GroupWait: -1, RepeatInterval: time.Hour}

	victim := srv.Connect(t, config.NATS{}, "observer-1")
	var killed atomic.Bool
	first := startPipeline(t, victim, Options{Rules: cfg, Now: clock.Now, AckWait: time.Second},
		func(_ context.Context, outs []rules.Output) error {
			for _, o := range outs {
				if o.Alert != nil && !killed.Load() {
					killed.Store(true)
					victim.Abort() // SIGKILL: no ack, no state saved
					return errors.New("killed")
				}
			}
			return nil
		})
	emit(t, conn, ot.Stamped(
		ok("s1", 0, "call-1"),
		ot.Breaker("b1", at(time.Second), tts, events.BreakerClosed, events.BreakerOpen),
	)...)
	waitFor(t, "the observer to die after publishing", 10*time.Second, killed.Load)
	first.stop()
	if got := alertsStored(t, conn); len(got) != 1 {
		t.Fatalf("before the restart: %q, want the one alert published", brief(got))
	}

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	second := startPipeline(t, srv.Connect(t, config.NATS{}, "observer-2"), Options{Rules: cfg, Now: clock.Now, AckWait: time.Second, Metrics: m}, nil)
	waitFor(t, "the event redelivered and re-derived", 15*time.Second, func() bool {
		return counter(t, m.alerts.WithLabelValues(rules.RuleBreakerOpen, events.SeverityCritical, events.AlertFiring)) == 1
	})
	caughtUp(t, conn, second.p)
	got := alertsStored(t, conn)
	if len(got) != 1 {
		t.Fatalf("after the restart: %q, want the alert stored once", brief(got))
	}
	if a := second.p.Snapshot().RecentAlerts; len(a) != 1 || a[0].ID != got[0].ID {
		t.Errorf("re-derived alert %v, stored %s", a, got[0].ID)
	}
}

// An observer killed before it ever saved its state, holding deliveries that
// the durable hands out again only after the ack wait (30s by default): the
// next observer applies them from the stream first, in order, so that an
// event arriving after the restart still finds the alert they opened, rather
// than those events being skipped as applied when they come back.
func TestCrashBeforeFirstSave(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	clock := newClock(at(-time.Second))
	cfg := config.Rules{GroupWait: -1, RepeatInterval: time.Hour}

	victim := srv.Connect(t, config.NATS{}, "observer-1")
	var killed atomic.Bool
	first := startPipeline(t, victim, Options{Rules: cfg, Now: clock.Now},
		func(_ context.Context, outs []rules.Output) error {
			for _, o := range outs {
				if o.Alert != nil && !killed.Load() {
					killed.Store(true)
					victim.Abort() // SIGKILL: no ack, no state saved
					return errors.New("killed")
				}
			}
			return nil
		})
	emit(t, conn, ot.Stamped(ot.Breaker("b1", at(time.Second), tts, events.BreakerClosed, events.BreakerOpen))...)
	waitFor(t, "the observer to die after publishing", 10*time.Second, killed.Load)
	first.stop()

	second := startPipeline(t, srv.Connect(t, config.NATS{}, "observer-2"), Options{Rules: cfg, Now: clock.Now}, nil)
	emit(t, conn, ot.Stamped(ot.Breaker("b2", at(2*time.Second), tts, events.BreakerOpen, events.BreakerClosed))...)
	waitFor(t, "the breaker's alert resolved", 10*time.Second, func() bool { return len(alertsStored(t, conn)) == 2 })
	want := []string{"firing breaker_open elevenlabs critical n=1", "resolved breaker_open elevenlabs critical n=1"}
	if got := brief(alertsStored(t, conn)); !reflect.DeepEqual(got, want) {
		t.Errorf("alerts across the crash\n got %q\nwant %q", got, want)
	}
	if n := len(second.p.Snapshot().ActiveAlerts); n != 0 {
		t.Errorf("%d alerts still active", n)
	}
}

func counter(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A stream recreated under a saved state (its sequences start over) is
// followed from its start, not skipped up to the old cursor.
func TestStreamRecreated(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	clock := newClock(at(-time.Second))
	opts := Options{Rules: config.Rules{GroupWait: -1}, Now: clock.Now}
	first := startPipeline(t, conn, opts, nil)
	emit(t, conn, ot.Stamped(ok("s1", 0, "c1"), ok("s2", time.Second, "c1"), ok("s3", 2*time.Second, "c1"))...)
	caughtUp(t, conn, first.p)
	first.stop()

	if err := js(t, srv).DeleteStream(ctx, events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	if err := conn.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatal(err)
	}
	second := startPipeline(t, conn, opts, nil)
	emit(t, conn, ot.Stamped(ot.Breaker("b1", at(time.Minute), tts, events.BreakerClosed, events.BreakerOpen))...)
	waitFor(t, "the breaker alert from the new stream", 10*time.Second, func() bool { return len(alertsStored(t, conn)) == 1 })
	if s := second.p.Snapshot().Services; len(s) != 1 || s[0].Status != events.StatusDown {
		t.Errorf("services %+v", s)
	}
}

func TestCorruptStateStops(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	kv, err := conn.KeyValue(ctx, StateBucket, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "observer", []byte(`{"v":1,"seq":3,"engine":{"v":99}}`)); err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, conn, Options{})
	if err == nil || !strings.Contains(err.Error(), `delete it to start afresh`) {
		t.Errorf("New with a state of an unknown version: %v", err)
	}
}

// js is a raw JetStream client, for changing what the bus does not let the
// observer touch.
func js(t *testing.T, srv *natstest.Server) jetstream.JetStream {
	t.Helper()
	_, js := srv.Raw(t)
	return js
}
