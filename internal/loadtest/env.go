// Package loadtest is the load harness behind cmd/loadtest: it stands up a
// whole single-host system (an embedded NATS server with the repository's
// nats.conf roles, the fault simulator and the real binaries as child
// processes), drives a bounded amount of work through it, stops by itself and
// reports figures. It is not a test: it asserts nothing about timing, only
// that nothing was lost or done twice.
package loadtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/simulator"
)

// Setup is what both modes share: where the binaries come from, how the bus
// is secured, and where the run keeps its files.
type Setup struct {
	// BinDir holds prebuilt binaries (caller, dispatcher, observer, and
	// plugins/webhook). Empty builds them with `go build` into the work dir.
	BinDir string
	// NATSConf is the nats-server configuration with one user per role; the
	// roles log in with the development passwords "<role>-dev-password" that
	// the repository's nats.conf hashes. Empty runs the server without
	// authorization.
	NATSConf string
	// WorkDir keeps the store, configuration and process logs. Empty makes a
	// temporary directory, removed at the end unless Keep is set.
	WorkDir string
	Keep    bool
	// LogLevel is the child processes' log level. Default info.
	LogLevel string
	// Progress receives a line per phase; nil discards.
	Progress io.Writer
}

// env is one running system.
type env struct {
	set   Setup
	dir   string
	temp  bool
	bin   string
	nats  *bus.Embedded
	roles map[string]config.Credentials
	admin *bus.Conn
	sim   *simulator.Server

	mu    sync.Mutex
	procs []*Proc
}

// start brings up the bus, the simulator playing sc, and the binaries named
// (built unless Setup.BinDir has them).
func start(ctx context.Context, set Setup, sc simulator.Scenario, binaries ...string) (_ *env, err error) {
	e := &env{set: set}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if set.WorkDir == "" {
		if e.dir, err = os.MkdirTemp("", "loadtest-"); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		e.temp = true
	} else {
		if e.dir, err = filepath.Abs(set.WorkDir); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		if err := os.MkdirAll(e.dir, 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		// A store left by an earlier run holds its requests, outcomes and
		// call progress, which would be counted (or skipped) as this run's.
		if err := os.RemoveAll(filepath.Join(e.dir, "nats")); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	e.progressf("work dir %s", e.dir)

	if e.bin, err = e.binaries(ctx, binaries); err != nil {
		return nil, err
	}

	e.nats, err = bus.StartEmbedded(config.Embedded{
		Enabled: true, ConfigFile: set.NATSConf, StoreDir: filepath.Join(e.dir, "nats"),
		Host: "127.0.0.1", Port: -1,
	}, nil)
	if err != nil {
		return nil, err
	}
	if set.NATSConf != "" {
		// The passwords nats.conf's bcrypt hashes are made from (see its header).
		e.roles = map[string]config.Credentials{}
		for _, role := range config.Roles {
			e.roles[role] = config.Credentials{User: role, Password: role + "-dev-password"}
		}
	}
	e.progressf("nats %s (auth: %s)", e.nats.URL(), cmp.Or(set.NATSConf, "none"))
	if e.admin, err = e.connect(ctx, config.RoleAdmin, "loadtest-admin"); err != nil {
		return nil, err
	}
	if err := e.admin.EnsureStreams(ctx, config.Default().NATS.Streams); err != nil {
		return nil, err
	}

	e.sim = simulator.New(sc, nil)
	if err := e.sim.Start(ctx, "127.0.0.1:0", ""); err != nil {
		return nil, err
	}
	e.progressf("simulator %s playing %q", e.sim.URL(), sc.Name)
	return e, nil
}

func (e *env) progressf(format string, args ...any) {
	if e.set.Progress != nil {
		fmt.Fprintf(e.set.Progress, "loadtest: "+format+"\n", args...)
	}
}

// binaries returns the directory holding the named binaries, building them
// when Setup.BinDir is empty. "plugins/NAME" builds ./plugins/NAME.
func (e *env) binaries(ctx context.Context, names []string) (string, error) {
	if e.set.BinDir != "" {
		dir, err := filepath.Abs(e.set.BinDir)
		if err != nil {
			return "", err
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				return "", fmt.Errorf("--bin %s: %w", e.set.BinDir, err)
			}
		}
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("build the binaries: %w (or give --bin DIR)", err)
	}
	dir := filepath.Join(e.dir, "bin")
	started := time.Now()
	// One go build per output directory: commands into bin/, plugins into
	// bin/plugins/, where the observer's plugin_dir points.
	byDir := map[string][]string{}
	var dirs []string
	for _, n := range names {
		sub, pkg := filepath.Dir(n), "./cmd/"+n
		if sub != "." {
			pkg = "./" + n
		}
		if byDir[sub] == nil {
			dirs = append(dirs, sub)
		}
		byDir[sub] = append(byDir[sub], pkg)
	}
	for _, sub := range dirs {
		out := filepath.Join(dir, sub) + string(filepath.Separator)
		cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, byDir[sub]...)...)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", strings.Join(byDir[sub], " "), err, msg)
		}
	}
	e.progressf("built %s in %s", strings.Join(names, ", "), time.Since(started).Round(time.Millisecond))
	return dir, nil
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

// connect joins the bus as role.
func (e *env) connect(ctx context.Context, role, source string) (*bus.Conn, error) {
	cfg := config.NATS{URL: e.nats.URL(), ConnectTimeout: 5 * time.Second, Roles: e.roles}
	return bus.Connect(ctx, cfg, role, source, slog.New(slog.DiscardHandler))
}

// baseConfig is the configuration every child process shares: the bus with
// the roles' credentials, every service pointed at the simulator.
func (e *env) baseConfig() map[string]any {
	nats := map[string]any{"url": e.nats.URL()}
	if e.roles != nil {
		roles := map[string]any{}
		for role, c := range e.roles {
			roles[role] = map[string]any{"user": c.User, "password": c.Password}
		}
		nats["roles"] = roles
	}
	services := map[string]any{}
	for _, name := range config.Services {
		svc := map[string]any{
			"base_url": e.sim.URL() + "/" + name,
			"api_key":  "loadtest-" + name + "-key",
		}
		if name == config.ServiceTelephony {
			svc["options"] = map[string]any{
				"account_sid": "AC00000000000000000000000000000000",
				"from_number": "+15005550006",
				"twiml_url":   e.sim.URL() + "/telephony/twiml",
			}
		}
		services[name] = svc
	}
	return map[string]any{
		"nats":     nats,
		"services": services,
		"log":      map[string]any{"level": cmp.Or(e.set.LogLevel, "info"), "format": "json"},
	}
}

// writeConfig writes cfg as the configuration file name. JSON is YAML, so
// config.Load reads it as any other file.
func (e *env) writeConfig(name string, cfg map[string]any) (string, error) {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return path, nil
}

// spawn starts a binary of the bin dir as a child process logging to
// <work dir>/<name>.log. The child dies with this process.
func (e *env) spawn(name, binary string, args ...string) (*Proc, error) {
	logf, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(e.bin, binary), args...)
	cmd.Dir = e.dir
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	// A harness killed by a signal must not leave its children running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := newProc(name, cmd, logf)
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

// childEnv is this process's environment without AGENT_ variables, so that
// the configuration file alone decides how the children run.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// logPath is where a child's output goes.
func (e *env) logPath(name string) string { return filepath.Join(e.dir, name+".log") }

// close stops every child, the simulator and the bus, and removes a
// temporary work dir.
func (e *env) close() {
	e.mu.Lock()
	procs := e.procs
	e.procs = nil
	e.mu.Unlock()
	for _, p := range procs {
		_ = p.Stop(10 * time.Second)
	}
	if e.sim != nil {
		_ = e.sim.Close()
	}
	if e.admin != nil {
		e.admin.Close()
	}
	if e.nats != nil {
		e.nats.Shutdown()
	}
	switch {
	case e.dir == "":
	case e.temp && !e.set.Keep:
		_ = os.RemoveAll(e.dir)
	default:
		e.progressf("kept %s (config, process logs, NATS store)", e.dir)
	}
}
