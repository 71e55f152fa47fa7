package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/cli/clitest"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer"
	"github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/report"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(ctx context.Context, args ...string) result {
	var out, errOut clitest.Buffer
	code := run(ctx, cli.Command{Name: "observer", Stdout: &out, Stderr: &errOut}, args)
	return result{code, out.String(), errOut.String()}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"--help"}, 0, "observer replay --config config.yaml --since 2h --format markdown", ""},
		{"help command", []string{"help"}, 0, "Exit status:", ""},
		{"run help", []string{"run", "--help"}, 0, "", "-http address"},
		{"replay help", []string{"replay", "--help"}, 0, "", "-since duration"},
		{"unknown command", []string{"watch"}, 2, "", `unknown command "watch"`},
		{"bad flag", []string{"run", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"bad format", []string{"replay", "--format", "yaml"}, 2, "", `--format "yaml": want text, markdown or json`},
		{"since and from", []string{"replay", "--since", "1h", "--from", "2026-03-14T09:00:00Z"}, 2, "", "not both"},
		{"bad from", []string{"replay", "--from", "yesterday"}, 2, "", "RFC 3339"},
		{"to before from", []string{"replay", "--from", "2026-03-14T10:00:00Z", "--to", "2026-03-14T09:00:00Z"}, 2, "", "is not before"},
		{"bad configuration", []string{"run", "--set", "observer.rules.error_rate=2"}, 2, "", "observer.rules.error_rate"},
		{"extra argument", []string{"replay", "now"}, 2, "", `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := runCLI(ctx, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.stdout) || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stdout %q\nstderr %q\nwant %q and %q", r.stdout, r.stderr, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		since          time.Duration
		from, to       string
		wantFrom, want time.Time
	}{
		{"default is the last hour", 0, "", "", now.Add(-time.Hour), now},
		{"since", 2 * time.Hour, "", "", now.Add(-2 * time.Hour), now},
		{"from to now", 0, "2026-03-14T09:00:00Z", "", now.Add(-3 * time.Hour), now},
		{"from and to", 0, "2026-03-14T09:00:00+01:00", "2026-03-14T10:30:00Z", time.Date(2026, 3, 14, 8, 0, 0, 0, time.UTC), time.Date(2026, 3, 14, 10, 30, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, to, err := window(now, tt.since, tt.from, tt.to)
			if err != nil || !from.Equal(tt.wantFrom) || !to.Equal(tt.want) {
				t.Errorf("window = %v, %v, %v; want %v, %v", from, to, err, tt.wantFrom, tt.want)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if v == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The whole command against a real server: run derives the seed scenario's
// alerts and serves them, SIGTERM (a cancelled context) drains it, and replay
// reports the same window.
func TestRunThenReplay(t *testing.T) {
	srv := natstest.Start(t)
	feed := srv.Conn(t)
	addr := freeAddr(t)
	conf := []string{"--set", "nats.url=" + srv.URL(), "--set", "log.level=debug"}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut clitest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, cli.Command{Name: "observer", Stdout: &out, Stderr: &errOut}, append([]string{"run", "--http", addr}, conf...))
	}()
	waitFor(t, "/readyz", func() bool { return getJSON("http://"+addr+"/readyz", nil) == nil })

	t0 := time.Now().UTC().Add(-90 * time.Second).Truncate(time.Millisecond)
	emitCtx, emitCancel := context.WithTimeout(ctx, 10*time.Second)
	for _, ev := range observertest.Seed("seed", t0) {
		if err := feed.Emit(emitCtx, ev); err != nil {
			t.Fatal(err)
		}
	}
	emitCancel()
	var snap observer.Snapshot
	waitFor(t, "the seed's alerts on /status", func() bool {
		return getJSON("http://"+addr+"/status", &snap) == nil && len(snap.RecentAlerts) == 2
	})
	if snap.RecentAlerts[0].Status != "resolved" || snap.RecentAlerts[1].Rule != "retries_exhausted" {
		t.Errorf("recent alerts %+v", snap.RecentAlerts)
	}
	cancel() // SIGTERM
	select {
	case code := <-done:
		if code != cli.ExitOK {
			t.Fatalf("run exited %d: %s", code, errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not drain")
	}
	if !strings.Contains(errOut.String(), "observer drained") {
		t.Errorf("log lacks the drain: %s", errOut.String())
	}

	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	r := runCLI(rctx, append([]string{"replay", "--since", "10m", "--format", "json"}, conf...)...)
	if r.code != cli.ExitOK {
		t.Fatalf("replay exited %d: %s", r.code, r.stderr)
	}
	var rep report.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	s := rep.Service("elevenlabs")
	if s == nil || s.TimeToDetect == nil || time.Duration(*s.TimeToDetect) != 36*time.Second || s.CallsAffected != 1 || s.AlertsFired != 1 {
		t.Errorf("elevenlabs in the report: %+v", s)
	}
	if rep.Calls.Completed != 2 || rep.Calls.Failed != 1 {
		t.Errorf("calls %+v", rep.Calls)
	}

	md := runCLI(rctx, append([]string{"replay", "--since", "10m", "--format", "markdown"}, conf...)...)
	if md.code != cli.ExitOK || !strings.Contains(md.stdout, "| elevenlabs |") {
		t.Errorf("markdown replay exited %d: %s %s", md.code, md.stdout, md.stderr)
	}
	unknown := runCLI(rctx, append([]string{"replay", "--since", "10m", "--deliver", "pager"}, conf...)...)
	if unknown.code != cli.ExitUsage || !strings.Contains(unknown.stderr, "unknown sink (configured: none)") {
		t.Errorf("--deliver to an unknown sink: exit %d, %s", unknown.code, unknown.stderr)
	}
}
