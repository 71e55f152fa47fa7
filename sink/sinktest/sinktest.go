// Package sinktest helps test a sink plugin the way the observer runs it:
// build the real binary once, start it through the host API, and hand it
// records made from real events.
package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
)

// Build compiles the plugin's main package pkg (an import path, or "." for
// the package under test) into dir and returns the binary's path. It takes
// no testing.T so that TestMain can build once for the whole package.
func Build(dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
	}
	return out, nil
}

// Main builds the plugin's main package pkg as name once for the whole test
// binary, stores the binary's path in *bin, runs the tests and removes the
// binary. It returns the exit code; TestMain is one line:
//
//	func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "jsonl")) }
func Main(m *testing.M, bin *string, pkg, name string) int {
	dir, err := os.MkdirTemp("", name+"-plugin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = Build(dir, pkg, name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Start starts the plugin at path, configured with config (see JSON) and
// logging to t, and kills it when the test ends.
func Start(t testing.TB, path string, config any) *sink.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p, err := sink.Start(ctx, Spec(t, path, config))
	if err != nil {
		t.Fatalf("start plugin %s: %v", path, err)
	}
	t.Cleanup(p.Kill)
	return p
}

// Spec returns the PluginSpec Start uses, for tests that start the plugin
// themselves (a Supervisor, a checksum).
func Spec(t testing.TB, path string, config any) sink.PluginSpec {
	t.Helper()
	return sink.PluginSpec{
		Name:   filepath.Base(path),
		Path:   path,
		Config: JSON(t, config),
		Logger: Logger(t),
	}
}

// DeliverAll hands batch to p and fails the test unless the plugin
// delivered every record.
func DeliverAll(t testing.TB, p *sink.Plugin, batch []sink.Record) {
	t.Helper()
	res, err := p.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatalf("deliver: %v", err)
	}
	if len(res) != len(batch) {
		t.Fatalf("%d results for %d records: %+v", len(res), len(batch), res)
	}
	for _, r := range res {
		if r.Status != sink.Delivered {
			t.Fatalf("result %+v, want every record delivered: %+v", r, res)
		}
	}
}

// JSON marshals v; a string or []byte is taken as JSON already, nil as none.
func JSON(t testing.TB, v any) []byte {
	t.Helper()
	switch v := v.(type) {
	case nil:
		return nil
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	return b
}

// With sets config's keys from pairs (key, value, key, value...) and returns
// config: a test's base configuration with the settings its case changes.
func With(config map[string]any, pairs ...any) map[string]any {
	for i := 0; i+1 < len(pairs); i += 2 {
		config[pairs[i].(string)] = pairs[i+1]
	}
	return config
}

// Record stamps ev (when its header is empty), encodes it and wraps it as the
// observer would: alerts as KindAlert, everything else as KindEvent.
func Record(t testing.TB, ev events.Event) sink.Record {
	t.Helper()
	events.Stamp(ev, "sinktest", time.Now())
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatalf("encode event: %v", err)
	}
	kind := sink.KindEvent
	if ev.Head().Type == events.TypeAlert {
		kind = sink.KindAlert
	}
	return sink.Record{ID: ev.Head().ID, Kind: kind, Subject: ev.Subject(), Data: data}
}

// Alert returns a firing critical alert for service, complete enough to pass
// validation; tests adjust its fields.
func Alert(service, summary string) *events.Alert {
	now := time.Now().UTC()
	return &events.Alert{
		Fingerprint: "fp-" + service,
		Rule:        "breaker_open",
		Severity:    events.SeverityCritical,
		Status:      events.AlertFiring,
		Service:     service,
		Summary:     summary,
		StartsAt:    now,
		Labels:      map[string]string{"campaign": "spring-renewals"},
	}
}

// Logger returns a logger writing to t.Log, so plugin logs show with the
// test that caused them. Lines logged after the test ended are dropped.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
