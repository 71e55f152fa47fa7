package observer

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/rules"
)

// Sinks is what /status needs of the delivery manager.
type Sinks interface {
	Status(ctx context.Context) []delivery.SinkStatus
}

// Breaker is a service's circuit breaker as last seen.
type Breaker struct {
	State string     `json:"state"`
	Since *time.Time `json:"since,omitempty"`
	// NotClosed lists the callers whose own breaker is not closed.
	NotClosed map[string]string `json:"not_closed,omitempty"`
	// HalfOpenAt, while open, is when the breaker lets a probe through:
	// the open_until of the latest transition, else since plus the
	// service's recovery_timeout.
	HalfOpenAt *time.Time `json:"half_open_at,omitempty"`
}

// Consumer is the durable consumer's progress.
type Consumer struct {
	Name string `json:"name"`
	// Seq is the stream sequence of the last event applied.
	Seq uint64 `json:"seq"`
	// Backlog is what the consumer has not processed yet (pending plus
	// unacknowledged), as last measured.
	Backlog uint64 `json:"backlog"`
	Running bool   `json:"running"`
}

// Snapshot is the observer's view, served on /status.
type Snapshot struct {
	// Clock is the rules' event time.
	Clock        time.Time           `json:"clock"`
	Consumer     Consumer            `json:"consumer"`
	Services     []rules.ServiceView `json:"services"`
	Breakers     map[string]Breaker  `json:"breakers"`
	ActiveAlerts []rules.ActiveAlert `json:"active_alerts"`
	// RecentAlerts are the latest notifications, newest first.
	RecentAlerts []*events.Alert       `json:"recent_alerts"`
	Sinks        []delivery.SinkStatus `json:"sinks"`
}

// Snapshot returns the observer's current view (without sinks).
func (p *Pipeline) Snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Snapshot{
		Clock:        p.engine.Clock(),
		Consumer:     Consumer{Name: p.opts.Consumer, Seq: p.seq, Running: p.running.Load()},
		Services:     p.engine.Services(),
		Breakers:     map[string]Breaker{},
		ActiveAlerts: p.engine.Active(),
		RecentAlerts: slices.Clone(p.recent),
		Sinks:        []delivery.SinkStatus{},
	}
	slices.Reverse(s.RecentAlerts)
	if p.lastInfo != nil {
		s.Consumer.Backlog = p.lastInfo.NumPending + uint64(p.lastInfo.NumAckPending)
	}
	for _, v := range s.Services {
		if v.Breaker != "" {
			b := Breaker{State: v.Breaker, Since: v.BreakerSince, NotClosed: v.Breakers}
			if v.Breaker == events.BreakerOpen {
				if t, ok := p.openUntil[v.Service]; ok {
					b.HalfOpenAt = &t
				} else if d := p.opts.RecoveryTimeout[v.Service]; d > 0 && v.BreakerSince != nil {
					t := v.BreakerSince.Add(d)
					b.HalfOpenAt = &t
				}
			}
			s.Breakers[v.Service] = b
		}
	}
	return s
}

// Handler serves /healthz (the process is alive), /readyz (connected and
// consuming), /status (Snapshot as JSON, with the sinks' status when sinks
// is not nil), /metrics (everything registered on g) and the live status
// page: / with /live (server-sent events) and /view (see registerPage).
// live may be nil: the page then shows the pipeline and the sinks only.
func Handler(p *Pipeline, sinks Sinks, g prometheus.Gatherer, live *Live) http.Handler {
	mux := http.NewServeMux()
	pg := &page{p: p, sinks: sinks}
	if live != nil {
		pg.live = *live
	}
	registerPage(mux, pg)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !p.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: not connected to NATS or not consuming\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s := p.Snapshot()
		if sinks != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if st := sinks.Status(ctx); st != nil {
				s.Sinks = st
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
