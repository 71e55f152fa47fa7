package delivery_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/silence"
	"github.com/callagent/agent/sink/sinktest"
)

// hookReceiver is a webhook endpoint recording the alert ids it is sent.
type hookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	ids []string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p struct {
			Events []struct {
				ID string `json:"id"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		for _, e := range p.Events {
			h.ids = append(h.ids, e.ID)
		}
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// runSilenced starts a Manager with one webhook sink muted by the silences
// bucket (a live watch of it), as the observer runs it.
func runSilenced(t *testing.T, conn *bus.Conn, url string) (*running, *silence.Set) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := delivery.New(conn, []config.Sink{fastSink("hook", "webhook", map[string]any{"url": url})}, bin.dir, natstest.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	set := silence.NewSet(natstest.Logger(t), nil)
	var wg sync.WaitGroup
	wg.Go(func() { set.Run(ctx, conn, 50*time.Millisecond) })
	waitFor(t, 5*time.Second, "the silences loaded", set.Loaded)
	m.Silence(set)
	wg.Go(func() {
		if err := m.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			m.Close()
		})
	}
	t.Cleanup(stop)
	return &running{Manager: m, reg: reg, stop: stop}, set
}

func emitAlert(t *testing.T, conn *bus.Conn, a *events.Alert) *events.Alert {
	t.Helper()
	a.ID = "" // a fresh id per notification
	if err := conn.Emit(t.Context(), a); err != nil {
		t.Fatalf("emit: %v", err)
	}
	return a
}

func resolved(a *events.Alert) *events.Alert {
	r := *a
	r.Header = events.Header{}
	r.Status = events.AlertResolved
	end := time.Now().UTC()
	r.EndsAt = &end
	return &r
}

// A silence on a service keeps its alerts from the sink, not others'; the
// silenced alert is still on ALERTS; its resolution stays muted after the
// silence is expired, while a new episode is delivered again; and after a
// restart (a new manager, the silence reloaded from the bucket) a
// resolution of an episode the silence covered is still muted.
func TestSilencedAlertsAreRecordedNotDelivered(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := t.Context()
	if _, err := conn.KeyValue(ctx, silence.Bucket, 0); err != nil {
		t.Fatal(err)
	}
	store, err := silence.Open(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	hook := newHookReceiver(t)
	r, set := runSilenced(t, conn, hook.URL)

	sil, err := store.Add(ctx, silence.Silence{Matchers: silence.Matchers{Service: "elevenlabs"},
		EndsAt: time.Now().Add(time.Hour), Comment: "vendor incident INC-42", CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the watch sees the silence", func() bool { return len(set.Active(time.Now())) == 1 })

	muted := emitAlert(t, conn, sinktest.Alert("elevenlabs", "breaker open for elevenlabs"))
	other := emitAlert(t, conn, sinktest.Alert("telephony", "breaker open for telephony"))
	waitFor(t, 10*time.Second, "the telephony alert delivered and the elevenlabs one settled", func() bool {
		st := status(t, r, "hook")
		return len(hook.got()) == 1 && st.Backlog == 0 && st.Silenced == 1
	})
	if got := hook.got(); got[0] != other.ID {
		t.Fatalf("webhook got %v, want only the telephony alert %s", got, other.ID)
	}
	onAlerts := 0
	for _, s := range alertIDs(t, conn) {
		if s == muted.ID {
			onAlerts++
		}
	}
	if onAlerts != 1 {
		t.Errorf("silenced alert is %d times on ALERTS, want recorded once", onAlerts)
	}
	if rs := receipts(t, conn, "hook"); len(rs) != 1 || rs[0].RefID != other.ID {
		t.Errorf("receipts %+v, want one, for the delivered alert", rs)
	}

	// Expired: the muted episode's resolution stays muted; a new episode
	// (and its resolution) is delivered.
	if _, err := store.Expire(ctx, sil.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the watch sees the expiry", func() bool { return len(set.Active(time.Now())) == 0 })
	res := emitAlert(t, conn, resolved(muted))
	again := sinktest.Alert("elevenlabs", "breaker open for elevenlabs again")
	again.StartsAt = muted.StartsAt.Add(time.Minute)
	again = emitAlert(t, conn, again)
	againRes := emitAlert(t, conn, resolved(again))
	waitFor(t, 10*time.Second, "the new episode delivered", func() bool {
		st := status(t, r, "hook")
		return len(hook.got()) == 3 && st.Backlog == 0
	})
	if got, want := hook.got(), []string{other.ID, again.ID, againRes.ID}; !slices.Equal(got, want) {
		t.Errorf("webhook got %v, want %v (not the muted resolution %s)", got, want, res.ID)
	}
	if st := status(t, r, "hook"); st.Silenced != 2 {
		t.Errorf("silenced = %d, want 2 (the alert and its resolution)", st.Silenced)
	}
	silenced, _, _ := metric(t, r.reg, "agent_sink_silenced_total", map[string]string{"sink": "hook"})
	if silenced != 2 {
		t.Errorf("agent_sink_silenced_total = %v, want 2", silenced)
	}

	// A restart between a muted alert and its resolution.
	crm, err := store.Add(ctx, silence.Silence{Matchers: silence.Matchers{Rule: "breaker_open", Severity: events.SeverityCritical},
		EndsAt: time.Now().Add(time.Hour), Comment: "maintenance"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the watch sees the second silence", func() bool { return len(set.Active(time.Now())) == 1 })
	crmAlert := emitAlert(t, conn, sinktest.Alert("crm", "breaker open for crm"))
	waitFor(t, 10*time.Second, "the crm alert settled", func() bool { return status(t, r, "hook").Silenced == 3 })
	r.stop()
	if _, err := store.Expire(ctx, crm.ID); err != nil {
		t.Fatal(err)
	}
	r2, set2 := runSilenced(t, conn, hook.URL)
	if all := set2.Active(time.Now()); len(all) != 0 {
		t.Errorf("active after restart: %+v, want none (both expired)", all)
	}
	emitAlert(t, conn, resolved(crmAlert))
	tel := emitAlert(t, conn, sinktest.Alert("telephony", "telephony again"))
	waitFor(t, 10*time.Second, "the restarted sink settled", func() bool {
		return status(t, r2, "hook").Backlog == 0 && len(hook.got()) == 4
	})
	if got := hook.got(); got[3] != tel.ID {
		t.Errorf("after restart the webhook got %v, want the telephony alert %s last and no crm resolution", got[3:], tel.ID)
	}
	if st := status(t, r2, "hook"); st.Silenced != 1 {
		t.Errorf("silenced after restart = %d, want 1 (the crm resolution)", st.Silenced)
	}
}

// alertIDs reads the ids of every alert on ALERTS.
func alertIDs(t *testing.T, conn *bus.Conn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	oc, err := conn.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.AlertAll}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		b, err := oc.Fetch(100, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			a, err := events.DecodeAs[*events.Alert](m.Data())
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, a.ID)
		}
		if n == 0 {
			return ids
		}
	}
}
