package delivery

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callagent/agent/sink"
)

// Results of the deliveries counter.
const (
	resultDelivered  = "delivered"
	resultRetried    = "retried"
	resultDeadLetter = "dead_letter"
)

// metrics are the Prometheus series of every sink, labelled by sink name.
type metrics struct {
	deliveries *prometheus.CounterVec
	filtered   *prometheus.CounterVec
	silenced   *prometheus.CounterVec
	batchSize  *prometheus.HistogramVec
	latency    *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agent", Subsystem: "sink", Name: "deliveries_total",
			Help: "Records settled by each sink, by result: delivered, retried (redelivery scheduled) or dead_letter.",
		}, []string{"sink", "result"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agent", Subsystem: "sink", Name: "filtered_total",
			Help: "Alerts below a sink's min_severity, acknowledged without delivery.",
		}, []string{"sink"}),
		silenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agent", Subsystem: "sink", Name: "silenced_total",
			Help: "Alerts (and resolutions) a silence kept from a sink, acknowledged without delivery.",
		}, []string{"sink"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agent", Subsystem: "sink", Name: "batch_size",
			Help:    "Records handed to a sink in one Deliver call.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}, []string{"sink"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agent", Subsystem: "sink", Name: "delivery_duration_seconds",
			Help:    "Time a sink took to answer one Deliver call, failed calls included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9), // 1ms .. 65s
		}, []string{"sink"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.filtered, m.silenced, m.batchSize, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register sink metrics: %w", err)
		}
	}
	return m, nil
}

// registerRestarts exports the supervisor's restart count of one sink.
func (m *metrics) registerRestarts(reg prometheus.Registerer, name string, sup *sink.Supervisor) error {
	if reg == nil {
		return nil
	}
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "agent", Subsystem: "sink", Name: "plugin_restarts_total",
		Help:        "Restarts of a sink's plugin process after it crashed or stopped answering.",
		ConstLabels: prometheus.Labels{"sink": name},
	}, func() float64 { return float64(sup.Restarts()) })
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("register restarts of sink %s: %w", name, err)
	}
	return nil
}

// sinkMetrics are one sink's series, resolved once.
type sinkMetrics struct {
	delivered, retried, dead, filtered, silenced prometheus.Counter
	batchSize, latency                           prometheus.Observer
}

func (m *metrics) forSink(name string) sinkMetrics {
	return sinkMetrics{
		delivered: m.deliveries.WithLabelValues(name, resultDelivered),
		retried:   m.deliveries.WithLabelValues(name, resultRetried),
		dead:      m.deliveries.WithLabelValues(name, resultDeadLetter),
		filtered:  m.filtered.WithLabelValues(name),
		silenced:  m.silenced.WithLabelValues(name),
		batchSize: m.batchSize.WithLabelValues(name),
		latency:   m.latency.WithLabelValues(name),
	}
}
