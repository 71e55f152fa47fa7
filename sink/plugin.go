package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"
)

// DefaultStartTimeout bounds how long a plugin has to start and answer the
// handshake when PluginSpec.StartTimeout is zero.
const DefaultStartTimeout = 10 * time.Second

// PluginSpec says which plugin binary to run for one sink and how.
type PluginSpec struct {
	// Name is the sink's name, used in logs and errors; default: the
	// binary's file name.
	Name string
	// Path is the plugin executable.
	Path string
	// SHA256 pins the executable's checksum (hex). When set, a binary that
	// does not match is refused before it runs (ErrChecksum).
	SHA256 string
	// Config is the sink's own configuration section as JSON, handed to
	// Configure at every start; empty means {}.
	Config []byte
	// Logger receives the plugin's logs (its slog/hclog output and stderr)
	// and go-plugin's own; default slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds the start and handshake; default
	// DefaultStartTimeout, or the context's deadline when that is sooner.
	StartTimeout time.Duration
}

func (s PluginSpec) withDefaults() PluginSpec {
	if s.Name == "" {
		s.Name = filepath.Base(s.Path)
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.StartTimeout <= 0 {
		s.StartTimeout = DefaultStartTimeout
	}
	return s
}

// Plugin is a running plugin process, seen from the host as a Sink. Calls
// on a plugin whose process has exited fail with ErrUnavailable; a Plugin is
// never restarted (see Supervisor for that).
type Plugin struct {
	name   string
	client *plugin.Client
	rpc    *client
	socket string // the plugin's unix socket, removed after the process ends
}

var _ Sink = (*Plugin)(nil)

// Start verifies the executable's checksum when spec pins one, starts the
// process, completes the handshake and configures the sink with spec.Config.
// The process outlives ctx, which bounds only the start; end it with Kill.
func Start(ctx context.Context, spec PluginSpec) (*Plugin, error) {
	spec = spec.withDefaults()
	if spec.Path == "" {
		return nil, fmt.Errorf("start sink %s: %w: no plugin path", spec.Name, ErrConfig)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start sink %s: %w", spec.Name, err)
	}
	secure, err := secureConfig(spec.SHA256)
	if err != nil {
		return nil, fmt.Errorf("start sink %s: %w", spec.Name, err)
	}
	timeout := spec.StartTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), time.Millisecond)
	}

	cmd := exec.Command(spec.Path)
	cmd.Env = pluginEnv(os.Environ())
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake(),
		Plugins:          plugin.PluginSet{pluginName: &grpcPlugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           newHCLog(spec.Logger.With("sink", spec.Name)),
		StartTimeout:     timeout,
		// Only this host can talk to the plugin's socket.
		AutoMTLS: true,
		// The environment is passed filtered, by pluginEnv.
		SkipHostEnv: true,
	})
	p, err := dispense(c)
	if err != nil {
		c.Kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("start sink %s: %w: %s", spec.Name, ErrChecksum, spec.Path)
		}
		return nil, fmt.Errorf("start sink %s: %w", spec.Name, err)
	}
	pl := &Plugin{name: spec.Name, client: c, rpc: p}
	if rc := c.ReattachConfig(); rc != nil {
		if ua, ok := rc.Addr.(*net.UnixAddr); ok {
			pl.socket = ua.Name
		}
	}
	if err := pl.Configure(ctx, spec.Config); err != nil {
		pl.Kill()
		return nil, fmt.Errorf("configure sink %s: %w", spec.Name, err)
	}
	return pl, nil
}

func dispense(c *plugin.Client) (*client, error) {
	proto, err := c.Client()
	if err != nil {
		return nil, err
	}
	raw, err := proto.Dispense(pluginName)
	if err != nil {
		return nil, err
	}
	p, ok := raw.(*client)
	if !ok {
		return nil, fmt.Errorf("plugin dispensed %T, not a sink client", raw)
	}
	return p, nil
}

func secureConfig(sum string) (*plugin.SecureConfig, error) {
	if sum == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(strings.TrimSpace(sum))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrConfig, sum)
	}
	return &plugin.SecureConfig{Checksum: b, Hash: sha256.New()}, nil
}

// pluginEnv is the environment a plugin runs with: the host's, less the
// observer's own configuration variables (AGENT_*), which may hold NATS
// passwords and other services' API keys that a sink has no business seeing.
// A sink gets its secrets from its own configuration section.
func pluginEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AGENT_") {
			out = append(out, kv)
		}
	}
	return out
}

// Configure re-configures the running sink.
func (p *Plugin) Configure(ctx context.Context, config []byte) error {
	if err := p.alive(); err != nil {
		return err
	}
	return p.rpc.Configure(ctx, config)
}

// Deliver sends a batch to the plugin. The results hold exactly one entry
// per record, in batch order.
func (p *Plugin) Deliver(ctx context.Context, batch []Record) ([]Result, error) {
	if err := p.alive(); err != nil {
		return nil, err
	}
	return p.rpc.Deliver(ctx, batch)
}

// Health asks the plugin whether it can deliver now.
func (p *Plugin) Health(ctx context.Context) error {
	if err := p.alive(); err != nil {
		return err
	}
	return p.rpc.Health(ctx)
}

func (p *Plugin) alive() error {
	if p.client.Exited() {
		return fmt.Errorf("sink %s: %w: process exited", p.name, ErrUnavailable)
	}
	return nil
}

// Kill ends the plugin process: gracefully when it answers, by force after
// two seconds. It is safe to call more than once.
func (p *Plugin) Kill() {
	p.client.Kill()
	if p.socket != "" && p.client.Exited() {
		// A plugin that exits cleanly removes its socket; one that was
		// killed cannot, and would leave it in the temp directory.
		_ = os.Remove(p.socket)
	}
}

// Exited reports whether the plugin process has ended.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Pid is the plugin process's id, or 0 once it is gone.
func (p *Plugin) Pid() int {
	rc := p.client.ReattachConfig()
	if rc == nil || p.client.Exited() {
		return 0
	}
	return rc.Pid
}

// Name is the sink's name.
func (p *Plugin) Name() string { return p.name }
