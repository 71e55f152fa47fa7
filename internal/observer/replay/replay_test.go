package replay_test

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer"
	"github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/replay"
	"github.com/callagent/agent/internal/observer/report"
	"github.com/callagent/agent/internal/observer/rules"
)

var rulesCfg = config.Default().Observer.Rules

func emit(t *testing.T, c *bus.Conn, evs ...events.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ev := range evs {
		if err := c.Emit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storedIDs returns the sorted ids of the stream's messages under prefix.
func storedIDs(t *testing.T, c *bus.Conn, stream, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	s, err := c.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; info.State.LastSeq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || !strings.HasPrefix(m.Subject, prefix) {
			continue
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.Head().ID)
	}
	sort.Strings(ids)
	return ids
}

func idsOf[T events.Event](evs []T) []string {
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.Head().ID)
	}
	sort.Strings(ids)
	return ids
}

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// liveRun feeds the seed scenario to a live observer and returns the
// connection, the scenario's start and the end of the run.
func liveRun(t *testing.T, srv *natstest.Server) (*bus.Conn, time.Time, time.Time) {
	t.Helper()
	conn := srv.Conn(t)
	t0 := time.Now().UTC().Add(-90 * time.Second).Truncate(time.Millisecond)
	end := t0.Add(2 * time.Minute)
	var clk clock
	clk.Set(t0.Add(-time.Second))

	ctx, cancel := context.WithCancel(context.Background())
	p, err := observer.New(ctx, conn, observer.Options{Rules: rulesCfg, Now: clk.Now, Tick: 20 * time.Millisecond, Log: natstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	seed := observertest.Seed("seed", t0)
	emit(t, conn, seed...)
	waitFor(t, "the live observer to apply the scenario", func() bool {
		return p.Snapshot().Consumer.Seq >= uint64(len(seed)) && p.Snapshot().Clock.Equal(seed[len(seed)-1].Head().Time)
	})
	clk.Set(end)
	waitFor(t, "the live observer's clock to reach the end", func() bool { return !p.Snapshot().Clock.Before(end) })
	cancel()
	wg.Wait()
	return conn, t0, end
}

func TestReplayMatchesLive(t *testing.T) {
	srv := natstest.Start(t)
	conn, t0, end := liveRun(t, srv)
	liveAlerts := storedIDs(t, conn, events.StreamAlerts, events.AlertPrefix)
	liveStatuses := storedIDs(t, conn, events.StreamEvents, events.StatusPrefix)
	if len(liveAlerts) != 2 {
		t.Fatalf("the live run stored %d alerts, want the seed's firing and resolved", len(liveAlerts))
	}
	ctx := context.Background()
	before, err := conn.ConsumerInfo(ctx, events.StreamEvents, "observer")
	if err != nil {
		t.Fatal(err)
	}
	streamBefore := streamLast(t, conn)

	res, err := replay.Run(ctx, conn, replay.Options{From: t0.Add(-time.Second), To: end, Rules: rulesCfg, Log: natstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("same alerts as the live run", func(t *testing.T) {
		if got := idsOf(res.Alerts); !reflect.DeepEqual(got, liveAlerts) {
			t.Errorf("replayed alert ids %q, live %q", got, liveAlerts)
		}
		if got := idsOf(res.Statuses); !reflect.DeepEqual(got, liveStatuses) {
			t.Errorf("replayed status ids %q, live %q", got, liveStatuses)
		}
	})
	t.Run("report figures", func(t *testing.T) {
		r := res.Report
		s := r.Service("elevenlabs")
		if s == nil || s.TimeToDetect == nil || s.TimeToRecover == nil {
			t.Fatalf("elevenlabs %+v", s)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"impact began", s.ImpactBegan.Sub(t0), 500 * time.Millisecond},
			{"time to detect", time.Duration(*s.TimeToDetect), 36 * time.Second},
			{"time to recover", time.Duration(*s.TimeToRecover), 36 * time.Second},
			{"calls affected", s.CallsAffected, 1},
			{"alerts fired", s.AlertsFired, 1},
			{"alerts resolved", s.AlertsResolved, 1},
			{"report alerts fired", r.Fired(), 1},
			{"calls", r.Calls, report.Calls{Total: 3, Completed: 2, Failed: 1}},
			{"events", r.Events, len(observertest.Seed("x", t0))},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		if len(res.Alerts) != 2 || res.Alerts[0].Rule != rules.RuleRetriesExhausted {
			t.Errorf("alerts %+v", res.Alerts)
		}
	})
	t.Run("published nothing and left the live consumer alone", func(t *testing.T) {
		if got := streamLast(t, conn); got != streamBefore {
			t.Errorf("stream sequences moved from %v to %v", streamBefore, got)
		}
		after, err := conn.ConsumerInfo(ctx, events.StreamEvents, "observer")
		if err != nil {
			t.Fatal(err)
		}
		if after.Delivered.Stream != before.Delivered.Stream || after.AckFloor.Stream != before.AckFloor.Stream ||
			after.Delivered.Consumer != before.Delivered.Consumer || after.NumPending != before.NumPending {
			t.Errorf("durable consumer moved: before %+v/%+v, after %+v/%+v", before.Delivered, before.AckFloor, after.Delivered, after.AckFloor)
		}
	})
}

func streamLast(t *testing.T, c *bus.Conn) [2]uint64 {
	t.Helper()
	var last [2]uint64
	for i, name := range []string{events.StreamEvents, events.StreamAlerts} {
		s, err := c.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		last[i] = info.State.LastSeq
	}
	return last
}

type recorder struct {
	sink   string
	alerts []*events.Alert
}

func (r *recorder) DeliverTo(_ context.Context, sink string, alerts []*events.Alert) error {
	r.sink, r.alerts = sink, alerts
	return nil
}

func TestReplayWindowAndDelivery(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	t0 := time.Now().UTC().Add(-2 * time.Minute).Truncate(time.Millisecond)
	seed := observertest.Seed("seed", t0)
	// Before the window: a permanent failure that must not be reported.
	early := observertest.Stamped(observertest.Failure("early", t0.Add(-time.Minute), "call-0", "crm", 1, events.CategoryPermanent, 401, "invalid_api_key", ""))
	emit(t, conn, append(early, seed...)...)
	ctx := context.Background()
	from, to := t0, t0.Add(time.Minute)

	tests := []struct {
		name      string
		opts      replay.Options
		wantErr   error
		delivered int
	}{
		{name: "delivery off", opts: replay.Options{From: from, To: to}},
		{name: "deliver to a sink", opts: replay.Options{From: from, To: to, DeliverTo: "telegram"}, delivered: 2},
		{name: "no deliverer", opts: replay.Options{From: from, To: to, DeliverTo: "telegram"}, wantErr: replay.ErrNoDeliverer},
		{name: "empty window", opts: replay.Options{From: t0.Add(-time.Hour), To: t0.Add(-50 * time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			if tt.opts.DeliverTo != "" && tt.wantErr == nil {
				tt.opts.Deliverer = rec
			}
			res, err := replay.Run(ctx, conn, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(rec.alerts) != tt.delivered || (tt.delivered > 0 && rec.sink != "telegram") {
				t.Errorf("delivered %d alerts to %q, want %d", len(rec.alerts), rec.sink, tt.delivered)
			}
			if res.Report.Service("crm") != nil && res.Report.Service("crm").Failures > 0 {
				t.Errorf("the failure before the window was replayed")
			}
			if tt.name == "empty window" && (res.Report.Events != 0 || len(res.Alerts) != 0) {
				t.Errorf("empty window: %d events, %d alerts", res.Report.Events, len(res.Alerts))
			}
		})
	}
}
