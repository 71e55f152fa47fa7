package report_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/report"
	"github.com/callagent/agent/internal/observer/rules"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

// seedReport derives the seed scenario the way replay does and reports it.
func seedReport(t *testing.T) *report.Report {
	t.Helper()
	end := t0.Add(10 * time.Minute)
	e := rules.New(config.Default().Observer.Rules)
	b := report.New(t0, end, 0)
	add := func(outs []rules.Output) {
		for _, o := range outs {
			if o.Alert != nil {
				b.Add(observertest.Stamped(o.Alert)[0])
			} else {
				b.Add(observertest.Stamped(o.Status)[0])
			}
		}
	}
	for _, ev := range observertest.Seed("seed", t0) {
		add(e.Advance(ev.Head().Time))
		b.Add(ev)
		add(e.Apply(ev))
	}
	add(e.Advance(end))
	return b.Report()
}

func TestSeedFigures(t *testing.T) {
	r := seedReport(t)
	s := r.Service("elevenlabs")
	if s == nil {
		t.Fatal("no elevenlabs in the report")
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	checks := []struct {
		name      string
		got, want any
	}{
		{"impact began", *s.ImpactBegan, t0.Add(ms(500))},
		{"impact ended", *s.ImpactEnded, t0.Add(ms(36500))},
		// The retries_exhausted group is sent when contact 2 succeeds, which
		// resolves it: first failure at 0.5 s, first alert at 36.5 s.
		{"time to detect", time.Duration(*s.TimeToDetect), 36 * time.Second},
		{"time to recover", time.Duration(*s.TimeToRecover), 36 * time.Second},
		{"calls affected", s.CallsAffected, 1},
		{"call ids", strings.Join(s.CallIDs, ","), "call-1"},
		{"failures", s.Failures, 4},
		{"attempts", s.Attempts, 6},
		{"retries", s.Retries, 3},
		{"alerts fired", s.AlertsFired, 1},
		{"alerts resolved", s.AlertsResolved, 1},
		{"rules", strings.Join(s.Rules, ","), rules.RuleRetriesExhausted},
		{"final status", s.FinalStatus, events.StatusUp},
		{"calls total", r.Calls.Total, 3},
		{"calls completed", r.Calls.Completed, 2},
		{"calls failed", r.Calls.Failed, 1},
		{"report fired", r.Fired(), 1},
		{"llm impact", r.Service("llm").ImpactBegan == nil, true},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	r := seedReport(t)
	tests := []struct {
		format string
		want   []string
	}{
		{report.FormatText, []string{
			"Calls: 3 calls: 2 completed, 1 failed, 0 skipped (2/3 succeeded)",
			"elevenlabs", "36s", "retries_exhausted",
			"elevenlabs attempt 1/4 failed: transient HTTP 503 service_unavailable",
			"elevenlabs retry after attempt 1/4 in 5s",
			"call call-1 failed: retries_exhausted, elevenlabs, HTTP 503",
			"elevenlabs status up -> degraded: 2 attempts failed in a row",
			"ALERT firing warning retries_exhausted",
		}},
		{report.FormatMarkdown, []string{
			"# Post-mortem", "| Service | Impact began |", "| elevenlabs | 2026-03-14 09:00:00.500Z | 2026-03-14 09:00:36.500Z | 36s | 36s | 1 |",
			"retries\\_exhausted",
		}},
		{report.FormatJSON, []string{`"time_to_detect": "36s"`, `"calls_affected": 1`}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := r.Write(&buf, tt.format); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("%s report lacks %q:\n%s", tt.format, w, buf.String())
				}
			}
		})
	}
	t.Run("json round trip", func(t *testing.T) {
		var buf bytes.Buffer
		if err := r.Write(&buf, report.FormatJSON); err != nil {
			t.Fatal(err)
		}
		var back report.Report
		if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
			t.Fatal(err)
		}
		if got := back.Service("elevenlabs").TimeToDetect; got == nil || time.Duration(*got) != 36*time.Second {
			t.Errorf("time to detect after round trip: %v", got)
		}
	})
	t.Run("unknown format", func(t *testing.T) {
		if err := r.Write(&bytes.Buffer{}, "yaml"); !errors.Is(err, report.ErrFormat) {
			t.Errorf("err %v, want ErrFormat", err)
		}
	})
}

func TestTimelineLimit(t *testing.T) {
	b := report.New(t0, t0.Add(time.Hour), 2)
	for _, ev := range observertest.Seed("seed", t0) {
		b.Add(ev)
	}
	r := b.Report()
	if len(r.Timeline) != 2 || r.TimelineOmitted == 0 {
		t.Errorf("timeline %d entries, %d omitted", len(r.Timeline), r.TimelineOmitted)
	}
}
