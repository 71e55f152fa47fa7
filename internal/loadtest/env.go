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
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
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
	// Cluster runs a 3-node cluster of nats-server processes (with the
	// users of nats-auth.conf next to NATSConf) instead of the embedded
	// server, every stream and bucket at R3.
	Cluster bool
}

// env is one running system.
type env struct {
	set     Setup
	dir     string
	temp    bool
	bin     string
	nats    *stack.NATS
	cluster *stack.Cluster
	roles   map[string]config.Credentials
	admin   *bus.Conn
	sim     *simulator.Server
	procs   *stack.Stack
}

// Proc is a child process of the harness, its memory and CPU sampled while
// it runs.
type Proc = stack.Proc

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

	if set.Cluster {
		binaries = append(binaries, stack.NATSServer)
	}
	if e.bin, err = e.binaries(ctx, binaries); err != nil {
		return nil, err
	}
	e.procs = &stack.Stack{Bin: e.bin, Dir: e.dir}

	if set.Cluster {
		auth := ""
		if set.NATSConf != "" {
			auth = filepath.Join(filepath.Dir(set.NATSConf), "nats-auth.conf")
		}
		if e.cluster, err = stack.StartCluster(ctx, stack.ClusterOptions{
			Server: filepath.Join(e.bin, stack.NATSServer), AuthFile: auth, Dir: filepath.Join(e.dir, "nats"),
		}); err != nil {
			return nil, err
		}
		e.nats, err = stack.StartNATS(stack.NATSOptions{URL: e.cluster.URL(), ConfigFile: auth})
	} else {
		e.nats, err = stack.StartNATS(stack.NATSOptions{ConfigFile: set.NATSConf, StoreDir: filepath.Join(e.dir, "nats")})
	}
	if err != nil {
		return nil, err
	}
	e.roles = e.nats.Roles()
	e.progressf("nats %s (auth: %s)", e.nats.URL(), cmp.Or(set.NATSConf, "none"))
	if e.admin, err = e.connect(ctx, config.RoleAdmin, "loadtest-admin"); err != nil {
		return nil, err
	}
	if _, err := e.admin.Provision(ctx, e.agentConfig()); err != nil {
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

// binaries returns the directory holding the named binaries (targets of
// stack.Build), building them when Setup.BinDir is empty.
func (e *env) binaries(ctx context.Context, names []string) (string, error) {
	if e.set.BinDir != "" {
		dir, err := filepath.Abs(e.set.BinDir)
		if err != nil {
			return "", err
		}
		if _, err := stack.Check(dir, names...); err != nil {
			return "", fmt.Errorf("--bin %s: %w", e.set.BinDir, err)
		}
		return dir, nil
	}
	root, err := stack.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("build the binaries: %w (or give --bin DIR)", err)
	}
	dir := filepath.Join(e.dir, "bin")
	started := time.Now()
	if err := stack.Build(ctx, root, dir, names...); err != nil {
		return "", err
	}
	e.progressf("built %s in %s", strings.Join(names, ", "), time.Since(started).Round(time.Millisecond))
	return dir, nil
}

// connect joins the bus as role.
func (e *env) connect(ctx context.Context, role, source string) (*bus.Conn, error) {
	return e.nats.Connect(ctx, role, source, slog.New(slog.DiscardHandler))
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
	if e.set.Cluster {
		nats["streams"] = map[string]any{
			"calls":  map[string]any{"replicas": 3},
			"events": map[string]any{"replicas": 3},
			"alerts": map[string]any{"replicas": 3},
		}
		nats["buckets"] = map[string]any{"replicas": 3}
	}
	return map[string]any{
		"nats":     nats,
		"services": services,
		"log":      map[string]any{"level": cmp.Or(e.set.LogLevel, "info"), "format": "json"},
	}
}

// agentConfig is what the harness provisions: the defaults, at R3 on a
// cluster.
func (e *env) agentConfig() config.Config {
	cfg := config.Default()
	if e.set.Cluster {
		for _, s := range []*config.Stream{&cfg.NATS.Streams.Calls, &cfg.NATS.Streams.Events, &cfg.NATS.Streams.Alerts} {
			s.Replicas = 3
		}
		cfg.NATS.Buckets.Replicas = 3
	}
	return cfg
}

// writeConfig writes cfg as the configuration file name in the work dir.
func (e *env) writeConfig(name string, cfg map[string]any) (string, error) {
	return e.procs.WriteConfig(name, cfg)
}

// spawn starts a binary of the bin dir as a child process logging to
// <work dir>/<name>.log. The child dies with this process.
func (e *env) spawn(name, binary string, args ...string) (*Proc, error) {
	return e.procs.Spawn(stack.Spec{Name: name, Path: binary, Args: args})
}

// logPath is where a child's output goes.
func (e *env) logPath(name string) string { return filepath.Join(e.dir, name+".log") }

// close stops every child, the simulator and the bus, and removes a
// temporary work dir.
func (e *env) close() {
	if e.procs != nil {
		e.procs.Stop(10 * time.Second)
	}
	if e.sim != nil {
		_ = e.sim.Close()
	}
	if e.admin != nil {
		e.admin.Close()
	}
	if e.nats != nil {
		e.nats.Close()
	}
	if e.cluster != nil {
		e.cluster.Stop()
	}
	switch {
	case e.dir == "":
	case e.temp && !e.set.Keep:
		_ = os.RemoveAll(e.dir)
	default:
		e.progressf("kept %s (config, process logs, NATS store)", e.dir)
	}
}
