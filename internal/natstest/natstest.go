// Package natstest starts real in-process JetStream servers for tests: bound
// to 127.0.0.1 on a free port, with a file store in the test's temp dir.
package natstest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/stack"
)

// Server is a running test server.
type Server struct {
	n *stack.NATS
}

// Start starts a JetStream server without authentication. It stops when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, stack.NATSOptions{StoreDir: t.TempDir()})
}

// StartWithConfig starts a server from a nats-server configuration file (such
// as the repository's nats.conf, see RepoFile), on a free port and a temp store.
func StartWithConfig(t testing.TB, path string) *Server {
	t.Helper()
	return start(t, stack.NATSOptions{ConfigFile: path, StoreDir: t.TempDir()})
}

func start(t testing.TB, o stack.NATSOptions) *Server {
	t.Helper()
	n, err := stack.StartNATS(o)
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	s := &Server{n: n}
	t.Cleanup(s.Shutdown)
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.n.URL() }

// NATS returns a bus configuration pointing at the server.
func (s *Server) NATS() config.NATS {
	return config.NATS{URL: s.URL(), ConnectTimeout: 5 * time.Second}
}

// Shutdown stops the server; safe to call twice.
func (s *Server) Shutdown() { s.n.Stop() }

// Restart stops the server and starts it again on the same port and store,
// as an operator restarting NATS would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	// The old listener may take a moment to release the port.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

// Conn connects to the server (as the given user, if any), creates the
// contract streams, and closes the connection when the test ends.
func (s *Server) Conn(t testing.TB) *bus.Conn {
	t.Helper()
	c := s.Connect(t, config.NATS{}, t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return c
}

// Connect connects with the credentials in creds (URL is filled in).
func (s *Server) Connect(t testing.TB, creds config.NATS, source string) *bus.Conn {
	t.Helper()
	cfg := creds
	cfg.URL = s.URL()
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.Connect(ctx, cfg, "", source, Logger(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Abort)
	return c
}

// LastSeq is the last sequence number of stream: how many messages were ever
// stored on it, since a work queue deletes what it delivers but sequence
// numbers only grow.
func LastSeq(t testing.TB, conn *bus.Conn, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := conn.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.LastSeq
}

// Logger returns a slog logger writing to the test log at debug level when
// the test runs with -v, and discarding otherwise.
func Logger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter stops writing once the test has ended: background goroutines may
// still log while they stop, and testing panics on a late t.Log.
type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// RepoFile returns the path of a file at the repository root (found by
// walking up from this source file to go.mod), such as "nats.conf".
func RepoFile(name string) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, name)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return name
		}
		dir = parent
	}
}

// Raw opens a plain NATS connection and JetStream client to url, as user
// (none when empty), for tests that inspect or break what the bus hides:
// deleting streams, changing their configuration, publishing garbage. It is
// closed when the test ends.
func Raw(t testing.TB, url, user, password string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	var opts []nats.Option
	if user != "" {
		opts = append(opts, nats.UserInfo(user, password))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("raw connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Raw is the package's Raw on this server, without authentication (for
// servers from Start).
func (s *Server) Raw(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return Raw(t, s.URL(), "", "")
}
