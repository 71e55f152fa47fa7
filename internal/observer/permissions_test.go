package observer

import (
	"context"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/replay"
)

func role(name string) config.NATS {
	return config.NATS{User: name, Password: name + "-dev-password"}
}

// The observer does its whole job with the permissions nats.conf gives its
// role: durable consumer, key-value buckets, status and alert publishing,
// reading the stream directly, and replay's ephemeral consumer.
func TestUnderNATSConf(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := srv.Connect(t, role("admin"), "admin")
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatal(err)
	}
	caller := srv.Connect(t, role("caller"), "caller")
	obs := srv.Connect(t, role("observer"), "observer")

	clock := newClock(at(-time.Second))
	r := startPipeline(t, obs, Options{Rules: config.Default().Observer.Rules, Now: clock.Now, SaveInterval: time.Millisecond}, nil)
	seed := observertest.Seed("seed", t0)
	emit(t, caller, seed...)
	caughtUp(t, admin, r.p)
	clock.Set(at(5 * time.Minute))
	waitFor(t, "the seed's two alerts", 10*time.Second, func() bool { return len(alertsStored(t, admin)) == 2 })
	r.stop()

	// A restart reads its state back and the stream directly.
	emit(t, caller, observertest.Stamped(fail("late", 6*time.Minute, "call-9"))...)
	r2 := startPipeline(t, obs, Options{Rules: config.Default().Observer.Rules, Now: clock.Now}, nil)
	caughtUp(t, admin, r2.p)

	res, err := replay.Run(ctx, obs, replay.Options{From: at(-time.Second), To: at(5 * time.Minute), Rules: config.Default().Observer.Rules, Slack: 2 * time.Hour})
	if err != nil {
		t.Fatalf("replay as the observer role: %v", err)
	}
	if len(res.Alerts) != 2 {
		t.Errorf("replay derived %d alerts, want 2", len(res.Alerts))
	}
	if !obs.Connected() || obs.LastError() != nil {
		t.Errorf("observer connection: last error %v", obs.LastError())
	}
}

// The observer follows the operator's campaign control for its page with a
// read-only watch: it sees a campaign paused, and may not change it.
func TestFollowsCampaignControlUnderNATSConf(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := srv.Connect(t, role("admin"), "admin")
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatal(err)
	}
	d := srv.Connect(t, role("dispatcher"), "dispatcher")
	state, err := d.KeyValue(ctx, "campaigns", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Put(ctx, "spring.c1", []byte(`{"campaign":"spring","contact_id":"c1","status":"queued"}`)); err != nil {
		t.Fatal(err)
	}
	ctl, err := control.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Update(ctx, "spring", "test", time.Now(), func(c *control.Control) error {
		c.State, c.MaxConcurrentCalls = control.Paused, 5
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	obs := srv.Connect(t, role("observer"), "observer")
	campaigns := NewCampaigns("campaigns", natstest.Logger(t), nil)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { campaigns.Run(wctx, obs, 50*time.Millisecond); close(done) }()
	defer func() { stop(); <-done }()
	waitFor(t, "the campaign shown paused", 10*time.Second, func() bool {
		v := campaigns.View()
		return len(v) == 1 && v[0].State == "paused" && v[0].MaxConcurrentCalls == 5
	})

	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	kv, err := obs.OpenKeyValue(short, control.Bucket)
	if err != nil {
		t.Fatalf("observer opens %s: %v", control.Bucket, err)
	}
	if _, err := kv.Put(short, "spring", []byte(`{"state":"running"}`)); err == nil {
		t.Errorf("the observer wrote %s", control.Bucket)
	}
	if c, err := ctl.Get(ctx, "spring"); err != nil || c.State != control.Paused {
		t.Errorf("control after the observer's try: %+v %v", c, err)
	}
}
