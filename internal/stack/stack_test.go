//go:build linux

package stack

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// sh spawns a shell script as name in a fresh stack.
func sh(t *testing.T, s *Stack, name, script string) *Proc {
	t.Helper()
	p, err := s.Spawn(Spec{Name: name, Path: "/bin/sh", Args: []string{"-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.KillGroup(); <-p.Done() })
	return p
}

func newStack(t *testing.T) *Stack { return &Stack{Dir: t.TempDir()} }

func TestWaitLog(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		pattern string
		within  time.Duration
		want    string
		wantErr error
	}{
		{"a line matching", "echo starting; echo 'caller started name=c1'; exec sleep 30", `caller started name=\w+`, 10 * time.Second, "caller started name=c1", nil},
		{"on stderr too", "echo 'observer started' >&2; exec sleep 30", "observer started", 10 * time.Second, "observer started", nil},
		{"logged later", "sleep 0.3; echo ready; exec sleep 30", "^ready$", 10 * time.Second, "ready", nil},
		{"the last line of a process that exited", "echo done; exit 0", "done", 10 * time.Second, "done", nil},
		{"exited without it", "echo 'listen: address in use'; exit 3", "started", 10 * time.Second, "", ErrExited},
		{"never logged", "exec sleep 30", "started", 300 * time.Millisecond, "", context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sh(t, newStack(t), "p", tt.script)
			got, err := p.WaitLog(context.Background(), tt.pattern, tt.within)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("WaitLog = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestStop(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantKilled bool
		wantState  string
	}{
		{"exits on SIGTERM", "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done", false, "exit status 0"},
		{"ignores SIGTERM", "trap '' TERM; echo up; while :; do sleep 0.05; done", true, "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sh(t, newStack(t), "p", tt.script)
			if _, err := p.WaitLog(context.Background(), "up", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			err := p.Stop(300 * time.Millisecond)
			if errors.Is(err, ErrKilled) != tt.wantKilled {
				t.Errorf("Stop = %v, want killed %v", err, tt.wantKilled)
			}
			if !p.Exited() || p.State().String() != tt.wantState {
				t.Errorf("after Stop: exited %v, state %v; want %s", p.Exited(), p.State(), tt.wantState)
			}
			if err := p.Stop(time.Second); err != nil {
				t.Errorf("second Stop = %v, want nil", err)
			}
		})
	}
}

func TestStackStopNewestFirst(t *testing.T) {
	s := newStack(t)
	order := filepath.Join(s.Dir, "order")
	// Each appends its name to order when it gets SIGTERM.
	script := func(name string, ignore bool) string {
		exit := "exit 0"
		if ignore {
			exit = ":"
		}
		return "trap 'echo " + name + " >> " + order + "; " + exit + "' TERM; echo up; while :; do sleep 0.05; done"
	}
	var procs []*Proc
	for _, p := range []struct {
		name   string
		ignore bool
	}{{"nats", false}, {"observer", true}, {"caller-1", false}} {
		procs = append(procs, sh(t, s, p.name, script(p.name, p.ignore)))
	}
	for _, p := range procs {
		if _, err := p.WaitLog(context.Background(), "up", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	killed := s.Stop(300 * time.Millisecond)
	if !slices.Equal(killed, []string{"observer"}) {
		t.Errorf("killed %v, want [observer]", killed)
	}
	data, err := os.ReadFile(order)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(data)); !slices.Equal(got, []string{"caller-1", "observer", "nats"}) {
		t.Errorf("SIGTERM order %v, want newest first", got)
	}
}

func TestKill(t *testing.T) {
	s := newStack(t)
	// The shell's child is orphaned by kill -9, as with a real crash, and
	// stays in the group until KillGroup.
	p := sh(t, s, "observer", "sleep 30 & echo up; wait")
	if _, err := p.WaitLog(context.Background(), "up", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	ws := p.State().Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL || p.ExitCode() != -1 {
		t.Errorf("state %v, want killed by SIGKILL", p.State())
	}
	orphans, err := p.Group()
	if err != nil || len(orphans) != 1 {
		t.Fatalf("group after kill -9 = %v, %v; want the orphaned sleep", orphans, err)
	}
	if err := p.KillGroup(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := p.Group()
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group still holds %v after KillGroup", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Kill(5 * time.Second); err != nil {
		t.Errorf("Kill of a stack whose processes are gone: %v", err)
	}
}

func TestRestart(t *testing.T) {
	s := newStack(t)
	p := sh(t, s, "caller-1", "trap 'echo stopping; exit 0' TERM; echo started pid $$; while :; do sleep 0.05; done")
	if _, err := p.WaitLog(context.Background(), "started", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	np, err := s.Restart(p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = np.KillGroup(); <-np.Done() })
	if !p.Exited() || p.ExitCode() != 0 {
		t.Errorf("the first caller-1: %s, want stopped by SIGTERM", p.Describe())
	}
	line, err := np.WaitLog(context.Background(), "started", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if line == strings.TrimSpace(p.Log()[:strings.Index(p.Log(), "\n")]) {
		t.Errorf("the restarted process found its predecessor's line %q", line)
	}
	if np.LogPath() != p.LogPath() || strings.Count(p.Log(), "started") != 1 || strings.Count(np.Log(), "started") != 1 {
		t.Errorf("logs: first %q, second %q (files %s, %s)", p.Log(), np.Log(), p.LogPath(), np.LogPath())
	}
	data, _ := os.ReadFile(np.LogPath())
	if got := strings.Count(string(data), "started"); got != 2 {
		t.Errorf("the log file holds %d starts, want both lives", got)
	}
	if procs := s.Procs(); len(procs) != 1 || procs[0] != np {
		t.Errorf("stack holds %v, want the restarted process in its predecessor's place", procs)
	}
}

func TestStats(t *testing.T) {
	s := newStack(t)
	// Busy for a while, then idle: the CPU it used stays in the figures.
	p := sh(t, s, "busy", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done; exec sleep 30")
	if _, err := p.WaitLog(context.Background(), "done", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if !st.OK || st.PeakRSS <= 0 || st.RSS <= 0 || st.PeakRSS < st.RSS || st.CPU <= 0 {
		t.Errorf("Stats = %+v, want memory and CPU", st)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if after := p.Stats(); after.PeakRSS != st.PeakRSS && !after.OK {
		t.Errorf("Stats after exit = %+v, want the last sample", after)
	}
	if self := Self(); !self.OK || self.PeakRSS <= 0 || self.CPU <= 0 {
		t.Errorf("Self = %+v", self)
	}
}

func TestNATS(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n, err := StartNATS(NATSOptions{ConfigFile: filepath.Join(root, "nats.conf"), StoreDir: filepath.Join(dir, "nats"), Log: filepath.Join(dir, "nats.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := n.URL()
	for _, role := range []string{config.RoleAdmin, config.RoleCaller} {
		c, err := n.Connect(ctx, role, "stack-test", nil)
		if err != nil {
			t.Fatalf("connect as %s with nats.conf's password: %v", role, err)
		}
		c.Close()
	}
	// A wrong password is refused: the server does run nats.conf's users.
	bad := n.Config()
	bad.Roles[config.RoleAdmin] = config.Credentials{User: "admin", Password: "wrong"}
	if c, err := bus.Connect(ctx, bad, config.RoleAdmin, "stack-test", nil); err == nil {
		c.Close()
		t.Error("connected with a wrong password")
	}

	admin, err := n.Connect(ctx, config.RoleAdmin, "stack-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n.URL() != url {
		t.Errorf("restarted on %s, want %s", n.URL(), url)
	}
	// The same client reconnects, and the streams survived in the store.
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Errorf("after restart: %v", err)
	}
	n.Stop()
	n.Stop()

	ext, err := StartNATS(NATSOptions{URL: "nats://127.0.0.1:4222"})
	if err != nil || ext.Embedded() || ext.URL() != "nats://127.0.0.1:4222" || ext.Roles() != nil {
		t.Errorf("external: %v, embedded %v, url %s", err, ext.Embedded(), ext.URL())
	}
	if err := ext.Restart(ctx); err == nil {
		t.Error("restarted an external server")
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ports)
	if len(slices.Compact(ports)) != 5 {
		t.Errorf("ports %v are not 5 distinct ones", ports)
	}
}

func TestBinaries(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := &Binaries{Root: root, Targets: []string{"no-such-command"}}
	dir, err := b.Build(ctx)
	if err == nil || !strings.Contains(err.Error(), "go build ./cmd/no-such-command") {
		t.Fatalf("Build = %v, want go build's failure", err)
	}
	// Once: the second call is the first's outcome, not a second build.
	if dir2, err2 := b.Build(ctx); dir2 != dir || err2 != err {
		t.Errorf("second Build = %s, %v; want %s, %v", dir2, err2, dir, err)
	}
	if missing, err := Check(dir, "caller"); missing != "caller" || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check = %q, %v", missing, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary bin dir is still there after Close: %v", err)
	}
}
