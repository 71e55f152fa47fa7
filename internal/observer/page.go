package observer

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/silence"
)

// web holds the status page: plain HTML, CSS and JavaScript, nothing
// fetched from elsewhere.
//
//go:embed web
var web embed.FS

// Hub tells the page's live connections that something changed. The zero
// value is not usable: create it with NewHub.
type Hub struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewHub returns a hub.
func NewHub() *Hub { return &Hub{ch: make(chan struct{})} }

// Notify wakes every waiter. It never blocks.
func (h *Hub) Notify() {
	h.mu.Lock()
	close(h.ch)
	h.ch = make(chan struct{})
	h.mu.Unlock()
}

// Wait returns a channel closed at the next Notify.
func (h *Hub) Wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// Live is what the status page shows beside the pipeline's snapshot. Every
// field may be nil.
type Live struct {
	Campaigns *Campaigns
	Silences  *silence.Set
	// Hub wakes the page's connections when the pipeline, the campaigns
	// or the silences change (pass Hub.Notify as their OnChange).
	Hub *Hub
	// Refresh is how often a view is sent when nothing changed (sinks'
	// backlog, countdowns). Default 2s.
	Refresh time.Duration
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
}

// View is what the page shows: the snapshot plus campaigns and the active
// silences, with the server's clock so the page can count down.
type View struct {
	Now time.Time `json:"now"`
	Snapshot
	Campaigns []CampaignView    `json:"campaigns"`
	Silences  []silence.Silence `json:"silences"`
}

// pageRecentAlerts is how many recent alerts the page lists.
const pageRecentAlerts = 20

// coalesce is how long a change waits for more before a view goes out, so
// a burst of events costs one update.
const coalesce = 150 * time.Millisecond

type page struct {
	p        *Pipeline
	sinks    Sinks
	election Election
	live     Live
}

func (pg *page) now() time.Time {
	if pg.live.Now != nil {
		return pg.live.Now()
	}
	return time.Now()
}

func (pg *page) view(sinks []delivery.SinkStatus) View {
	v := View{Now: pg.now().UTC(), Snapshot: pg.p.Snapshot(), Campaigns: []CampaignView{}, Silences: []silence.Silence{}}
	if len(v.RecentAlerts) > pageRecentAlerts {
		v.RecentAlerts = v.RecentAlerts[:pageRecentAlerts]
	}
	if sinks != nil {
		v.Sinks = sinks
	}
	if pg.election != nil {
		st := pg.election.Status()
		v.Lease = &st
	}
	if pg.live.Campaigns != nil {
		v.Campaigns = pg.live.Campaigns.View()
	}
	if pg.live.Silences != nil {
		v.Silences = pg.live.Silences.Active(v.Now)
	}
	return v
}

func (pg *page) sinkStatus(ctx context.Context) []delivery.SinkStatus {
	if pg.sinks == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pg.sinks.Status(ctx)
}

// serveView is GET /view: one View as JSON.
func (pg *page) serveView(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(pg.view(pg.sinkStatus(r.Context())))
}

// serveLive is GET /live: server-sent events, one "view" event at once,
// then one after each change (coalesced) and at least every Refresh.
func (pg *page) serveLive(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	refresh := pg.live.Refresh
	if refresh <= 0 {
		refresh = 2 * time.Second
	}
	ctx := r.Context()
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	var sinks []delivery.SinkStatus
	var sinksAt time.Time
	var changed <-chan struct{}
	if _, err := fmt.Fprintf(w, "retry: 2000\n\n"); err != nil {
		return
	}
	for {
		if pg.live.Hub != nil {
			changed = pg.live.Hub.Wait()
		}
		// The sinks' status asks the server for each backlog: at most once
		// a second per connection.
		if time.Since(sinksAt) >= time.Second {
			sinks, sinksAt = pg.sinkStatus(ctx), time.Now()
		}
		data, err := json.Marshal(pg.view(sinks))
		if err != nil {
			return
		}
		var b bytes.Buffer
		b.WriteString("event: view\ndata: ")
		b.Write(data)
		b.WriteString("\n\n")
		if _, err := w.Write(b.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
			t := time.NewTimer(coalesce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// registerPage adds the status page to mux: / (the page), /assets/ (its
// script and style), /view (one view as JSON) and /live (the event stream).
func registerPage(mux *http.ServeMux, pg *page) {
	assets, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(assets)
	secure := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Nothing but this server: no CDN, no inline script.
			w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			h.ServeHTTP(w, r)
		})
	}
	mux.Handle("GET /{$}", secure(files))
	mux.Handle("GET /assets/", secure(files))
	mux.HandleFunc("GET /view", pg.serveView)
	mux.HandleFunc("GET /live", pg.serveLive)
}
