package observer

import (
	"context"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
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
