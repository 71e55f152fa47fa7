package caller_test

import (
	"context"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/resilience"
)

// TestCallerCountsPeersAttempts checks the wiring of the fleet breaker: a
// running caller counts the failures its peers publish on agent.attempt.>,
// and has the probe-election bucket.
func TestCallerCountsPeersAttempts(t *testing.T) {
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	sim := startSimulator(t, "name: healthy\n")
	cfg := testConfig(sim.URL())
	tts := cfg.Services[config.ServiceElevenLabs]
	tts.Breaker.FailureThreshold = 2
	tts.Breaker.RecoveryTimeout = time.Minute
	cfg.Services[config.ServiceElevenLabs] = tts

	ctx, cancel := context.WithCancel(context.Background())
	conn := srv.Connect(t, config.NATS{}, "caller-a")
	c, err := caller.New(ctx, conn, cfg, services(t, cfg), nil, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("caller: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := admin.OpenKeyValue(t.Context(), resilience.ProbeBucket); err != nil {
		t.Fatalf("probe bucket: %v", err)
	}

	// A peer's two 503s open this caller's breaker without a call of its own.
	peer := srv.Connect(t, config.NATS{}, "caller-b")
	br := c.Fleet().Breaker(config.ServiceElevenLabs)
	deadline := time.Now().Add(10 * time.Second)
	for br.State() != resilience.StateOpen {
		if time.Now().After(deadline) {
			t.Fatalf("breaker %s after a peer's failures, want open", br.State())
		}
		// Repeated until the caller's subscription is in place: Run
		// subscribes in the background.
		ev := &events.Attempt{CallRef: events.CallRef{CallID: "peer-call"}, Service: config.ServiceElevenLabs, Attempt: 1,
			Outcome: events.OutcomeFailure, ErrorCategory: events.CategoryTransient, StatusCode: 503}
		if err := peer.Emit(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
