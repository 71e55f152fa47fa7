package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// StreamConfigs returns the JetStream configuration of the contract streams:
// CALLS is a work queue (a request is removed once a caller acknowledges it),
// EVENTS and ALERTS keep everything for their max age so it can be replayed.
// CALLS also stores the dispatcher's re-queues as message schedules (on
// agent.requeue.>, which no caller consumes), so a re-queue fires when due
// with no dispatcher running; schedules need roll-ups allowed.
func StreamConfigs(s config.Streams) []jetstream.StreamConfig {
	calls := streamConfig(events.StreamCalls, s.Calls, jetstream.WorkQueuePolicy)
	calls.AllowMsgSchedules, calls.AllowRollup = true, true
	return []jetstream.StreamConfig{
		calls,
		streamConfig(events.StreamEvents, s.Events, jetstream.LimitsPolicy),
		streamConfig(events.StreamAlerts, s.Alerts, jetstream.LimitsPolicy),
	}
}

func streamConfig(name string, s config.Stream, retention jetstream.RetentionPolicy) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if s.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	replicas := s.Replicas
	if replicas < 1 {
		replicas = 1
	}
	dup := s.DuplicateWindow
	if dup <= 0 {
		dup = 2 * time.Minute
	}
	maxBytes := s.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:       name,
		Subjects:   events.StreamSubjects[name],
		Retention:  retention,
		Storage:    storage,
		Replicas:   replicas,
		MaxAge:     s.MaxAge,
		MaxBytes:   maxBytes,
		Duplicates: dup,
		Discard:    jetstream.DiscardOld,
	}
}

// EnsureStreams creates the contract streams, or updates them to match the
// configuration. Creating or updating needs the admin role; other roles only
// check that the streams exist.
func (c *Conn) EnsureStreams(ctx context.Context, s config.Streams) error {
	for _, sc := range StreamConfigs(s) {
		if _, err := c.JS.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// WaitStreams waits until every contract stream exists, so that a process
// started before provisioning fails with a clear message rather than losing
// what it publishes.
func (c *Conn) WaitStreams(ctx context.Context, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for _, name := range names {
		for {
			_, err := c.JS.Stream(ctx, name)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrStreamNotFound) || time.Now().After(deadline) {
				return fmt.Errorf("stream %s: %w (provision the streams first, e.g. with the admin role)", name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
