package delivery_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/sink/sinktest"
)

// The real plugin binaries, built once for the package: the scripted test
// plugin of testdata/ and the project's jsonl and webhook plugins.
var bin struct {
	dir, scripted, jsonl, webhook string
}

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "delivery-plugins")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin.dir = dir
	for _, b := range []struct {
		out *string
		pkg string
	}{
		{&bin.scripted, "./testdata/scripted"},
		{&bin.jsonl, "github.com/callagent/agent/plugins/jsonl"},
		{&bin.webhook, "github.com/callagent/agent/plugins/webhook"},
	} {
		*b.out, err = sinktest.Build(dir, b.pkg, filepath.Base(b.pkg))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// script is the files a scripted plugin reads and writes.
type script struct {
	dir                                   string
	out, calls, pid, down, hold, hangOnce string
}

func newScript(t *testing.T) *script {
	dir := t.TempDir()
	return &script{
		dir:      dir,
		out:      filepath.Join(dir, "out"),
		calls:    filepath.Join(dir, "calls"),
		pid:      filepath.Join(dir, "pid"),
		down:     filepath.Join(dir, "down"),
		hold:     filepath.Join(dir, "hold"),
		hangOnce: filepath.Join(dir, "hang"),
	}
}

// config is the plugin configuration: the script's files plus extra.
func (s *script) config(extra map[string]any) map[string]any {
	c := map[string]any{
		"out": s.out, "calls": s.calls, "pid_file": s.pid,
		"down_file": s.down, "hold_file": s.hold, "hang_once": s.hangOnce,
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// delivered is the ids the plugin delivered, in order, repeats included.
func (s *script) delivered(t *testing.T) []string { return lines(t, s.out) }

// calls is the batches handed to the plugin, each a list of ids.
func (s *script) batches(t *testing.T) [][]string {
	var out [][]string
	for _, l := range lines(t, s.calls) {
		out = append(out, strings.Fields(l))
	}
	return out
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func lines(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if sc.Text() != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}

// fastSink is a sink tuned for tests: small batches gathered briefly,
// retried after tens of milliseconds.
func fastSink(name, plugin string, cfg map[string]any) config.Sink {
	return config.Sink{
		Name:        name,
		Plugin:      plugin,
		Kind:        delivery.KindAlert,
		BatchSize:   10,
		BatchWait:   50 * time.Millisecond,
		MaxAttempts: 5,
		Backoff:     20 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Timeout:     10 * time.Second,
		// These tests publish before the sink starts and want it all; a
		// sink's default start ("now") has its own test.
		Start:  "all",
		Config: cfg,
	}
}

// running is a Manager whose Run goroutine the test owns.
type running struct {
	*delivery.Manager
	reg  *prometheus.Registry
	stop func()
}

// run starts a Manager for sinks and stops it (drain, then Close) when the
// test ends or stop is called.
func run(t testing.TB, conn *bus.Conn, log *slog.Logger, sinks ...config.Sink) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	if log == nil {
		log = natstest.Logger(t)
	}
	m, err := delivery.New(conn, sinks, bin.dir, log, reg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("run did not return after cancel")
			}
			m.Close()
		})
	}
	t.Cleanup(stop)
	return &running{Manager: m, reg: reg, stop: stop}
}

// metric returns the value of the counter or the histogram's sample count
// and sum, for the series with the given labels.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (value float64, count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return 0, h.GetSampleCount(), h.GetSampleSum()
			}
			return m.GetCounter().GetValue(), 0, 0
		}
	}
	return 0, 0, 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func deliveries(t testing.TB, r *running, sinkName, result string) float64 {
	t.Helper()
	v, _, _ := metric(t, r.reg, "agent_sink_deliveries_total", map[string]string{"sink": sinkName, "result": result})
	return v
}

func status(t *testing.T, r *running, name string) delivery.SinkStatus {
	t.Helper()
	for _, st := range r.Status(t.Context()) {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no status for sink %s", name)
	return delivery.SinkStatus{}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alert publishes an alert of the given severity and returns it.
func alert(t *testing.T, conn *bus.Conn, severity, service string) *events.Alert {
	t.Helper()
	a := sinktest.Alert(service, "breaker open for "+service)
	a.Severity = severity
	if err := conn.Emit(t.Context(), a); err != nil {
		t.Fatalf("emit alert: %v", err)
	}
	return a
}

func alerts(t *testing.T, conn *bus.Conn, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = alert(t, conn, events.SeverityCritical, fmt.Sprintf("svc%d", i)).ID
	}
	return ids
}

// receipts reads every delivery event the stream holds for sink.
func receipts(t *testing.T, conn *bus.Conn, sinkName string) []*events.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	oc, err := conn.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DeliverySubject(sinkName)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*events.Delivery
	for {
		b, err := oc.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			d, err := events.DecodeAs[*events.Delivery](m.Data())
			if err != nil {
				t.Fatalf("delivery event: %v", err)
			}
			out = append(out, d)
		}
		if n == 0 {
			return out
		}
	}
}

// count tallies ids.
func count(ids []string) map[string]int {
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}

// sameSet reports whether got holds exactly want, each once.
func sameSet(got, want []string) error {
	c := count(got)
	if len(got) != len(want) {
		return fmt.Errorf("%d records, want %d (%v)", len(got), len(want), c)
	}
	for _, id := range want {
		if c[id] != 1 {
			return fmt.Errorf("record %s seen %d times", id, c[id])
		}
	}
	return nil
}

// logRecorder is a slog handler that keeps records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{root: r, attrs: as}
}
func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// find returns the attributes of the records with msg at level.
func (r *logRecorder) find(msg string, level slog.Level) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.records {
		if rec.Message != msg || rec.Level != level {
			continue
		}
		a := map[string]string{}
		rec.Attrs(func(at slog.Attr) bool {
			a[at.Key] = at.Value.String()
			return true
		})
		out = append(out, a)
	}
	return out
}

type attrHandler struct {
	root  *logRecorder
	attrs []slog.Attr
}

func (h *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *attrHandler) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(h.attrs...)
	return h.root.Handle(ctx, rec)
}
func (h *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{root: h.root, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}
func (h *attrHandler) WithGroup(string) slog.Handler { return h }
