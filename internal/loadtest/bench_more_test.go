package loadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/simulator"
)

// Little's law: L calls in flight for W seconds each make L/W calls/s; the
// row meets its goal at 90 % of that with the caller under 300 MB.
func TestLittleRow(t *testing.T) {
	run := func(wall, latency time.Duration, rss int64) *CallsReport {
		return &CallsReport{Contacts: 2000, Wall: wall, MeanLatency: latency,
			Callers: []ProcStat{{Name: "caller-1", PeakRSS: rss, CPU: time.Second}}}
	}
	tests := []struct {
		name string
		r    *CallsReport
		met  string
	}{
		{"two full waves", run(130*time.Second, 65*time.Second, 120<<20), "yes"},
		{"half the slots used", run(260*time.Second, 65*time.Second, 120<<20), "no"},
		{"too much memory", run(130*time.Second, 65*time.Second, 400<<20), "no"},
		{"no latency measured", run(130*time.Second, 0, 120<<20), "no"},
		{"no RSS measured", run(130*time.Second, 65*time.Second, 0), "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row := littleRow("x", tt.r, 1000)
			if row.Met != tt.met {
				t.Errorf("met %q, want %q (value %.1f, ceiling %.1f)", row.Met, tt.met, row.Value, row.Ceiling)
			}
		})
	}
	row := littleRow("x", run(130*time.Second, 65*time.Second, 120<<20), 1000)
	if got, want := row.Ceiling, 1000/65.0; got < want-0.01 || got > want+0.01 {
		t.Errorf("ceiling %.3f, want %.3f", got, want)
	}
	if !strings.Contains(row.Note, "120.0 MiB") {
		t.Errorf("note %q lacks the caller's RSS", row.Note)
	}
}

func TestCheckRows(t *testing.T) {
	if err := CheckRows([]string{"realistic", "replay"}); err != nil {
		t.Errorf("known rows: %v", err)
	}
	if err := CheckRows([]string{"replay", "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown row: %v", err)
	}
	if (BenchOptions{}).want("replay") != true || (BenchOptions{Rows: []string{"calls"}}).want("replay") {
		t.Error("want: empty selects all, a list only its rows")
	}
}

// A real caller against a simulator whose calls last their duration in wall
// time: each call's latency covers the call, and every contact still ends
// once. Bounded: 6 calls of 2s, all at once.
func TestRunCallsWaitsForTheCallsEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the caller")
	}
	sc := simulator.Scenario{Name: "slow", Latency: simulator.Duration(20 * time.Millisecond),
		Services: map[string]simulator.Service{
			simulator.ServiceTelephony: {CallDuration: simulator.Duration(2 * time.Second), RealTime: true},
		}}
	r, err := RunCalls(t.Context(), CallsOptions{Setup: Setup{Progress: t.Output()}, Contacts: 6, Callers: 1,
		Concurrency: 6, Scenario: &sc, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("not every call ended once: %+v", r)
	}
	if r.MeanLatency < 2*time.Second {
		t.Errorf("mean call latency %v, want at least the 2s call duration", r.MeanLatency)
	}
}
