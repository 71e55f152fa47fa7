package sink_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// testPlugin is the path of the real testplugin binary, built once.
var testPlugin string

func TestMain(m *testing.M) {
	os.Exit(sinktest.Main(m, &testPlugin, "./internal/testplugin", "testplugin"))
}

func batch(ids ...string) []sink.Record {
	out := make([]sink.Record, len(ids))
	for i, id := range ids {
		out[i] = sink.Record{ID: id, Kind: sink.KindEvent, Subject: "agent.attempt.llm", Data: []byte(`{}`)}
	}
	return out
}

func TestDeliverResults(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []sink.Result
	}{
		{"delivered", `{}`, []sink.Result{
			{ID: "a", Status: sink.Delivered}, {ID: "b", Status: sink.Delivered}}},
		{"retryable with delay", `{"status":"retryable","retry_after_ms":7000}`, []sink.Result{
			{ID: "a", Status: sink.Retryable, Reason: "retryable", RetryAfter: 7 * time.Second},
			{ID: "b", Status: sink.Retryable, Reason: "retryable", RetryAfter: 7 * time.Second}}},
		{"permanent", `{"status":"permanent"}`, []sink.Result{
			{ID: "a", Status: sink.Permanent, Reason: "permanent"}, {ID: "b", Status: sink.Permanent, Reason: "permanent"}}},
		{"unknown status is retryable", `{"status":"bogus"}`, []sink.Result{
			{ID: "a", Status: sink.Retryable, Reason: "plugin returned unknown status 0: bogus"},
			{ID: "b", Status: sink.Retryable, Reason: "plugin returned unknown status 0: bogus"}}},
		{"missing result is retryable", `{"omit":true}`, []sink.Result{
			{ID: "a", Status: sink.Delivered},
			{ID: "b", Status: sink.Retryable, Reason: "plugin returned no result for this record"}}},
	}
	p := sinktest.Start(t, testPlugin, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Configure(t.Context(), []byte(tt.config)); err != nil {
				t.Fatalf("configure: %v", err)
			}
			got, err := p.Deliver(t.Context(), batch("a", "b"))
			if err != nil {
				t.Fatalf("deliver: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("results\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[sink.Status]string{sink.Delivered: "delivered", sink.Retryable: "retryable",
		sink.Permanent: "permanent", 0: "unknown"} {
		if s.String() != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestErrorsCrossTheBoundary(t *testing.T) {
	tests := []struct {
		name   string
		config string
		call   func(context.Context, *sink.Plugin) error
		is     error
		text   string
	}{
		{"config error", `{}`, func(ctx context.Context, p *sink.Plugin) error {
			return p.Configure(ctx, []byte(`{"reject":"chat_id is required"}`))
		}, sink.ErrConfig, "chat_id is required"},
		{"health error", `{"unhealthy":"smtp server unreachable"}`, func(ctx context.Context, p *sink.Plugin) error {
			return p.Health(ctx)
		}, nil, "smtp server unreachable"},
		{"panic is an error, not a crash", `{"panic":true}`, func(ctx context.Context, p *sink.Plugin) error {
			_, err := p.Deliver(ctx, batch("a"))
			return err
		}, nil, "sink panicked in deliver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sinktest.Start(t, testPlugin, tt.config)
			err := tt.call(t.Context(), p)
			if err == nil || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error = %v, want one containing %q", err, tt.text)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if errors.Is(err, sink.ErrUnavailable) || p.Exited() {
				t.Errorf("plugin lost after %v", err)
			}
		})
	}
}

func TestStartRefuses(t *testing.T) {
	sum := fileSHA256(t, testPlugin)
	wrong := strings.Repeat("0", 64)
	tests := []struct {
		name   string
		sha256 string
		config string
		is     error
	}{
		{"pinned checksum matches", sum, `{}`, nil},
		{"checksum mismatch", wrong, `{}`, sink.ErrChecksum},
		{"malformed checksum", "abc", `{}`, sink.ErrConfig},
		{"rejected config", "", `{"reject":"token is required"}`, sink.ErrConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := sinktest.Spec(t, testPlugin, tt.config)
			spec.SHA256 = tt.sha256
			p, err := sink.Start(t.Context(), spec)
			if tt.is == nil {
				if err != nil {
					t.Fatalf("start: %v", err)
				}
				p.Kill()
				return
			}
			if err == nil {
				p.Kill()
				t.Fatalf("start succeeded, want %v", tt.is)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("start error = %v, want %v", err, tt.is)
			}
		})
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// recorder is a slog handler that keeps what it is handed.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	// Shares the record list: every derived logger writes to the same place.
	return &recorderView{root: r, attrs: append(append([]slog.Attr{}, r.attrs...), as...)}
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

type recorderView struct {
	root  *recorder
	attrs []slog.Attr
}

func (v *recorderView) Enabled(context.Context, slog.Level) bool { return true }
func (v *recorderView) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(v.attrs...)
	return v.root.Handle(ctx, rec)
}
func (v *recorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{root: v.root, attrs: append(append([]slog.Attr{}, v.attrs...), as...)}
}
func (v *recorderView) WithGroup(string) slog.Handler { return v }

func (r *recorder) find(msg string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Message == msg {
			return rec, true
		}
	}
	return slog.Record{}, false
}

func attrs(rec slog.Record) map[string]string {
	out := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

func TestPluginLogsReachHostLogger(t *testing.T) {
	rec := &recorder{}
	spec := sinktest.Spec(t, testPlugin, `{"log":"hello from the plugin"}`)
	spec.Name = "relay"
	spec.Logger = slog.New(rec)
	p, err := sink.Start(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if _, err := p.Deliver(t.Context(), batch("a", "b")); err != nil {
		t.Fatal(err)
	}
	// The relay reads the plugin's stderr on its own goroutine: poll.
	var got slog.Record
	waitFor(t, 5*time.Second, "plugin log line relayed", func() bool {
		var ok bool
		got, ok = rec.find("hello from the plugin")
		return ok
	})
	if got.Level != slog.LevelWarn {
		t.Errorf("level = %v, want WARN", got.Level)
	}
	a := attrs(got)
	if a["sink"] != "relay" || a["records"] != "2" {
		t.Errorf("attrs = %v, want sink=relay records=2", a)
	}
	if _, ok := a["timestamp"]; ok {
		t.Errorf("relay timestamp kept: %v", a)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gone reports whether pid has exited and been reaped.
func gone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

func TestSupervisorRestartsKilledPlugin(t *testing.T) {
	tests := []struct {
		name string
		// reaped waits for the dead process to be reaped before delivering,
		// so the supervisor finds it dead before the call; otherwise the
		// call itself may be the one that loses the connection.
		reaped bool
	}{
		{"killed between batches", true},
		{"killed just before a batch", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, nil), sink.Backoff{})
			defer s.Kill()
			if err := s.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Deliver(t.Context(), batch("a")); err != nil {
				t.Fatalf("first deliver: %v", err)
			}
			pid := s.Pid()
			if pid == 0 {
				t.Fatal("no pid")
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if tt.reaped {
				waitFor(t, 5*time.Second, "killed plugin reaped", func() bool { return gone(pid) })
			}

			_, err := s.Deliver(t.Context(), batch("b"))
			if !errors.Is(err, sink.ErrUnavailable) {
				t.Fatalf("deliver to killed plugin: err = %v, want ErrUnavailable", err)
			}
			res, err := s.Deliver(t.Context(), batch("b"))
			if err != nil {
				t.Fatalf("deliver after restart: %v", err)
			}
			if res[0].Status != sink.Delivered {
				t.Errorf("result = %v", res[0])
			}
			if got := s.Restarts(); got != 1 {
				t.Errorf("restarts = %d, want 1", got)
			}
			if s.Pid() == pid || s.Pid() == 0 {
				t.Errorf("pid = %d after restart, old %d", s.Pid(), pid)
			}
		})
	}
}

// clock is a fake clock for the supervisor's backoff.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestSupervisorBacksOffCrashLoops(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, nil), sink.Backoff{Initial: time.Minute, Max: time.Hour, Now: clk.Now})
	defer s.Kill()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	kill := func() {
		t.Helper()
		pid := s.Pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "killed plugin reaped", func() bool { return gone(pid) })
	}
	deliver := func() error {
		_, err := s.Deliver(t.Context(), batch("a"))
		return err
	}

	// First crash: restarted at once.
	kill()
	if err := deliver(); !errors.Is(err, sink.ErrUnavailable) {
		t.Fatalf("after first crash: %v", err)
	}
	if s.Restarts() != 1 || s.Pid() == 0 {
		t.Fatalf("restarts = %d pid = %d, want an immediate restart", s.Restarts(), s.Pid())
	}
	// Second crash in a row, before any call succeeded: wait Initial.
	kill()
	if err := deliver(); !errors.Is(err, sink.ErrUnavailable) || !strings.Contains(err.Error(), "restart in 1m0s") {
		t.Fatalf("after second crash: %v", err)
	}
	if s.Pid() != 0 {
		t.Fatalf("restarted during backoff")
	}
	clk.Advance(59 * time.Second)
	if err := deliver(); !strings.Contains(err.Error(), "restart in 1s") {
		t.Fatalf("one second before the restart: %v", err)
	}
	clk.Advance(time.Second)
	if err := deliver(); !errors.Is(err, sink.ErrUnavailable) || !strings.Contains(err.Error(), "restarted") {
		t.Fatalf("after backoff: %v", err)
	}
	if err := deliver(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	// The answer reset the count: the next crash is restarted at once again.
	kill()
	if err := deliver(); !strings.Contains(fmt.Sprint(err), "restarted") {
		t.Fatalf("after a crash following success: %v", err)
	}
	if s.Restarts() != 3 {
		t.Errorf("restarts = %d, want 3", s.Restarts())
	}
}

func TestSupervisorWatchRestartsBetweenBatches(t *testing.T) {
	s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, nil), sink.Backoff{})
	defer s.Kill()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Watch(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	pid := s.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "watch restarts the plugin", func() bool {
		return s.Restarts() == 1 && s.Pid() != 0 && s.Pid() != pid
	})
	if _, err := s.Deliver(t.Context(), batch("a")); err != nil {
		t.Errorf("deliver after watch restart: %v", err)
	}
}

// A plugin stuck in a call stays alive, so no exit reveals it: after
// LostAfter calls in a row time out, the supervisor kills it and starts
// another, and the next call reaches the new process.
func TestSupervisorRestartsHungPlugin(t *testing.T) {
	tests := []struct {
		name string
		call func(ctx context.Context, s *sink.Supervisor) error
	}{
		{"deliver", func(ctx context.Context, s *sink.Supervisor) error {
			_, err := s.Deliver(ctx, batch("a"))
			return err
		}},
		{"health", func(ctx context.Context, s *sink.Supervisor) error { return s.Health(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hang := filepath.Join(t.TempDir(), "hang")
			s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, map[string]string{"hang_once": hang}), sink.Backoff{})
			defer s.Kill()
			if err := s.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			pid := s.Pid()
			for i := 1; i <= sink.DefaultLostAfter; i++ {
				if s.Restarts() != 0 || s.Pid() != pid {
					t.Fatalf("restarted after %d timeouts, want %d", i-1, sink.DefaultLostAfter)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
				err := tt.call(ctx, s)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("call %d to the hung plugin: err = %v, want DeadlineExceeded", i, err)
				}
			}
			if got := s.Restarts(); got != 1 {
				t.Errorf("restarts = %d, want 1", got)
			}
			if s.Pid() == pid || s.Pid() == 0 {
				t.Errorf("pid = %d after restart, hung one %d", s.Pid(), pid)
			}
			if !gone(pid) {
				t.Errorf("the hung process %d is still alive", pid)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res, err := s.Deliver(ctx, batch("b", "c"))
			if err != nil {
				t.Fatalf("deliver after restart: %v", err)
			}
			for _, r := range res {
				if r.Status != sink.Delivered {
					t.Errorf("result = %v", r)
				}
			}
		})
	}
}

// One timeout short of LostAfter, an answer resets the count: a slow plugin
// is not a hung one.
func TestSupervisorAnswerResetsTimeouts(t *testing.T) {
	hang := filepath.Join(t.TempDir(), "hang")
	s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, map[string]string{"hang_once": hang}), sink.Backoff{LostAfter: 2})
	defer s.Kill()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	timeout := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if err := s.Health(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("health of the hung plugin: %v, want DeadlineExceeded", err)
		}
	}
	timeout()
	// Configure answers even from the hung process: it counts as an answer.
	if err := s.Configure(t.Context(), sinktest.JSON(t, map[string]string{"hang_once": hang})); err != nil {
		t.Fatal(err)
	}
	timeout()
	if got := s.Restarts(); got != 0 {
		t.Fatalf("restarts = %d after timeouts with an answer between, want 0", got)
	}
	timeout()
	if got := s.Restarts(); got != 1 {
		t.Errorf("restarts = %d after %d timeouts in a row, want 1", got, 2)
	}
}

func TestSupervisorKillStops(t *testing.T) {
	s := sink.NewSupervisor(sinktest.Spec(t, testPlugin, nil), sink.Backoff{})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid := s.Pid()
	s.Kill()
	waitFor(t, 5*time.Second, "plugin ended", func() bool { return gone(pid) })
	if _, err := s.Deliver(t.Context(), batch("a")); !errors.Is(err, sink.ErrStopped) {
		t.Errorf("deliver after kill: %v, want ErrStopped", err)
	}
}

// BenchmarkDeliver measures records per second through a real plugin
// process (a no-op sink), one record per call against batches of 100.
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			p, err := sink.Start(b.Context(), sink.PluginSpec{Path: testPlugin, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Kill()
			recs := make([]sink.Record, size)
			for i := range recs {
				recs[i] = sink.Record{ID: fmt.Sprintf("%032d", i), Kind: sink.KindEvent, Subject: "agent.attempt.llm",
					Data: []byte(`{"id":"3c5e7a9b1d2f4e6a8c0b2d4f6a8c0e2b","type":"attempt","time":"2025-03-14T09:27:05.589Z","source":"caller-1","v":1,"service":"elevenlabs","attempt":2,"outcome":"failure","error_category":"transient","status_code":503,"latency_ms":812}`)}
			}
			b.ResetTimer()
			items := 0
			for items < b.N {
				if _, err := p.Deliver(b.Context(), recs); err != nil {
					b.Fatal(err)
				}
				items += size
			}
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
