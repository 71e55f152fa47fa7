package observer

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/rules"
)

// fakeClock is the wall clock the pipeline's ticker reads.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock { c := &fakeClock{}; c.Set(t); return c }
func (c *fakeClock) Now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time)  { c.ns.Store(t.UnixNano()) }

// running is a pipeline run in the background.
type running struct {
	p    *Pipeline
	stop func()
}

func startPipeline(t testing.TB, conn *bus.Conn, opts Options, hook func(context.Context, []rules.Output) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Log == nil {
		opts.Log = natstest.Logger(t)
	}
	if opts.Tick == 0 {
		opts.Tick = 20 * time.Millisecond
	}
	p, err := New(ctx, conn, opts)
	if err != nil {
		cancel()
		t.Fatalf("new pipeline: %v", err)
	}
	p.afterPublish = hook
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("run: %v", err)
		}
	})
	var once sync.Once
	r := &running{p: p, stop: func() { once.Do(func() { cancel(); wg.Wait() }) }}
	t.Cleanup(r.stop)
	return r
}

func emit(t testing.TB, c *bus.Conn, evs ...events.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ev := range evs {
		if err := c.Emit(ctx, ev); err != nil {
			t.Fatalf("emit %s: %v", ev.Head().ID, err)
		}
	}
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// caughtUp waits until the pipeline has applied every input event stored.
func caughtUp(t testing.TB, c *bus.Conn, p *Pipeline) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "the pipeline to catch up", 15*time.Second, func() bool {
		s, err := c.Stream(ctx, events.StreamEvents)
		if err != nil {
			return false
		}
		var last uint64
		for _, subj := range InputSubjects {
			if m, err := s.GetLastMsgForSubject(ctx, subj); err == nil && m.Sequence > last {
				last = m.Sequence
			}
		}
		return p.Snapshot().Consumer.Seq >= last
	})
}

// stored reads every message of a stream whose subject starts with prefix.
func stored[T events.Event](t testing.TB, c *bus.Conn, stream, prefix string) []T {
	t.Helper()
	ctx := context.Background()
	s, err := c.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.LastSeq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || !strings.HasPrefix(m.Subject, prefix) {
			continue
		}
		ev, err := events.DecodeAs[T](m.Data)
		if err != nil {
			t.Fatalf("stored message %d: %v", seq, err)
		}
		out = append(out, ev)
	}
	return out
}

func alertsStored(t testing.TB, c *bus.Conn) []*events.Alert {
	return stored[*events.Alert](t, c, events.StreamAlerts, events.AlertPrefix)
}

// brief renders alerts as "status rule service severity n=count".
func brief(as []*events.Alert) []string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = fmt.Sprintf("%s %s %s %s n=%d", a.Status, a.Rule, a.Service, a.Severity, a.Count)
	}
	return s
}

func ids(as []*events.Alert) []string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.ID
	}
	sort.Strings(s)
	return s
}
