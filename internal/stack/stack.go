// Package stack runs the system's own processes on one host, for the demo,
// the load harness and the end-to-end tests (and the cluster tests to come):
// it builds the binaries, starts NATS (embedded from a nats-server
// configuration such as the repository's nats.conf, or names an external
// server), writes configuration files, and spawns, watches, stops, kills,
// restarts and measures child processes, each under a name of its own with
// its output in <LogDir>/<name>.log.
//
// It owns the life of the processes, not what they do: readiness beyond "it
// logged this line", campaigns and assertions belong to its users. Nothing
// here is a test helper: errors are returned, never t.Fatal'd, so the same
// code serves cmd/demo, internal/loadtest and internal/e2e.
package stack

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/callagent/agent/internal/config"
)

// Stack is one run's processes: where their binaries are, where they run and
// log, and every process spawned, so that all of them can be stopped. Set
// the fields before the first Spawn; the zero value runs binaries given by
// absolute path in this process's working directory.
type Stack struct {
	// Bin is the directory of the binaries; a Spec's relative Path is found
	// in it.
	Bin string
	// Dir is where the processes run and WriteConfig writes; empty is this
	// process's working directory.
	Dir string
	// LogDir receives one log per process name; empty is Dir.
	LogDir string
	// Env is the processes' environment when their Spec has none; nil is
	// CleanEnv().
	Env []string

	mu    sync.Mutex
	procs []*Proc // in start order; a restart takes its predecessor's place
}

// Spawn starts a process of the stack (see Start) and keeps it, so that Stop
// and Kill reach it.
func (s *Stack) Spawn(spec Spec) (*Proc, error) {
	if spec.Dir == "" {
		spec.Dir = s.Dir
	}
	if spec.Env == nil {
		spec.Env = s.Env
	}
	if spec.Path != "" && !filepath.IsAbs(spec.Path) && s.Bin != "" {
		spec.Path = filepath.Join(s.Bin, spec.Path)
	}
	if spec.Log == "" {
		spec.Log = filepath.Join(cmp.Or(s.LogDir, s.Dir), spec.Name+".log")
	}
	p, err := Start(spec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// Restart stops p (SIGTERM, then SIGKILL after grace; nothing if it has
// already exited) and starts it again from the same Spec, in its place in
// the stack. The log continues in the same file; the new Proc reads only
// its own part of it.
func (s *Stack) Restart(p *Proc, grace time.Duration) (*Proc, error) {
	_ = p.Stop(grace) // killed or not, it is gone
	np, err := Start(p.spec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.procs {
		if o == p {
			s.procs[i] = np
			return np, nil
		}
	}
	s.procs = append(s.procs, np)
	return np, nil
}

// Procs returns the stack's processes in start order.
func (s *Stack) Procs() []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Proc(nil), s.procs...)
}

// Stop stops every process, newest first (what was started last usually
// depends on what was started before it), each with SIGTERM and then
// SIGKILL after grace. It returns the names of those that had to be killed.
func (s *Stack) Stop(grace time.Duration) (killed []string) {
	procs := s.Procs()
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(grace); errors.Is(err, ErrKilled) {
			killed = append(killed, procs[i].Name)
		}
	}
	return killed
}

// Kill kills every process's group with SIGKILL at once (what a process
// started, such as sink plugins, dies with it) and waits up to within for
// each to be reaped. It returns an error naming those still there.
func (s *Stack) Kill(within time.Duration) error {
	procs := s.Procs()
	for _, p := range procs {
		_ = p.KillGroup()
	}
	var errs []error
	deadline := time.After(within)
	for _, p := range procs {
		select {
		case <-p.Done():
		case <-deadline:
			errs = append(errs, fmt.Errorf("%s (pid %d) did not exit within %s of SIGKILL", p.Name, p.Pid(), within))
		}
	}
	return errors.Join(errs...)
}

// WriteConfig writes cfg as JSON (which YAML reads, so config.Load reads it
// as any other file) to name in Dir, readable only by its owner since it
// holds passwords, and returns its path.
func (s *Stack) WriteConfig(name string, cfg any) (string, error) {
	path := filepath.Join(s.Dir, name)
	return path, WriteConfig(path, cfg)
}

// WriteConfig writes cfg to path as WriteConfig of a Stack does.
func WriteConfig(path string, cfg any) error {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// CleanEnv is this process's environment without AGENT_ variables, so that
// the configuration file alone decides how the children run.
func CleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// FreePorts returns n distinct TCP ports free on 127.0.0.1 now, for the
// processes of a stack that must be told their port in advance (several
// observers' status pages, the nodes of a cluster).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	// All held open at once, so the n are distinct.
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RepoRoot is the repository's root: the first directory holding go.mod
// from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above: run from the repository")
		}
		dir = parent
	}
}
