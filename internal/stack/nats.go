package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// NATSOptions say which NATS server a stack uses. The zero value starts an
// embedded server without users on a free port of 127.0.0.1, storing in
// nats-server's default directory: tests and harnesses set StoreDir.
type NATSOptions struct {
	// URL names a running server to use instead of starting one.
	URL string
	// ConfigFile is the embedded server's nats-server configuration, such
	// as the repository's nats.conf; with one, the roles log in with the
	// development passwords it hashes (DevPassword). Empty: no users. With
	// URL, it only says that the external server has those users.
	ConfigFile string
	// StoreDir is the JetStream store.
	StoreDir string
	// Host and Port override the file's listen address; Host defaults to
	// 127.0.0.1, Port 0 picks a free port.
	Host string
	Port int
	// Log is the file the embedded server logs to (appended); empty
	// discards its log.
	Log string
}

// NATS is the stack's NATS server: embedded in this process, or external.
type NATS struct {
	opts NATSOptions

	mu   sync.Mutex
	emb  *bus.Embedded
	logf *os.File
	url  string
	port int
}

// DevPassword is the development password of role that the repository's
// nats.conf hashes (see its header).
func DevPassword(role string) string { return role + "-dev-password" }

// StartNATS starts the embedded server, or only records an external one's
// URL.
func StartNATS(o NATSOptions) (*NATS, error) {
	n := &NATS{opts: o, url: o.URL, port: o.Port}
	if o.URL != "" {
		return n, nil
	}
	if n.port == 0 {
		n.port = -1
	}
	if o.Log != "" {
		f, err := os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("nats log: %w", err)
		}
		n.logf = f
	}
	if err := n.start(); err != nil {
		n.closeLog()
		return nil, err
	}
	return n, nil
}

func (n *NATS) start() error {
	var log *slog.Logger
	if n.logf != nil {
		log = slog.New(slog.NewTextHandler(n.logf, nil))
	}
	emb, err := bus.StartEmbedded(config.Embedded{
		Enabled: true, ConfigFile: n.opts.ConfigFile, StoreDir: n.opts.StoreDir,
		Host: cmp.Or(n.opts.Host, "127.0.0.1"), Port: n.port,
	}, log)
	if err != nil {
		return err
	}
	n.emb, n.url = emb, emb.URL()
	if addr, ok := emb.Server.Addr().(*net.TCPAddr); ok {
		// Pinned, so that a restart comes back where the clients reconnect.
		n.port = addr.Port
	}
	return nil
}

// URL is the client URL.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.url
}

// Embedded reports whether the server runs in this process.
func (n *NATS) Embedded() bool { return n.opts.URL == "" }

// Roles returns the credentials of every role when the server runs from a
// configuration file with the repository's users (embedded, or an external
// server or cluster named by URL whose users ConfigFile says), and nil
// otherwise.
func (n *NATS) Roles() map[string]config.Credentials {
	if n.opts.ConfigFile == "" {
		return nil
	}
	return devRoles()
}

// devRoles is every role with its development password.
func devRoles() map[string]config.Credentials {
	roles := make(map[string]config.Credentials, len(config.Roles))
	for _, role := range config.Roles {
		roles[role] = config.Credentials{User: role, Password: DevPassword(role)}
	}
	return roles
}

// Config is a bus configuration for the server, with the roles'
// credentials.
func (n *NATS) Config() config.NATS {
	return config.NATS{URL: n.URL(), ConnectTimeout: 5 * time.Second, Roles: n.Roles()}
}

// Connect joins the server as role (any role when there are no users).
func (n *NATS) Connect(ctx context.Context, role, source string, log *slog.Logger) (*bus.Conn, error) {
	return bus.Connect(ctx, n.Config(), role, source, log)
}

// Stop stops the embedded server and waits until it has; safe to call
// twice, and a no-op for an external server. Restart starts it again.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.emb != nil {
		n.emb.Shutdown()
		n.emb = nil
	}
}

// Close stops the server for good.
func (n *NATS) Close() {
	n.Stop()
	n.closeLog()
}

func (n *NATS) closeLog() {
	if n.logf != nil {
		n.logf.Close()
		n.logf = nil
	}
}

// Restart stops the embedded server and starts it again on the same port
// and store, as an operator restarting NATS would, so the clients
// reconnect to it.
func (n *NATS) Restart(ctx context.Context) error {
	if !n.Embedded() {
		return errors.New("restart nats: the server is external")
	}
	n.Stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		err := n.start()
		if err == nil {
			return nil
		}
		// The old listener may take a moment to release the port.
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart nats: %w (%w)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
