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

// EnsureStreams creates the contract streams, and the buckets that roles
// only read, or updates them to match the configuration. Creating or
// updating needs the admin role; other roles only check that the streams
// exist.
func (c *Conn) EnsureStreams(ctx context.Context, s config.Streams) error {
	for _, sc := range StreamConfigs(s) {
		if _, err := c.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
	}
	// A bucket some roles may only read (campaign_control, dnc) cannot be
	// created by them: it exists before they start, as the streams do.
	for _, b := range Buckets("") {
		if len(b.Readers) == 0 {
			continue
		}
		if _, err := c.js.CreateOrUpdateKeyValue(ctx, b.KeyValueConfig()); err != nil {
			return fmt.Errorf("create or update key-value bucket %s: %w", b.Name, err)
		}
	}
	return nil
}

// WaitStreams waits until every named stream exists. A stream that is
// missing is logged once ("waiting for stream ..."), and after timeout the
// process is told to run `dispatcher provision`: the agent's roles may not
// create streams, and a process that went on without them would lose what it
// publishes.
func (c *Conn) WaitStreams(ctx context.Context, timeout time.Duration, names ...string) error {
	deadline := time.Now().Add(timeout)
	for _, name := range names {
		logged := false
		for {
			_, err := c.js.Stream(ctx, name)
			if err == nil {
				if logged {
					c.log.Info("stream found", "stream", name)
				}
				break
			}
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("stream %s: %w after waiting %s: provision the streams and buckets first with `dispatcher provision` (admin role)", name, err, timeout)
			}
			if !logged {
				c.log.Warn("waiting for stream: run `dispatcher provision` (admin role) to create it", "stream", name, "timeout", timeout)
				logged = true
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
