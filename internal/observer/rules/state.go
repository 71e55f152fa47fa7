package rules

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// service is what the engine knows of one external service.
type service struct {
	Name   string    `json:"name"`
	Status string    `json:"status,omitempty"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
	// DownSince is set while the status is down.
	DownSince time.Time `json:"down_since"`

	// Breaker is the last transition seen from any caller; Breakers holds
	// each caller's breaker that is not closed.
	Breaker      string            `json:"breaker,omitempty"`
	BreakerSince time.Time         `json:"breaker_since"`
	Breakers     map[string]string `json:"breakers,omitempty"`

	Health         string `json:"health,omitempty"`
	HealthFailures int    `json:"health_failures,omitempty"`

	ConsecFailures  int `json:"consec_failures,omitempty"`
	ConsecSuccesses int `json:"consec_successes,omitempty"`

	Window window `json:"window"`
}

// derive is the status rule: down while a breaker is open (or probing) or the
// health probes keep failing; degraded while attempts keep failing or the
// error or retry rate is high; up otherwise, that is as soon as successes
// resume, the breaker closes or the probes pass again.
func (s *service) derive(r rates, cfg config.Rules) (status, why string) {
	switch {
	case s.Breaker == events.BreakerOpen || s.Breaker == events.BreakerHalfOpen:
		why = "circuit breaker " + s.Breaker
		if n := len(s.Breakers); n > 1 {
			why = fmt.Sprintf("circuit breaker open on %d callers", n)
		}
		return events.StatusDown, why
	case s.HealthFailures >= DownAfterProbes:
		return events.StatusDown, fmt.Sprintf("%d health probes failed in a row", s.HealthFailures)
	case s.ConsecFailures >= DegradedAfter:
		return events.StatusDegraded, fmt.Sprintf("%d attempts failed in a row", s.ConsecFailures)
	}
	enough := r.Attempts > 0 && r.Attempts >= cfg.RateMinRequests
	if enough && s.ConsecSuccesses < RecoveredAfter {
		switch {
		case r.errorRate() > cfg.ErrorRate:
			return events.StatusDegraded, fmt.Sprintf("error rate %s over %s", percent(r.errorRate()), cfg.RateWindow)
		case r.retryRate() > cfg.RetryRate:
			return events.StatusDegraded, fmt.Sprintf("retry rate %s over %s", percent(r.retryRate()), cfg.RateWindow)
		}
	}
	switch {
	case s.ConsecFailures > 0:
		return events.StatusUp, "one attempt failed"
	case s.ConsecSuccesses > 0:
		return events.StatusUp, "attempts succeed"
	case s.Breaker == events.BreakerClosed:
		return events.StatusUp, "circuit breaker closed"
	case s.Health == events.OutcomeSuccess:
		return events.StatusUp, "health probe ok"
	}
	return events.StatusUp, "no failures seen"
}

// alert is one active alert: an episode from its first occurrence to its
// resolution.
type alert struct {
	Fingerprint string            `json:"fingerprint"`
	Rule        string            `json:"rule"`
	Service     string            `json:"service,omitempty"`
	Severity    string            `json:"severity"`
	Labels      map[string]string `json:"labels,omitempty"`
	Summary     string            `json:"summary,omitempty"`
	Message     string            `json:"message,omitempty"`
	StartsAt    time.Time         `json:"starts_at"`
	// Cause is the id of the event that opened the episode.
	Cause string `json:"cause,omitempty"`
	// Sent counts the firing notifications of the episode; LastSent is the
	// latest one's time.
	Sent     int       `json:"sent,omitempty"`
	LastSent time.Time `json:"last_sent"`
	// PendingSince is set while a group waits to be sent.
	PendingSince time.Time `json:"pending_since"`
	// Count and CallIDs are the occurrences not notified yet; Total counts
	// the whole episode.
	Count   int      `json:"count,omitempty"`
	Total   int      `json:"total,omitempty"`
	CallIDs []string `json:"call_ids,omitempty"`
}

func (a *alert) summary() string {
	switch a.Rule {
	case RuleRetriesExhausted:
		if a.Count > 1 {
			return fmt.Sprintf("%s: %d calls failed with retries exhausted", a.Service, a.Count)
		}
		return a.Service + ": a call failed with retries exhausted"
	case RulePermanentFailure:
		if a.Count > 1 {
			return fmt.Sprintf("%s (%d calls)", a.Summary, a.Count)
		}
	}
	return a.Summary
}

func (a *alert) resolvedSummary() string {
	switch a.Rule {
	case RuleBreakerOpen:
		return a.Service + " circuit breaker closed again"
	case RuleServiceDown:
		return a.Service + " is no longer down"
	case RulePermanentFailure, RuleRetriesExhausted:
		return a.Service + " calls succeed again"
	case RuleErrorRate:
		return a.Service + " error rate back under threshold"
	case RuleRetryRate:
		return a.Service + " retry rate back under threshold"
	case RuleLatency:
		return a.Service + " latency back under threshold"
	}
	return a.Summary + " (resolved)"
}

// stateVersion is bumped when the serialised state changes incompatibly.
const stateVersion = 1

type snapshot struct {
	V        int                 `json:"v"`
	Clock    time.Time           `json:"clock"`
	Services map[string]*service `json:"services"`
	Alerts   map[string]*alert   `json:"alerts"`
}

// MarshalJSON serialises the engine's state (not its thresholds).
func (e *Engine) MarshalJSON() ([]byte, error) {
	return json.Marshal(snapshot{V: stateVersion, Clock: e.clock, Services: e.services, Alerts: e.alerts})
}

// UnmarshalJSON restores a state saved by MarshalJSON into an engine made by
// New, which keeps its thresholds.
func (e *Engine) UnmarshalJSON(data []byte) error {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("rules state: %w", err)
	}
	if s.V != stateVersion {
		return fmt.Errorf("rules state: version %d, want %d", s.V, stateVersion)
	}
	if s.Services == nil {
		s.Services = map[string]*service{}
	}
	if s.Alerts == nil {
		s.Alerts = map[string]*alert{}
	}
	if e.services == nil { // a zero Engine: take the defaults
		*e = *New(config.Rules{})
	}
	e.clock, e.services, e.alerts = s.Clock, s.Services, s.Alerts
	return nil
}

// ServiceView is a service as /status shows it.
type ServiceView struct {
	Service      string            `json:"service"`
	Status       string            `json:"status"`
	Since        time.Time         `json:"since"`
	Reason       string            `json:"reason,omitempty"`
	Breaker      string            `json:"breaker,omitempty"`
	BreakerSince *time.Time        `json:"breaker_since,omitempty"`
	Breakers     map[string]string `json:"breakers_not_closed,omitempty"`
	Health       string            `json:"health,omitempty"`
	// Attempts, ErrorRate and RetryRate are over the rate window.
	Attempts  int     `json:"attempts"`
	ErrorRate float64 `json:"error_rate"`
	RetryRate float64 `json:"retry_rate"`
}

// Services returns every service seen, by name.
func (e *Engine) Services() []ServiceView {
	out := make([]ServiceView, 0, len(e.services))
	for _, name := range slices.Sorted(maps.Keys(e.services)) {
		s := e.services[name]
		r := s.Window.sum(e.span, e.clock)
		v := ServiceView{
			Service: name, Status: s.Status, Since: s.Since, Reason: s.Reason,
			Breaker: s.Breaker, Breakers: maps.Clone(s.Breakers), Health: s.Health,
			Attempts: r.Attempts, ErrorRate: r.errorRate(), RetryRate: r.retryRate(),
		}
		if !s.BreakerSince.IsZero() {
			t := s.BreakerSince
			v.BreakerSince = &t
		}
		out = append(out, v)
	}
	return out
}

// ActiveAlert is an alert that has not resolved.
type ActiveAlert struct {
	Fingerprint string            `json:"fingerprint"`
	Rule        string            `json:"rule"`
	Service     string            `json:"service,omitempty"`
	Severity    string            `json:"severity"`
	Summary     string            `json:"summary"`
	Labels      map[string]string `json:"labels,omitempty"`
	StartsAt    time.Time         `json:"starts_at"`
	// Notified is how many notifications were sent; 0 while the first group waits.
	Notified    int        `json:"notified"`
	LastSent    *time.Time `json:"last_sent,omitempty"`
	Occurrences int        `json:"occurrences"`
}

// Active returns the active alerts, oldest first.
func (e *Engine) Active() []ActiveAlert {
	out := make([]ActiveAlert, 0, len(e.alerts))
	for _, a := range e.alerts {
		v := ActiveAlert{
			Fingerprint: a.Fingerprint, Rule: a.Rule, Service: a.Service, Severity: a.Severity,
			Summary: a.summary(), Labels: maps.Clone(a.Labels), StartsAt: a.StartsAt,
			Notified: a.Sent, Occurrences: a.Total,
		}
		if !a.LastSent.IsZero() {
			t := a.LastSent
			v.LastSent = &t
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b ActiveAlert) int {
		if c := a.StartsAt.Compare(b.StartsAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Fingerprint, b.Fingerprint)
	})
	return out
}
