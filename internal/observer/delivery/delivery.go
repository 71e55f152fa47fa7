// Package delivery feeds the observer's alert and log sinks. Each sink gets
// its own durable JetStream consumer and its own supervised plugin process,
// so a slow or broken sink never holds back another. Records are gathered
// into batches, one Deliver call each, and what the sink reports about each
// record decides its fate under one policy: delivered is acknowledged,
// retryable is redelivered with a backoff that grows with the delivery
// count, and permanent, or retryable too many times, becomes a dead letter
// on agent.delivery.<sink> and in the log before the message is terminated.
// Alert sinks also leave a receipt there for every alert delivered.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/sink"
)

// Errors matched with errors.Is.
var (
	// ErrUnknownSink is returned by DeliverTo for a name no sink has.
	ErrUnknownSink = errors.New("unknown sink")
	// ErrNotDelivered wraps each alert DeliverTo could not deliver.
	ErrNotDelivered = errors.New("not delivered")
)

// Sink kinds of config.Sink.Kind.
const (
	KindAlert = "alert"
	KindLog   = "log"
)

// Tuning that is not configuration; tests shorten it.
const (
	// defaultHealthEvery spaces the health checks of each plugin, which
	// also restart a plugin that died between batches.
	defaultHealthEvery = 10 * time.Second
	// defaultIdleWait is how long one pull waits for the first record of a
	// batch; short enough that the pull never outlives a connection hiccup.
	defaultIdleWait = 30 * time.Second
)

// SinkStatus is one sink as the observer's status endpoint shows it.
type SinkStatus struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Healthy is true when the plugin answers its health check and the
	// last batch delivered, or failed nothing.
	Healthy bool `json:"healthy"`
	// Backlog is what the sink has still to deliver: records not yet
	// handed to it plus records awaiting an answer or a redelivery.
	Backlog     uint64 `json:"backlog"`
	Delivered   uint64 `json:"delivered"`
	Retried     uint64 `json:"retried"`
	DeadLetters uint64 `json:"dead_letters"`
	// Silenced counts the alerts a silence kept from the sink.
	Silenced uint64 `json:"silenced"`
	// LastError is the last failure seen, kept after recovery for the
	// operator; Healthy says whether it still holds.
	LastError string `json:"last_error,omitempty"`
}

// Manager runs the delivery of every configured sink.
type Manager struct {
	conn    *bus.Conn
	log     *slog.Logger
	workers []*worker
	byName  map[string]*worker

	healthEvery time.Duration
	idleWait    time.Duration
	now         func() time.Time
}

// New prepares one worker per sink: it fills the defaults of zero fields,
// resolves each plugin binary (sinks[].plugin as a path, or a name under
// pluginDir) and registers the metrics on reg (nil: none). It starts no
// process: Run and DeliverTo start the plugins they need, so a bad checksum
// or plugin configuration shows when they begin. conn may be nil for a
// Manager used only with DeliverTo.
func New(conn *bus.Conn, sinks []config.Sink, pluginDir string, log *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		conn:        conn,
		log:         log,
		byName:      make(map[string]*worker, len(sinks)),
		healthEvery: defaultHealthEvery,
		idleWait:    defaultIdleWait,
		now:         time.Now,
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	for i, sc := range sinks {
		key := fmt.Sprintf("sinks[%d]", i)
		if sc.Name != "" {
			key = fmt.Sprintf("sinks[%d] (%s)", i, sc.Name)
		}
		sc = withDefaults(sc)
		if err := check(sc); err != nil {
			return nil, fmt.Errorf("%s.%w", key, err)
		}
		if _, dup := m.byName[sc.Name]; dup {
			return nil, fmt.Errorf("%s.name: %q names two sinks", key, sc.Name)
		}
		path, err := pluginPath(sc.Plugin, pluginDir)
		if err != nil {
			return nil, fmt.Errorf("%s.plugin: %w", key, err)
		}
		var raw []byte
		if len(sc.Config) > 0 {
			if raw, err = json.Marshal(sc.Config); err != nil {
				return nil, fmt.Errorf("%s.config: %w", key, err)
			}
		}
		sup := sink.NewSupervisor(sink.PluginSpec{
			Name:   sc.Name,
			Path:   path,
			SHA256: sc.SHA256,
			Config: raw,
			Logger: log,
			// A restart happens inside a Deliver call, bounded by its timeout.
			StartTimeout: max(sc.Timeout, sink.DefaultStartTimeout),
		}, sink.Backoff{Initial: sc.Backoff, Max: sc.MaxBackoff})
		w := newWorker(sc, sup, conn, log, met, m.now)
		if err := met.registerRestarts(reg, sc.Name, sup); err != nil {
			return nil, err
		}
		m.workers = append(m.workers, w)
		m.byName[sc.Name] = w
	}
	return m, nil
}

// withDefaults fills a sink's zero fields as config.Validate does, so that a
// zero field means the same when a caller builds the slice by hand, and lifts
// max_backoff to backoff, which Validate would reject.
func withDefaults(s config.Sink) config.Sink {
	s = s.WithDefaults()
	s.MaxBackoff = max(s.MaxBackoff, s.Backoff)
	return s
}

// check reports the first field of s the worker cannot run with, as
// "field: why", for New to prefix with the sink's key.
func check(s config.Sink) error {
	if err := events.ValidToken(s.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if s.Kind != KindAlert && s.Kind != KindLog {
		return fmt.Errorf("kind: must be %s or %s, got %q", KindAlert, KindLog, s.Kind)
	}
	if events.SeverityRank(s.MinSeverity) < 0 {
		return fmt.Errorf("min_severity: unknown severity %q", s.MinSeverity)
	}
	if s.Plugin == "" {
		return errors.New("plugin: required")
	}
	if s.BatchWait < 0 {
		return errors.New("batch_wait: must not be negative (0 batches adaptively)")
	}
	for _, f := range []struct {
		key      string
		positive bool
	}{
		{"batch_size", s.BatchSize > 0}, {"max_attempts", s.MaxAttempts > 0},
		{"backoff", s.Backoff > 0}, {"max_backoff", s.MaxBackoff > 0}, {"timeout", s.Timeout > 0},
	} {
		if !f.positive {
			return fmt.Errorf("%s: must be positive", f.key)
		}
	}
	return nil
}

// pluginPath resolves a plugin: a name with a path separator is a path, a
// bare name is a binary in dir. The binary must exist and be executable; its
// checksum is verified by the SDK at every start.
func pluginPath(plugin, dir string) (string, error) {
	path := plugin
	if !strings.ContainsRune(plugin, '/') && !strings.ContainsRune(plugin, filepath.Separator) {
		path = filepath.Join(dir, plugin)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s: %w: not an executable file", path, fs.ErrInvalid)
	}
	return path, nil
}

// Run starts every plugin, then runs one durable consumer per sink until ctx
// is done; each sink then finishes the batch in hand (bounded by its
// timeout) and Run returns nil. A plugin that cannot start (missing binary,
// checksum mismatch, configuration the plugin rejects) or a consumer that
// cannot be created is an error at once: the observer should not run with a
// sink silently off. Call Close after Run returns to end the plugins.
func (m *Manager) Run(ctx context.Context) error {
	if m.conn == nil {
		return errors.New("delivery: run needs a bus connection")
	}
	started := time.Now()
	for _, w := range m.workers {
		if err := w.start(ctx); err != nil {
			return err
		}
	}
	specs := make([]bus.ConsumerSpec, len(m.workers))
	for i, w := range m.workers {
		spec, err := w.consumerSpec(started)
		if err == nil {
			_, err = m.conn.Consumer(ctx, spec)
		}
		if err != nil {
			return fmt.Errorf("sink %s: %w", w.cfg.Name, err)
		}
		specs[i] = spec
	}
	var wg sync.WaitGroup
	for i, w := range m.workers {
		wg.Go(func() {
			if err := w.run(ctx, specs[i], m.idleWait); err != nil {
				w.log.Error("sink delivery stopped", "err", err)
			}
		})
		wg.Go(func() { w.watch(ctx, m.healthEvery) })
	}
	wg.Wait()
	return nil
}

// Status reports every sink, in configuration order. The backlog comes from
// the server; when it cannot be read it is 0 and LastError says why.
func (m *Manager) Status(ctx context.Context) []SinkStatus {
	out := make([]SinkStatus, 0, len(m.workers))
	for _, w := range m.workers {
		st := w.status()
		if m.conn != nil {
			backlog, err := w.backlog(ctx)
			switch {
			case err == nil:
				st.Backlog = backlog
			case st.LastError == "":
				st.LastError = "backlog unknown: " + err.Error()
			}
		}
		out = append(out, st)
	}
	return out
}

// Close ends every plugin process. Safe to call more than once.
func (m *Manager) Close() error {
	for _, w := range m.workers {
		w.plugin.Kill()
	}
	return nil
}
