package bus

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/callagent/agent/internal/config"
)

// Embedded is a nats-server running in this process (single-host mode). It
// listens on a real TCP port, so other processes and the nats CLI connect to it
// like to any server.
type Embedded struct {
	Server *server.Server
}

// StartEmbedded starts nats-server in-process from cfg.ConfigFile (normally
// nats.conf) with JetStream on a file store in cfg.StoreDir. cfg.Host and
// cfg.Port, when set, override the file's listen address; port -1 picks a free one.
func StartEmbedded(cfg config.Embedded, log *slog.Logger) (*Embedded, error) {
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		var err error
		opts, err = server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("nats config %s: %w", cfg.ConfigFile, err)
		}
	}
	opts.JetStream = true
	if cfg.StoreDir != "" {
		dir, err := filepath.Abs(cfg.StoreDir)
		if err != nil {
			return nil, fmt.Errorf("store dir: %w", err)
		}
		opts.StoreDir = dir
	}
	if cfg.Host != "" {
		opts.Host = cfg.Host
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if cfg.Port != 0 {
		opts.Port = cfg.Port
	}
	opts.NoSigs = true
	opts.NoLog = log == nil
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if log != nil {
		s.SetLoggerV2(&serverLogger{log: log.With("component", "nats-server")}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats did not become ready on %s", net.JoinHostPort(opts.Host, fmt.Sprint(opts.Port)))
	}
	return &Embedded{Server: s}, nil
}

// URL is the client URL the server listens on.
func (e *Embedded) URL() string { return e.Server.ClientURL() }

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// serverLogger adapts nats-server's logger to slog.
type serverLogger struct{ log *slog.Logger }

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
