package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/callagent/agent/backoff"
)

// Backoff spaces the restarts of a plugin that keeps dying. The first
// restart after a crash is immediate; each further consecutive crash doubles
// the wait, from Initial up to Max. A plugin that answers a call again resets
// the count. The zero value is the default.
type Backoff struct {
	// Initial is the wait before the second restart in a row; default 1s.
	Initial time.Duration
	// Max caps the wait; default 1m.
	Max time.Duration
	// LostAfter is how many calls in a row may time out before the plugin
	// counts as lost, a crash like any other; default DefaultLostAfter.
	LostAfter int
	// Now is the clock the waits are measured on; default time.Now.
	Now func() time.Time
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = time.Minute
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Now == nil {
		b.Now = time.Now
	}
	if b.LostAfter <= 0 {
		b.LostAfter = DefaultLostAfter
	}
	return b
}

// DefaultLostAfter is Backoff.LostAfter's default: one late answer may be a
// slow plugin, three in a row is a stuck one.
const DefaultLostAfter = 3

// delay is the wait before a restart after the n-th consecutive crash.
func (b Backoff) delay(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return backoff.Exponential(n-1, b.Initial, b.Max, 2)
}

// ErrStopped is returned by a Supervisor's calls after Kill.
var ErrStopped = errors.New("sink supervisor stopped")

// Supervisor keeps one sink plugin running: it is a Sink that starts the
// plugin, notices when its process dies, and starts it again with backoff.
//
// A call that finds the plugin dead (or that loses it mid-call) restarts it,
// when the backoff allows, and returns an error wrapping ErrUnavailable: the
// batch is not sent in that call, because it may be the very batch that
// killed the process, and the host's retry policy, which counts attempts and
// dead-letters what keeps failing, decides when it goes again. The next call
// reaches the new process.
//
// A plugin can also hang and stay alive: stuck in a call, it never exits, so
// nothing above notices, and every batch would time out until the host
// dead-letters it. Backoff.LostAfter calls in a row that time out (Deliver or
// Health, without an answer in between) count as losing the plugin: it is
// killed and restarted like a crashed one, and the next call reaches the new
// process.
type Supervisor struct {
	spec    PluginSpec
	backoff Backoff

	mu        sync.Mutex
	p         *Plugin
	stopped   bool
	crashes   int       // consecutive failures to keep the plugin running
	timeouts  int       // consecutive calls on this process without an answer in time
	notBefore time.Time // no restart before this
	lost      bool      // a running process died and has not been replaced yet
	restarts  int
	lastErr   error
}

var _ Sink = (*Supervisor)(nil)

// NewSupervisor returns a supervisor for the plugin spec describes. It
// starts nothing: call Start to fail fast on a bad binary or configuration,
// or let the first call start it.
func NewSupervisor(spec PluginSpec, b Backoff) *Supervisor {
	return &Supervisor{spec: spec.withDefaults(), backoff: b.withDefaults()}
}

// Start starts the plugin if it is not running, at once whatever the
// backoff, and reports why it could not: a bad checksum or configuration
// shows here, at the observer's start, rather than on the first batch.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("sink %s: %w", s.spec.Name, ErrStopped)
	}
	if s.p != nil && !s.p.Exited() {
		return nil
	}
	if s.p != nil {
		s.lostLocked(errors.New("plugin process exited"))
	}
	_, err := s.startLocked(ctx)
	return err
}

// startLocked starts a new process and reports whether it replaces one that
// was lost.
func (s *Supervisor) startLocked(ctx context.Context) (restarted bool, err error) {
	p, err := Start(ctx, s.spec)
	if err != nil {
		s.failLocked(err)
		return false, err
	}
	s.p = p
	s.timeouts = 0
	if !s.lost {
		return false, nil
	}
	s.lost = false
	s.restarts++
	s.spec.Logger.Warn("sink plugin restarted", "sink", s.spec.Name, "pid", p.Pid(),
		"restarts", s.restarts, "after", s.lastErr.Error())
	return true, nil
}

// failLocked counts one more consecutive failure and schedules the next
// restart.
func (s *Supervisor) failLocked(err error) {
	s.crashes++
	s.lastErr = err
	s.notBefore = s.backoff.Now().Add(s.backoff.delay(s.crashes))
}

// lostLocked drops a process that died or stopped answering.
func (s *Supervisor) lostLocked(err error) {
	s.failLocked(err)
	s.lost = true
	s.p.Kill() // reaps a dead process, ends a hung one
	s.p = nil
}

// plugin returns the running plugin. When the last one died, it starts a
// new one and returns an error all the same, as the type comment explains.
// A plugin that never ran is simply started.
func (s *Supervisor) plugin(ctx context.Context) (*Plugin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, fmt.Errorf("sink %s: %w: %w", s.spec.Name, ErrUnavailable, ErrStopped)
	}
	if s.p != nil && !s.p.Exited() {
		return s.p, nil
	}
	if s.p != nil {
		s.lostLocked(errors.New("plugin process exited"))
	}
	if err := s.restartLocked(ctx); err != nil {
		return nil, err
	}
	return s.p, nil
}

// restartLocked starts a plugin when none runs and the backoff allows it.
// It returns nil only when it started the very first process; after a crash
// it returns an error wrapping ErrUnavailable even when the restart worked.
func (s *Supervisor) restartLocked(ctx context.Context) error {
	if wait := s.notBefore.Sub(s.backoff.Now()); wait > 0 {
		return fmt.Errorf("sink %s: %w: restart in %s after %d failures: %w",
			s.spec.Name, ErrUnavailable, wait.Round(time.Millisecond), s.crashes, s.lastErr)
	}
	restarted, err := s.startLocked(ctx)
	if err != nil {
		return fmt.Errorf("sink %s: %w: %w", s.spec.Name, ErrUnavailable, err)
	}
	if restarted {
		return fmt.Errorf("sink %s: %w: plugin restarted, batch not sent: %w", s.spec.Name, ErrUnavailable, s.lastErr)
	}
	return nil
}

// observe records the outcome of a call on p. A lost transport is a crash:
// the process is replaced at once when the backoff allows, so the next call
// reaches a live plugin; so are Backoff.LostAfter timeouts in a row. An
// answer resets both counts.
func (s *Supervisor) observe(ctx context.Context, p *Plugin, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != p || s.stopped {
		return // another call already dealt with this process
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		s.spec.Logger.Error("sink plugin lost", "sink", s.spec.Name, "error", err.Error())
		s.lostLocked(err)
		// The caller reports err, which already says the batch failed.
		_ = s.restartLocked(ctx)
	case errors.Is(err, context.DeadlineExceeded):
		// One late answer may be a slow plugin; LostAfter in a row is one
		// stuck in a call, which no exit will ever reveal.
		s.timeouts++
		if s.timeouts < s.backoff.LostAfter {
			return
		}
		lost := fmt.Errorf("sink %s: %w: no answer to %d calls in a row: %w", s.spec.Name, ErrUnavailable, s.timeouts, err)
		s.spec.Logger.Error("sink plugin not answering", "sink", s.spec.Name, "timeouts", s.timeouts)
		s.lostLocked(lost)
		// ctx has run out: the new process gets the start timeout instead.
		_ = s.restartLocked(context.WithoutCancel(ctx))
	case errors.Is(err, context.Canceled):
		// The caller gave up: that says nothing about the process.
	default:
		s.crashes = 0
		s.notBefore = time.Time{}
		s.timeouts = 0
	}
}

// Configure re-configures the plugin and remembers config for restarts.
func (s *Supervisor) Configure(ctx context.Context, config []byte) error {
	s.mu.Lock()
	s.spec.Config = config
	s.mu.Unlock()
	p, err := s.plugin(ctx)
	if err != nil {
		return err
	}
	err = p.Configure(ctx, config)
	s.observe(ctx, p, err)
	return err
}

// Deliver sends batch to the running plugin; see the type comment for what
// happens when the plugin is dead.
func (s *Supervisor) Deliver(ctx context.Context, batch []Record) ([]Result, error) {
	p, err := s.plugin(ctx)
	if err != nil {
		return nil, err
	}
	res, err := p.Deliver(ctx, batch)
	s.observe(ctx, p, err)
	return res, err
}

// Health checks the plugin, restarting it when it is dead.
func (s *Supervisor) Health(ctx context.Context) error {
	p, err := s.plugin(ctx)
	if err != nil {
		return err
	}
	err = p.Health(ctx)
	s.observe(ctx, p, err)
	return err
}

// Watch health-checks the plugin every interval until ctx is done, so that a
// plugin that died between batches is restarted before the next one needs
// it. Each check gets half the interval to answer, or the start timeout
// when that is longer, since a check may have to start a new process.
func (s *Supervisor) Watch(ctx context.Context, every time.Duration) {
	timeout := max(every/2, s.spec.StartTimeout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		if err := s.Health(cctx); err != nil && ctx.Err() == nil {
			s.spec.Logger.Warn("sink unhealthy", "sink", s.spec.Name, "error", err.Error())
		}
		cancel()
	}
}

// Pid is the running plugin's process id, or 0 when none runs.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return 0
	}
	return s.p.Pid()
}

// Restarts counts the restarts after a crash since the supervisor was made.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Kill ends the plugin for good: later calls fail with ErrStopped.
func (s *Supervisor) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.p != nil {
		s.p.Kill()
		s.p = nil
	}
}
