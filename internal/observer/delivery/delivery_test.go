package delivery_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/sink"
)

func TestAlertReachesWebhook(t *testing.T) {
	type post struct {
		events []json.RawMessage
		sig    string
	}
	var mu sync.Mutex
	var posts []post
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		posts = append(posts, post{p.Events, r.Header.Get("X-Agent-Signature")})
		mu.Unlock()
	}))
	defer hook.Close()

	conn := natstest.Start(t).Conn(t)
	a := alert(t, conn, events.SeverityCritical, "elevenlabs")
	r := run(t, conn, nil, fastSink("hook", "webhook", map[string]any{"url": hook.URL, "secret": "s3cret"}))

	waitFor(t, 10*time.Second, "the webhook receives the alert", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(posts) > 0
	})
	mu.Lock()
	got := posts[0]
	mu.Unlock()
	if len(got.events) != 1 {
		t.Fatalf("webhook got %d events, want 1", len(got.events))
	}
	ev, err := events.DecodeAs[*events.Alert](got.events[0])
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != a.ID || ev.Fingerprint != a.Fingerprint || ev.Summary != a.Summary {
		t.Errorf("webhook got %+v, want the alert %+v", ev, a)
	}
	if !strings.HasPrefix(got.sig, "sha256=") {
		t.Errorf("signature header %q: the plugin did not get its configuration", got.sig)
	}

	var rs []*events.Delivery
	waitFor(t, 10*time.Second, "a receipt on agent.delivery.hook", func() bool {
		rs = receipts(t, conn, "hook")
		return len(rs) > 0
	})
	want := events.Delivery{Sink: "hook", Outcome: events.DeliveryDelivered, RefID: a.ID, RefType: events.TypeAlert,
		Fingerprint: a.Fingerprint, Attempts: 1}
	if len(rs) != 1 || rs[0].Sink != want.Sink || rs[0].Outcome != want.Outcome || rs[0].RefID != want.RefID ||
		rs[0].RefType != want.RefType || rs[0].Fingerprint != want.Fingerprint || rs[0].Attempts != want.Attempts {
		t.Errorf("receipts %+v, want one like %+v", rs, want)
	}
	waitFor(t, 5*time.Second, "status settles", func() bool {
		st := status(t, r, "hook")
		return st.Delivered == 1 && st.Backlog == 0 && st.Healthy
	})
	if st := status(t, r, "hook"); st.Kind != delivery.KindAlert || st.Retried != 0 || st.DeadLetters != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestKilledPluginIsRestartedAndItsBatchDelivered(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	touch(t, s.hangOnce) // the first Deliver hangs until killed
	r := run(t, conn, nil, fastSink("crashy", "scripted", s.config(nil)))
	a := alert(t, conn, events.SeverityCritical, "llm")

	waitFor(t, 10*time.Second, "the plugin hangs in Deliver", func() bool {
		_, err := os.Stat(s.hangOnce + ".hung")
		return err == nil
	})
	b, err := os.ReadFile(s.pid)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 15*time.Second, "the alert is delivered by the restarted plugin", func() bool {
		return len(s.delivered(t)) > 0
	})
	if got := s.delivered(t); !slices.Equal(got, []string{a.ID}) {
		t.Errorf("delivered %v, want [%s] once", got, a.ID)
	}
	if b, _ := os.ReadFile(s.pid); string(b) == strconv.Itoa(pid) {
		t.Errorf("the plugin was not restarted: pid still %d", pid)
	}
	if v, _, _ := metric(t, r.reg, "agent_sink_plugin_restarts_total", map[string]string{"sink": "crashy"}); v != 1 {
		t.Errorf("restarts metric = %v, want 1", v)
	}
	var rs []*events.Delivery
	waitFor(t, 5*time.Second, "one receipt", func() bool { rs = receipts(t, conn, "crashy"); return len(rs) == 1 })
	if rs[0].RefID != a.ID || rs[0].Attempts < 2 {
		t.Errorf("receipt %+v: want ref %s after at least 2 attempts", rs[0], a.ID)
	}
	if st := status(t, r, "crashy"); st.Retried == 0 || st.DeadLetters != 0 || !strings.Contains(st.LastError, "unavailable") {
		t.Errorf("status %+v: want a retry, no dead letter, the crash as last error", st)
	}
}

func TestFailingSinkGetsEverythingAfterRecovery(t *testing.T) {
	tests := []struct {
		name string
		kind string
	}{
		{"alert sink", delivery.KindAlert},
		{"log sink", delivery.KindLog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := natstest.Start(t).Conn(t)
			s := newScript(t)
			touch(t, s.down)
			sc := fastSink("flaky", "scripted", s.config(nil))
			sc.Kind = tt.kind
			sc.MaxAttempts = 1000 // the outage is shorter than the tries
			r := run(t, conn, nil, sc)

			const n = 30
			var want []string
			for i := range n {
				if tt.kind == delivery.KindAlert {
					want = append(want, alert(t, conn, events.SeverityWarning, "svc"+strconv.Itoa(i)).ID)
					continue
				}
				ev := &events.Attempt{Service: "llm", Attempt: 1, Outcome: events.OutcomeSuccess}
				if err := conn.Emit(t.Context(), ev); err != nil {
					t.Fatal(err)
				}
				want = append(want, ev.ID)
			}
			waitFor(t, 10*time.Second, "every record failed at least once", func() bool {
				return deliveries(t, r, "flaky", "retried") >= n
			})
			if st := status(t, r, "flaky"); st.Healthy || st.LastError != "channel down" || st.Backlog != n {
				t.Errorf("status during the outage %+v: want unhealthy, channel down, backlog %d", st, n)
			}
			remove(t, s.down)

			waitFor(t, 15*time.Second, "every record delivered after recovery", func() bool {
				return len(s.delivered(t)) >= n
			})
			if err := sameSet(s.delivered(t), want); err != nil {
				t.Errorf("after recovery: %v", err)
			}
			waitFor(t, 5*time.Second, "status settles", func() bool {
				st := status(t, r, "flaky")
				return st.Backlog == 0 && st.Delivered == n && st.Healthy
			})
			if st := status(t, r, "flaky"); st.DeadLetters != 0 {
				t.Errorf("status %+v: want no dead letters", st)
			}
			rs := receipts(t, conn, "flaky")
			if tt.kind == delivery.KindLog && len(rs) != 0 {
				t.Errorf("log sink left %d receipts, want none", len(rs))
			}
			if tt.kind == delivery.KindAlert {
				var refs []string
				for _, d := range rs {
					refs = append(refs, d.RefID)
				}
				if err := sameSet(refs, want); err != nil {
					t.Errorf("receipts: %v", err)
				}
			}
		})
	}
}

// The sink's own RetryAfter decides the redelivery, not the backoff: with a
// one-minute backoff the alert would miss the deadline below.
func TestRetryAfterIsHonoured(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	touch(t, s.down)
	sc := fastSink("ratelimited", "scripted", s.config(map[string]any{"retry_after_ms": 50}))
	sc.Backoff, sc.MaxBackoff = time.Minute, time.Minute
	r := run(t, conn, nil, sc)
	a := alert(t, conn, events.SeverityCritical, "telephony")
	waitFor(t, 10*time.Second, "a retry", func() bool { return deliveries(t, r, "ratelimited", "retried") >= 1 })
	remove(t, s.down)
	waitFor(t, 10*time.Second, "delivery after the sink's retry-after", func() bool { return len(s.delivered(t)) == 1 })
	if got := s.delivered(t); got[0] != a.ID {
		t.Errorf("delivered %v, want %s", got, a.ID)
	}
}

func TestDeadLetters(t *testing.T) {
	tests := []struct {
		name     string
		config   map[string]any
		attempts int
		reason   string
	}{
		{"always retryable, dead after max_attempts", map[string]any{"status": "retryable", "reason": "503 from the channel"},
			3, "503 from the channel (after 3 attempts)"},
		{"permanent at once", map[string]any{"status": "permanent", "reason": "chat not found"},
			1, "chat not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := natstest.Start(t).Conn(t)
			s := newScript(t)
			sc := fastSink("doomed", "scripted", s.config(tt.config))
			sc.MaxAttempts = 3
			logs := &logRecorder{}
			r := run(t, conn, slog.New(logs), sc)
			a := alert(t, conn, events.SeverityCritical, "crm")

			var rs []*events.Delivery
			waitFor(t, 10*time.Second, "a dead letter", func() bool { rs = receipts(t, conn, "doomed"); return len(rs) > 0 })
			d := rs[0]
			if len(rs) != 1 || d.Outcome != events.DeliveryDeadLetter || d.RefID != a.ID || d.RefType != events.TypeAlert ||
				d.Fingerprint != a.Fingerprint || d.Attempts != tt.attempts || d.Message != tt.reason {
				t.Errorf("delivery events %+v, want one dead letter for %s after %d attempts: %q", rs, a.ID, tt.attempts, tt.reason)
			}
			if got := len(s.batches(t)); got != tt.attempts {
				t.Errorf("plugin called %d times, want %d", got, tt.attempts)
			}
			logged := logs.find("dead letter", slog.LevelError)
			if len(logged) != 1 || logged[0]["ref_id"] != a.ID || logged[0]["reason"] != tt.reason || logged[0]["sink"] != "doomed" {
				t.Errorf("error log lines %v, want one for %s", logged, a.ID)
			}
			waitFor(t, 5*time.Second, "the message is terminated", func() bool {
				st := status(t, r, "doomed")
				return st.Backlog == 0 && st.DeadLetters == 1
			})
			if st := status(t, r, "doomed"); st.Delivered != 0 || st.Healthy || st.LastError != tt.reason {
				t.Errorf("status %+v", st)
			}
			if v := deliveries(t, r, "doomed", "dead_letter"); v != 1 {
				t.Errorf("dead_letter metric = %v", v)
			}
			if v := deliveries(t, r, "doomed", "retried"); v != float64(tt.attempts-1) {
				t.Errorf("retried metric = %v, want %d", v, tt.attempts-1)
			}
		})
	}
}

func TestMalformedMessageIsADeadLetter(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	sc := fastSink("strict", "scripted", s.config(nil))
	sc.Kind = delivery.KindLog
	r := run(t, conn, nil, sc)
	if _, err := conn.PublishMsg(t.Context(), "agent.attempt.llm", "bad-1", []byte(`{"type":"attempt"`)); err != nil {
		t.Fatal(err)
	}
	var rs []*events.Delivery
	waitFor(t, 10*time.Second, "a dead letter", func() bool { rs = receipts(t, conn, "strict"); return len(rs) > 0 })
	if rs[0].Outcome != events.DeliveryDeadLetter || rs[0].RefID != "bad-1" || !strings.HasPrefix(rs[0].Message, "malformed event") {
		t.Errorf("dead letter %+v", rs[0])
	}
	if len(s.batches(t)) != 0 {
		t.Errorf("a malformed message reached the plugin")
	}
	waitFor(t, 5*time.Second, "nothing left", func() bool { return status(t, r, "strict").Backlog == 0 })
}

// A broken or stuck sink configured beside a healthy one: the healthy one
// delivers everything while the stuck one still holds its first batch.
func TestBrokenSinkDoesNotDelayOthers(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	stuck, broken, healthy := newScript(t), newScript(t), newScript(t)
	touch(t, stuck.hold)
	r := run(t, conn, nil,
		fastSink("stuck", "scripted", stuck.config(nil)),
		fastSink("broken", "scripted", broken.config(map[string]any{"status": "permanent", "reason": "rejected"})),
		fastSink("healthy", "scripted", healthy.config(nil)),
	)
	const n = 25
	want := alerts(t, conn, n)

	waitFor(t, 15*time.Second, "the healthy sink has every alert", func() bool { return len(healthy.delivered(t)) >= n })
	if err := sameSet(healthy.delivered(t), want); err != nil {
		t.Errorf("healthy: %v", err)
	}
	waitFor(t, 5*time.Second, "the stuck sink is holding a batch", func() bool { return len(stuck.batches(t)) > 0 })
	if got := len(stuck.delivered(t)); got != 0 {
		t.Fatalf("stuck sink delivered %d while held", got)
	}
	waitFor(t, 15*time.Second, "the broken sink dead-letters every alert", func() bool {
		return status(t, r, "broken").DeadLetters == n
	})

	remove(t, stuck.hold)
	waitFor(t, 15*time.Second, "the stuck sink catches up", func() bool { return len(stuck.delivered(t)) >= n })
	if err := sameSet(stuck.delivered(t), want); err != nil {
		t.Errorf("stuck: %v", err)
	}
	if st := status(t, r, "healthy"); st.Delivered != n || st.Retried != 0 || !st.Healthy {
		t.Errorf("healthy status %+v", st)
	}
}

func TestSeverityFiltering(t *testing.T) {
	tests := []struct {
		min  string
		want []string // severities delivered
	}{
		{events.SeverityInfo, []string{events.SeverityInfo, events.SeverityWarning, events.SeverityCritical}},
		{events.SeverityWarning, []string{events.SeverityWarning, events.SeverityCritical}},
		{events.SeverityCritical, []string{events.SeverityCritical}},
	}
	conn := natstest.Start(t).Conn(t)
	bySeverity := map[string]string{}
	for _, sev := range []string{events.SeverityInfo, events.SeverityWarning, events.SeverityCritical} {
		bySeverity[alert(t, conn, sev, "telephony").ID] = sev
	}
	var sinks []config.Sink
	scripts := map[string]*script{}
	for _, tt := range tests {
		s := newScript(t)
		sc := fastSink("min-"+tt.min, "scripted", s.config(nil))
		sc.MinSeverity = tt.min
		sinks = append(sinks, sc)
		scripts[tt.min] = s
	}
	r := run(t, conn, nil, sinks...)
	for _, tt := range tests {
		t.Run(tt.min, func(t *testing.T) {
			name := "min-" + tt.min
			waitFor(t, 10*time.Second, "every alert settled", func() bool {
				st := status(t, r, name)
				return st.Backlog == 0 && st.Delivered == uint64(len(tt.want))
			})
			var got []string
			for _, id := range scripts[tt.min].delivered(t) {
				got = append(got, bySeverity[id])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("delivered severities %v, want %v", got, tt.want)
			}
			if rs := receipts(t, conn, name); len(rs) != len(tt.want) {
				t.Errorf("%d receipts, want %d", len(rs), len(tt.want))
			}
			filtered, _, _ := metric(t, r.reg, "agent_sink_filtered_total", map[string]string{"sink": name})
			if int(filtered) != 3-len(tt.want) {
				t.Errorf("filtered = %v, want %d", filtered, 3-len(tt.want))
			}
		})
	}
}

func TestLogSinkReceivesEventsInBatches(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	const n = 25
	var want []string
	for i := range n {
		ev := &events.Attempt{Service: "elevenlabs", Attempt: i%3 + 1, Outcome: events.OutcomeFailure,
			ErrorCategory: events.CategoryTransient, StatusCode: 503, Message: "503 Service Unavailable"}
		if err := conn.Emit(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		want = append(want, ev.ID)
	}
	// Outside the sink's subjects: never delivered.
	if err := conn.Emit(t.Context(), &events.Breaker{Service: "elevenlabs", From: events.BreakerClosed,
		To: events.BreakerOpen, BreakerState: events.BreakerOpen}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	sc := fastSink("jsonl", "jsonl", map[string]any{"path": path})
	sc.Kind = delivery.KindLog
	sc.Subjects = []string{events.AttemptAll}
	sc.BatchSize = 10
	r := run(t, conn, nil, sc)

	waitFor(t, 10*time.Second, "every event in the file", func() bool { return len(lines(t, path)) >= n })
	var got []string
	for _, l := range lines(t, path) {
		var rec struct {
			EventID string `json:"event_id"`
			Service string `json:"service"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, rec.EventID)
	}
	if err := sameSet(got, want); err != nil {
		t.Errorf("jsonl file: %v", err)
	}
	// Everything was in the stream before the sink started: 10 + 10 + 5.
	// The batch is observed after the plugin has written it, so the file
	// can be complete a moment before the histogram is.
	var (
		batches uint64
		records float64
	)
	waitFor(t, 5*time.Second, "every batch observed", func() bool {
		_, batches, records = metric(t, r.reg, "agent_sink_batch_size", map[string]string{"sink": "jsonl"})
		return records >= n
	})
	if batches != 3 || records != n {
		t.Errorf("%d batches of %v records in all, want 3 batches of 25", batches, records)
	}
	if rs := receipts(t, conn, "jsonl"); len(rs) != 0 {
		t.Errorf("a log sink left %d receipts", len(rs))
	}
	waitFor(t, 5*time.Second, "status settles", func() bool {
		st := status(t, r, "jsonl")
		return st.Backlog == 0 && st.Delivered == n && st.Kind == delivery.KindLog
	})
}

// After the observer stops between delivering and acknowledging (here: the
// consumer is reset so the alert goes again), the repeated receipt carries
// the same id and the stream keeps one.
func TestRedeliveredAlertLeavesOneReceipt(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	sc := fastSink("once", "scripted", s.config(nil))
	a := alert(t, conn, events.SeverityCritical, "llm")

	first := run(t, conn, nil, sc)
	waitFor(t, 10*time.Second, "first delivery", func() bool { return len(s.delivered(t)) == 1 })
	waitFor(t, 5*time.Second, "first receipt", func() bool { return len(receipts(t, conn, "once")) == 1 })
	first.stop()
	if err := conn.DeleteConsumer(t.Context(), events.StreamAlerts, "sink-once"); err != nil {
		t.Fatal(err)
	}

	second := run(t, conn, nil, sc)
	waitFor(t, 10*time.Second, "second delivery", func() bool { return len(s.delivered(t)) == 2 })
	waitFor(t, 5*time.Second, "settled", func() bool { return status(t, second, "once").Delivered == 1 })
	if rs := receipts(t, conn, "once"); len(rs) != 1 || rs[0].RefID != a.ID {
		t.Errorf("receipts %+v, want one for %s", rs, a.ID)
	}
}

// A restarted observer resumes its sinks' consumers where they were.
func TestRestartResumesConsumer(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	sc := fastSink("resume", "scripted", s.config(nil))
	ids := alerts(t, conn, 3)
	first := run(t, conn, nil, sc)
	waitFor(t, 10*time.Second, "first three", func() bool { return len(s.delivered(t)) == 3 })
	first.stop()
	ids = append(ids, alerts(t, conn, 2)...)
	run(t, conn, nil, sc)
	waitFor(t, 10*time.Second, "the two published while stopped", func() bool { return len(s.delivered(t)) == 5 })
	if err := sameSet(s.delivered(t), ids); err != nil {
		t.Error(err)
	}
}

// consumerExists waits for the sink's durable consumer, so what is
// published next is "after the sink started".
func consumerExists(t *testing.T, conn *bus.Conn, sinkName string) {
	t.Helper()
	waitFor(t, 10*time.Second, "consumer sink-"+sinkName, func() bool {
		_, err := conn.ConsumerInfo(t.Context(), events.StreamAlerts, "sink-"+sinkName)
		return err == nil
	})
}

// issue 9: a sink added to the config delivered an alert of an earlier
// campaign. A new sink starts at "now" unless sinks[].start says otherwise;
// an existing one keeps its position.
func TestNewSinkStartsNow(t *testing.T) {
	tests := []struct {
		start   string
		wantOld bool
	}{
		{start: "", wantOld: false}, // the default
		{start: "now", wantOld: false},
		{start: "all", wantOld: true},
		{start: "24h", wantOld: true},
	}
	for _, tt := range tests {
		t.Run("start="+tt.start, func(t *testing.T) {
			conn := natstest.Start(t).Conn(t)
			old := alerts(t, conn, 3) // an earlier campaign's alerts
			s := newScript(t)
			sc := fastSink("added", "scripted", s.config(nil))
			sc.Start = tt.start
			r := run(t, conn, nil, sc)
			consumerExists(t, conn, sc.Name)
			newer := alerts(t, conn, 2)
			want := newer
			if tt.wantOld {
				want = append(slices.Clone(old), newer...)
			}
			waitFor(t, 10*time.Second, "the new alerts", func() bool {
				got := s.delivered(t)
				return slices.Contains(got, newer[0]) && slices.Contains(got, newer[1])
			})
			waitFor(t, 5*time.Second, "backlog empty", func() bool { return status(t, r, sc.Name).Backlog == 0 })
			if err := sameSet(s.delivered(t), want); err != nil {
				t.Fatalf("start %q: %v", tt.start, err)
			}
			// The durable keeps its position across a restart: what was
			// published while it was stopped is delivered, nothing twice.
			r.stop()
			missed := alerts(t, conn, 1)
			run(t, conn, nil, sc)
			waitFor(t, 10*time.Second, "the alert published while stopped", func() bool { return slices.Contains(s.delivered(t), missed[0]) })
			if err := sameSet(s.delivered(t), append(want, missed...)); err != nil {
				t.Fatalf("after restart: %v", err)
			}
		})
	}
}

func TestDeliverTo(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	ok, refused := newScript(t), newScript(t)
	okSink := fastSink("replay", "scripted", ok.config(nil))
	okSink.MinSeverity = events.SeverityWarning
	refusedSink := fastSink("refused", "scripted", refused.config(map[string]any{"status": "permanent", "reason": "bad address"}))
	m, err := delivery.New(conn, []config.Sink{okSink, refusedSink}, bin.dir, natstest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	mk := func(sev string) *events.Alert {
		a := &events.Alert{Fingerprint: "fp-" + sev, Rule: "error_rate", Severity: sev, Status: events.AlertFiring,
			Summary: "error rate high", StartsAt: time.Now()}
		return a
	}
	batch := []*events.Alert{mk(events.SeverityInfo), mk(events.SeverityWarning), mk(events.SeverityCritical)}

	if err := m.DeliverTo(t.Context(), "replay", batch); err != nil {
		t.Fatalf("deliver to replay: %v", err)
	}
	if got := ok.delivered(t); !slices.Equal(got, []string{batch[1].ID, batch[2].ID}) {
		t.Errorf("delivered %v, want the warning and the critical alert", got)
	}
	err = m.DeliverTo(t.Context(), "refused", batch[2:])
	if !errors.Is(err, delivery.ErrNotDelivered) || !strings.Contains(err.Error(), "bad address") {
		t.Errorf("deliver to refused: %v, want ErrNotDelivered with the reason", err)
	}
	if err := m.DeliverTo(t.Context(), "nosuch", batch); !errors.Is(err, delivery.ErrUnknownSink) {
		t.Errorf("deliver to nosuch: %v, want ErrUnknownSink", err)
	}
	if rs := receipts(t, conn, "replay"); len(rs) != 0 {
		t.Errorf("DeliverTo published %d delivery events", len(rs))
	}
}

func TestNewRefusesBadSinks(t *testing.T) {
	tests := []struct {
		name string
		sink config.Sink
		want string
	}{
		{"missing plugin", config.Sink{Name: "x", Plugin: "nosuch"}, "sinks[0] (x).plugin"},
		{"plugin not executable", config.Sink{Name: "x", Plugin: "helpers_test.go"}, "not an executable"},
		{"bad kind", config.Sink{Name: "x", Plugin: "scripted", Kind: "metrics"}, "sinks[0] (x).kind"},
		{"bad severity", config.Sink{Name: "x", Plugin: "scripted", MinSeverity: "loud"}, "sinks[0] (x).min_severity"},
		{"bad name", config.Sink{Name: "a.b", Plugin: "scripted"}, "sinks[0] (a.b).name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := bin.dir
			if tt.name == "plugin not executable" {
				dir = "."
			}
			_, err := delivery.New(nil, []config.Sink{tt.sink}, dir, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("new: %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestRunRefusesPluginThatCannotStart(t *testing.T) {
	tests := []struct {
		name string
		sink func(s *script) config.Sink
		is   error
	}{
		{"checksum mismatch", func(s *script) config.Sink {
			sc := fastSink("pinned", "scripted", s.config(nil))
			sc.SHA256 = strings.Repeat("ab", 32)
			return sc
		}, sink.ErrChecksum},
		{"configuration the plugin rejects", func(*script) config.Sink {
			return fastSink("unconfigured", "scripted", map[string]any{"calls": "x"})
		}, sink.ErrConfig},
	}
	conn := natstest.Start(t).Conn(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := delivery.New(conn, []config.Sink{tt.sink(newScript(t))}, bin.dir, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := m.Run(t.Context()); !errors.Is(err, tt.is) {
				t.Errorf("run: %v, want %v", err, tt.is)
			}
		})
	}
}
