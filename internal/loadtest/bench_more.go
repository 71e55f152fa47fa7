package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/simulator"
)

// The realistic-latency figure's shape, from the issue: one caller holding
// this many calls in flight, each provider request taking RealisticLatency
// and each answered call lasting RealisticCall.
const (
	RealisticInFlight = 1000
	RealisticLatency  = time.Second
	RealisticCall     = 60 * time.Second
)

// RealisticScenario is what the simulator plays for the realistic figure:
// every provider request takes RealisticLatency and a completed call stays
// in progress for RealisticCall in wall time.
func RealisticScenario() simulator.Scenario {
	return simulator.Scenario{
		Name:    "realistic",
		Latency: simulator.Duration(RealisticLatency),
		Services: map[string]simulator.Service{
			simulator.ServiceTelephony: {CallDuration: simulator.Duration(RealisticCall), RealTime: true},
		},
	}
}

// benchRealistic runs n calls through one caller with RealisticInFlight
// calls at once against RealisticScenario.
func benchRealistic(ctx context.Context, set Setup, n int) (*CallsReport, error) {
	sc := RealisticScenario()
	return RunCalls(ctx, CallsOptions{
		Setup: set, Contacts: n, Callers: 1,
		Concurrency: RealisticInFlight, FleetMaxInFlight: RealisticInFlight,
		Scenario: &sc, Timeout: 10 * time.Minute,
	})
}

// littleRow judges a realistic run by Little's law: with L calls in flight
// for a mean latency W each, the throughput should be L/W.
func littleRow(name string, cr *CallsReport, inFlight int) BenchRow {
	cps := cr.CallsPerSecond()
	little := 0.0
	if cr.MeanLatency > 0 {
		little = float64(inFlight) / cr.MeanLatency.Seconds()
	}
	var rss int64
	if len(cr.Callers) > 0 {
		rss = cr.Callers[0].PeakRSS
	}
	rssOK := rss > 0 && rss <= 300<<20
	return BenchRow{Name: name, Value: cps, Unit: "calls/s",
		Ceiling: little, CeilingName: fmt.Sprintf("Little %d / %.1f s", inFlight, cr.MeanLatency.Seconds()),
		Goal: ">= 90 %, RSS <= 300 MB", Met: judge(little > 0 && cps >= 0.9*little && rssOK),
		Note: fmt.Sprintf("%d calls, 1 caller (concurrency = fleet_max_in_flight = %d); mean call %s (started -> outcome stored); caller peak RSS %s, CPU %s; wall %s",
			cr.Contacts, inFlight, cr.MeanLatency.Round(time.Millisecond), mib(rss), cpuOf(cr.Callers), cr.Wall.Round(time.Second))}
}

// benchReplay publishes n events of the observer's mix (event times spread
// over the hour before now) with asynchronous publishes, then runs
// `observer replay --format json` over that window and returns the events
// it re-derived per second of its run (process start to exit).
func benchReplay(ctx context.Context, set Setup, n int) (rate float64, took time.Duration, err error) {
	e, err := start(ctx, set, simulator.Scenario{Name: "healthy"}, "observer")
	if err != nil {
		return 0, 0, err
	}
	defer e.close()
	pub, err := e.connect(ctx, config.RoleCaller, "bench-replay")
	if err != nil {
		return 0, 0, err
	}
	defer pub.Close()
	step := time.Hour / time.Duration(n)
	began := time.Now()
	t0 := began.Add(-time.Hour)
	if err := publishMix(ctx, pub, "replay", n, t0, step); err != nil {
		return 0, 0, err
	}
	e.progressf("replay: %d events published in %s", n, time.Since(began).Round(time.Millisecond))
	cfg := e.baseConfig()
	path, err := e.writeConfig("replay.yaml", cfg)
	if err != nil {
		return 0, 0, err
	}
	to := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "observer"), "replay", "--config", path,
		"--from", t0.Add(-time.Second).UTC().Format(time.RFC3339Nano), "--to", to.UTC().Format(time.RFC3339Nano),
		"--format", "json", "--limit", "100")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	rs := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("observer replay: %w: %s", err, lastLines(stderr.String(), 5))
	}
	took = time.Since(rs)
	var rep struct {
		Events int `json:"events"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return 0, 0, fmt.Errorf("observer replay: report: %w", err)
	}
	if rep.Events < n {
		return 0, 0, fmt.Errorf("observer replay counted %d events of %d", rep.Events, n)
	}
	rate = perSecond(float64(n), took)
	e.progressf("replay: %d events re-derived in %s, %s events/s", n, took.Round(time.Millisecond), num(rate))
	return rate, took, nil
}
