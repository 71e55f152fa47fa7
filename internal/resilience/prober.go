package resilience

import (
	"context"
	"errors"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// Defaults of a prober whose configuration fields are zero.
const (
	DefaultHealthInterval = 15 * time.Second
	DefaultHealthTimeout  = 5 * time.Second
)

// HealthChecker is a service that can say whether it is up. Provider clients
// implement it with a cheap authenticated request (ElevenLabs GET /v1/user,
// an LLM's GET /v1/models); an error should be an *Error, as for calls.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// HealthCheckFunc adapts a function to HealthChecker.
type HealthCheckFunc func(ctx context.Context) error

// Health calls f.
func (f HealthCheckFunc) Health(ctx context.Context) error { return f(ctx) }

// Prober checks one service's health in the background and publishes each
// result on agent.health.<service>. A success while the service's breaker is
// open ends the open period early, into half-open (through the fleet, so
// that every caller does): recovery is noticed by a cheap probe rather than
// after the whole recovery timeout. It never closes the breaker: the check
// is shallow (ElevenLabs' GET /v1/user answers while text-to-speech fails),
// so the half-open breaker's real calls decide. A failure leaves the breaker
// alone; calls trip it.
type Prober struct {
	fleet    *Fleet
	service  string
	checker  HealthChecker
	interval time.Duration
	timeout  time.Duration
}

// NewProber returns a prober of service on fleet, configured by cfg (zero
// fields take DefaultHealthInterval and DefaultHealthTimeout; Enabled is for
// the caller to honour by not running it).
func NewProber(fleet *Fleet, service string, h HealthChecker, cfg config.Health) *Prober {
	p := &Prober{fleet: fleet, service: service, checker: h, interval: cfg.Interval, timeout: cfg.Timeout}
	if p.interval <= 0 {
		p.interval = DefaultHealthInterval
	}
	if p.timeout <= 0 {
		p.timeout = DefaultHealthTimeout
	}
	return p
}

// Run probes at once and then every interval, on the fleet's clock, until ctx
// is done.
func (p *Prober) Run(ctx context.Context) {
	for {
		_ = p.Probe(ctx) // the result is published; nothing more to do here
		select {
		case <-ctx.Done():
			return
		case <-p.fleet.clock.After(p.interval):
		}
	}
}

// Probe runs one health check with the configured timeout, acts on a success,
// publishes the result and returns the check's error. A probe cut short by
// ctx publishes nothing and returns ctx's error.
func (p *Prober) Probe(ctx context.Context) error {
	start := time.Now()
	checkCtx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.checker.Health(checkCtx)
	cancel()
	latency := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	ev := &events.Health{Service: p.service, LatencyMs: latency.Milliseconds(), Outcome: events.OutcomeSuccess}
	if err == nil {
		p.fleet.HealthSuccess(p.service)
	} else {
		ev.Outcome = events.OutcomeFailure
		ev.StatusCode, ev.Message = describeHealthError(err)
	}
	if b := p.fleet.Breaker(p.service); b != nil {
		ev.BreakerState = b.State().String()
	}
	if perr := p.fleet.conn.Emit(ctx, ev); perr != nil {
		p.fleet.log.Warn("publish health event", "service", p.service, "err", perr)
	}
	return err
}

// describeHealthError returns what may be published about a failed check:
// the *Error's status and safe message, and otherwise a fixed phrase, since
// an arbitrary error's text may hold a URL with a token in it.
func describeHealthError(err error) (int, string) {
	if e, ok := errors.AsType[*Error](err); ok {
		msg := e.Message
		if msg == "" {
			msg = e.Code
		}
		if msg == "" {
			msg = string(e.Category)
		}
		return e.StatusCode, "health check failed: " + msg
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, "health check timed out"
	}
	return 0, "health check failed"
}
