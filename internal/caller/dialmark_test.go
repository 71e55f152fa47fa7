package caller_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/provider/telephony"
)

// lostMarks fails the first n saves of a call's dial mark (dialled, no sid
// yet), as a bucket whose leader was just killed does.
type lostMarks struct {
	jetstream.KeyValue
	left atomic.Int32
}

var errLeaderGone = errors.New("nats: timeout (the bucket's leader was killed)")

func (l *lostMarks) fail(value []byte) bool {
	var p struct {
		SID    string    `json:"sid"`
		Dialed time.Time `json:"dialed"`
	}
	_ = json.Unmarshal(value, &p)
	return p.SID == "" && !p.Dialed.IsZero() && l.left.Add(-1) >= 0
}

func (l *lostMarks) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if l.fail(value) {
		return 0, errLeaderGone
	}
	return l.KeyValue.Create(ctx, key, value, opts...)
}

func (l *lostMarks) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if l.fail(value) {
		return 0, errLeaderGone
	}
	return l.KeyValue.Update(ctx, key, value, rev)
}

// markedDialer checks, as each call is placed, that the caller's dial mark
// is in the bucket: without it a caller taking the request over would ring
// the contact again.
type markedDialer struct {
	caller.Dialer
	kv jetstream.KeyValue

	mu       sync.Mutex
	unmarked int
	dials    int
}

func (d *markedDialer) Dial(ctx context.Context, callID, to string, since time.Time) (telephony.Call, error) {
	d.mu.Lock()
	d.dials++
	e, err := d.kv.Get(ctx, callID)
	var p struct {
		Dialed time.Time `json:"dialed"`
	}
	if err == nil {
		_ = json.Unmarshal(e.Value(), &p)
	}
	if p.Dialed.IsZero() {
		d.unmarked++
	}
	d.mu.Unlock()
	return d.Dialer.Dial(ctx, callID, to, since)
}

// TestNoDialWithoutItsMark: while the dial mark cannot be stored the caller
// hands the request back instead of placing the call; once it can, the
// call is placed once, with its mark stored.
func TestNoDialWithoutItsMark(t *testing.T) {
	sim := startSimulator(t, "name: dial-mark\n")
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	rec := record(t, admin)
	cfg := testConfig(sim.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	conn := srv.Connect(t, config.NATS{}, "caller-1")
	svc := services(t, cfg)
	c, err := caller.New(ctx, conn, cfg, svc, nil, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	lost := &lostMarks{}
	lost.left.Store(2)
	caller.WrapProgress(c, func(kv jetstream.KeyValue) jetstream.KeyValue { lost.KeyValue = kv; return lost })
	kv, err := admin.OpenKeyValue(ctx, caller.ProgressBucket)
	if err != nil {
		t.Fatal(err)
	}
	dialer := &markedDialer{Dialer: svc.Telephony, kv: kv}
	// The services are the caller's: swap the dialer in before it runs.
	caller.WrapDialer(c, func(caller.Dialer) caller.Dialer { return dialer })
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("caller: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })

	req := request(1)
	dispatch(t, admin, req)
	waitFor(t, 30*time.Second, "the call's terminal event", func() bool { return len(rec.terminals()[req.CallID]) > 0 })
	if got := rec.terminals()[req.CallID]; len(got) != 1 || got[0].Outcome != events.CallCompleted {
		t.Fatalf("terminal events %+v, want one completed", got)
	}
	dialer.mu.Lock()
	defer dialer.mu.Unlock()
	if dialer.unmarked != 0 {
		t.Errorf("%d of %d dials placed with no dial mark stored", dialer.unmarked, dialer.dials)
	}
	if dialer.dials != 1 {
		t.Errorf("%d dials, want 1", dialer.dials)
	}
	if n := lost.left.Load(); n > 0 {
		t.Errorf("the dial mark's save was tried %d times too few", n)
	}
}
