package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// plugin is the real jsonl binary, built once for the package.
var plugin string

func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "jsonl")) }

var t0 = time.Date(2025, 3, 14, 9, 27, 5, 589_000_000, time.UTC)

func ref() events.CallRef {
	return events.CallRef{CallID: "call-7f3a9c2e", Campaign: "spring-renewals", ContactID: "contact-0042", Contact: "+91888****882"}
}

// readLines decodes every line of path.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func TestWritesSeedLogSchema(t *testing.T) {
	tests := []struct {
		name string
		ev   events.Event
		want map[string]any // the seeds' six fields, and the event's type
	}{
		{"failed attempt", &events.Attempt{
			Header: events.Header{Time: t0}, CallRef: ref(), Service: "elevenlabs", Attempt: 2, MaxAttempts: 4,
			Outcome: events.OutcomeFailure, ErrorCategory: events.CategoryTransient, StatusCode: 503,
			Message: "503 Service Unavailable", LatencyMs: 812, BreakerState: events.BreakerClosed,
		}, map[string]any{"timestamp": "2025-03-14T09:27:05.589Z", "service": "elevenlabs", "error_category": "transient",
			"retry_count": 1.0, "circuit_breaker_state": "closed", "message": "503 Service Unavailable", "type": "attempt"}},
		{"scheduled retry", &events.Retry{
			Header: events.Header{Time: t0}, CallRef: ref(), Service: "elevenlabs", Attempt: 3, RetryInMs: 20000,
			ErrorCategory: events.CategoryTransient, StatusCode: 503, BreakerState: events.BreakerClosed,
		}, map[string]any{"timestamp": "2025-03-14T09:27:05.589Z", "service": "elevenlabs", "error_category": "transient",
			"retry_count": 3.0, "circuit_breaker_state": "closed", "message": "retry after attempt 3 in 20000ms", "type": "retry"}},
		{"breaker opened", &events.Breaker{
			Header: events.Header{Time: t0}, Service: "elevenlabs", From: events.BreakerClosed, To: events.BreakerOpen,
			BreakerState: events.BreakerOpen, Reason: "5 consecutive failures",
		}, map[string]any{"timestamp": "2025-03-14T09:27:05.589Z", "service": "elevenlabs", "error_category": "",
			"retry_count": 0.0, "circuit_breaker_state": "open", "message": "breaker closed -> open: 5 consecutive failures", "type": "breaker"}},
	}
	path := filepath.Join(t.TempDir(), "logs", "agent.jsonl")
	p := sinktest.Start(t, plugin, map[string]any{"path": path})
	var batch []sink.Record
	for _, tt := range tests {
		batch = append(batch, sinktest.Record(t, tt.ev))
	}
	sinktest.DeliverAll(t, p, batch)
	lines := readLines(t, path)
	if len(lines) != len(tests) {
		t.Fatalf("%d lines, want %d", len(lines), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, want := range tt.want {
				if got := lines[i][k]; got != want {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
			if lines[i]["event_id"] != batch[i].ID {
				t.Errorf("event_id = %v, want %s", lines[i]["event_id"], batch[i].ID)
			}
		})
	}
}

func attempt(t *testing.T, n int) sink.Record {
	return sinktest.Record(t, &events.Attempt{
		CallRef: ref(), Service: "llm", Attempt: n, Outcome: events.OutcomeSuccess, LatencyMs: 40,
	})
}

func TestRedeliveryDoesNotDuplicate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.jsonl")
	batch := []sink.Record{attempt(t, 1), attempt(t, 2), attempt(t, 3)}
	fourth := attempt(t, 4)
	p := sinktest.Start(t, plugin, map[string]any{"path": path})

	steps := []struct {
		name  string
		batch []sink.Record
		// restart replaces the plugin process first, as a crash would.
		restart bool
		lines   int
	}{
		{"first delivery", batch[:2], false, 2},
		{"same batch again", batch[:2], false, 2},
		{"overlapping batch", batch, false, 3},
		{"after a restart", batch, true, 3},
		{"duplicate inside one batch", []sink.Record{batch[0], fourth, fourth}, false, 4},
	}
	parent := t
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.restart {
				p.Kill()
				p = sinktest.Start(parent, plugin, map[string]any{"path": path})
			}
			sinktest.DeliverAll(t, p, st.batch)
			if n := len(readLines(t, path)); n != st.lines {
				t.Errorf("%d lines, want %d", n, st.lines)
			}
		})
	}
}

func TestMalformedRecordIsPermanent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.jsonl")
	p := sinktest.Start(t, plugin, map[string]any{"path": path})
	good := attempt(t, 1)
	bad := sink.Record{ID: "bad", Kind: sink.KindEvent, Subject: "agent.attempt.llm", Data: []byte(`{"type":"attempt"`)}
	res, err := p.Deliver(t.Context(), []sink.Record{bad, good})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != sink.Permanent || res[1].Status != sink.Delivered {
		t.Errorf("results %v, want permanent then delivered", res)
	}
	if n := len(readLines(t, path)); n != 1 {
		t.Errorf("%d lines, want 1", n)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string
	}{
		{"no path", `{}`},
		{"unknown key", `{"path":"x.jsonl","pth":"y"}`},
		{"wrong type", `{"path":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sink.Start(t.Context(), sinktest.Spec(t, plugin, tt.config))
			if !errors.Is(err, sink.ErrConfig) {
				t.Errorf("start: %v, want ErrConfig", err)
			}
		})
	}
}

// BenchmarkDeliver measures events per second written through the real
// plugin process, fsync included, one event per call against batches of 100.
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "bench.jsonl")
			p, err := sink.Start(b.Context(), sink.PluginSpec{Path: plugin, Logger: slog.New(slog.DiscardHandler),
				Config: []byte(fmt.Sprintf(`{"path":%q}`, path))})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Kill()
			recs := make([]sink.Record, size)
			for i := range recs {
				recs[i] = sinktest.Record(b, &events.Attempt{CallRef: ref(), Service: "elevenlabs", Attempt: 2,
					Outcome: events.OutcomeFailure, ErrorCategory: events.CategoryTransient, StatusCode: 503,
					Message: "503 Service Unavailable", LatencyMs: 812, BreakerState: events.BreakerClosed})
			}
			b.ResetTimer()
			items := 0
			for items < b.N {
				// Fresh ids each round, or the dedupe would skip the writes.
				for i := range recs {
					recs[i].ID = events.NewID()
				}
				if _, err := p.Deliver(b.Context(), recs); err != nil {
					b.Fatal(err)
				}
				items += size
			}
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
