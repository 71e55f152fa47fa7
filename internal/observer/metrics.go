package observer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callagent/agent/events"
)

// Metrics are the Prometheus metrics the observer derives from the event
// stream. The delivery manager registers its own (deliveries by sink and
// result) on the same registry.
type Metrics struct {
	events             *prometheus.CounterVec
	attempts           *prometheus.CounterVec
	retries            *prometheus.CounterVec
	breakerTransitions *prometheus.CounterVec
	breakerState       *prometheus.GaugeVec
	status             *prometheus.GaugeVec
	alerts             *prometheus.CounterVec
	backlog            prometheus.Gauge
}

// NewMetrics creates the observer's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_observer_events_total", Help: "Events the observer consumed, by type.",
		}, []string{"type"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_attempts_total", Help: "Attempts against external services, by service and outcome.",
		}, []string{"service", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_retries_total", Help: "Retries scheduled, by service.",
		}, []string{"service"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_breaker_transitions_total",
			Help: "Circuit breaker transitions made by a caller itself (adopted ones are not counted again), by service and new state.",
		}, []string{"service", "to"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agent_breaker_state", Help: "Circuit breaker state last seen per service: 1 for the current state, 0 for the others.",
		}, []string{"service", "state"}),
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agent_service_status", Help: "Derived service status: 1 for the current status, 0 for the others.",
		}, []string{"service", "status"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_alerts_total", Help: "Alert notifications published, by rule, severity and status (firing or resolved).",
		}, []string{"rule", "severity", "status"}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agent_observer_consumer_backlog", Help: "Events not yet processed by the observer's durable consumer (pending plus unacknowledged).",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.attempts, m.retries, m.breakerTransitions, m.breakerState, m.status, m.alerts, m.backlog} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe counts one consumed event. A nil *Metrics counts nothing.
func (m *Metrics) observe(ev events.Event) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(string(ev.Head().Type)).Inc()
	switch e := ev.(type) {
	case *events.Attempt:
		m.attempts.WithLabelValues(e.Service, e.Outcome).Inc()
	case *events.Retry:
		m.retries.WithLabelValues(e.Service).Inc()
	case *events.Breaker:
		if e.Origin == "" {
			m.breakerTransitions.WithLabelValues(e.Service, e.To).Inc()
		}
		for _, s := range []string{events.BreakerClosed, events.BreakerOpen, events.BreakerHalfOpen} {
			m.breakerState.WithLabelValues(e.Service, s).Set(boolGauge(s == e.To))
		}
	}
}

func (m *Metrics) published(ev events.Event) {
	if m == nil {
		return
	}
	switch e := ev.(type) {
	case *events.Alert:
		m.alerts.WithLabelValues(e.Rule, e.Severity, e.Status).Inc()
	case *events.Status:
		for _, s := range []string{events.StatusUp, events.StatusDegraded, events.StatusDown} {
			m.status.WithLabelValues(e.Service, s).Set(boolGauge(s == e.To))
		}
	}
}

func (m *Metrics) setBacklog(n uint64) {
	if m != nil {
		m.backlog.Set(float64(n))
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
