package observer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/lease"
	"github.com/callagent/agent/internal/observer/rules"
)

// Sinks is what /status needs of the delivery manager.
type Sinks interface {
	Status(ctx context.Context) []delivery.SinkStatus
}

// Election is what the endpoints need of the observers' lease.
type Election interface {
	Status() lease.Status
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
	// Lease says whether this observer is the active one or stands by, and
	// which is active. A standby's view is the state as it last loaded it.
	Lease *lease.Status `json:"lease,omitempty"`
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

// Handler serves /healthz (the process is alive), /readyz, /status
// (Snapshot as JSON, with the sinks' status when sinks is not nil and the
// lease's when election is not nil), /metrics (everything registered on g)
// and the live status page: / with /live (server-sent events) and /view
// (see registerPage). /readyz is 200 for an active observer that is
// connected and consuming, and for a standby that is connected and watching
// the lease (it is healthy: ready to take over); its body says which it is
// and which observer is active. election nil: the observer is always
// active. live may be nil: the page then shows the pipeline and the sinks
// only.
func Handler(p *Pipeline, sinks Sinks, election Election, g prometheus.Gatherer, live *Live) http.Handler {
	mux := http.NewServeMux()
	pg := &page{p: p, sinks: sinks, election: election}
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
		if election == nil {
			if !p.Ready() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready: not connected to NATS or not consuming\n"))
				return
			}
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		st := election.Status()
		switch {
		case st.Role == lease.RoleActive && !p.Ready():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: active (%s) but not connected to NATS or not consuming yet\n", st.Self)
		case st.Role == lease.RoleActive:
			_, _ = fmt.Fprintf(w, "ready: active (%s)\n", st.Self)
		case !st.Running || !p.conn.Connected():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: standby (%s) not connected to NATS or not watching the lease\n", st.Self)
		case st.Active == nil:
			_, _ = fmt.Fprintf(w, "ready: standby (%s); no observer is active: the lease is free\n", st.Self)
		default:
			_, _ = fmt.Fprintf(w, "ready: standby (%s); active observer: %s at %s since %s\n",
				st.Self, st.Active.Holder, st.Active.Addr, st.Active.Since.Format(time.RFC3339))
		}
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
		if election != nil {
			st := election.Status()
			s.Lease = &st
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
