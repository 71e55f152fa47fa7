package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/natstest"
)

// samples returns one valid event of every contract type.
func samples() []events.Event {
	now := time.Now().UTC()
	until := now.Add(30 * time.Second)
	ref := events.CallRef{CallID: "call-1", Campaign: "spring", ContactID: "c1", Contact: events.MaskPhone("+918881234882")}
	return []events.Event{
		&events.Call{CallRef: ref, Outcome: events.CallCompleted, Attempt: 1, CallStatus: "completed", LatencyMs: 1200},
		&events.Attempt{CallRef: ref, Service: "elevenlabs", Attempt: 2, MaxAttempts: 4, Outcome: events.OutcomeFailure, ErrorCategory: events.CategoryTransient, StatusCode: 503, LatencyMs: 12, BreakerState: events.BreakerClosed},
		&events.Retry{CallRef: ref, Service: "elevenlabs", Attempt: 2, MaxAttempts: 4, RetryInMs: 10000, ErrorCategory: events.CategoryTransient, StatusCode: 503},
		&events.Breaker{Service: "elevenlabs", From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen, Reason: "failure_threshold", OpenUntil: &until, Failures: 5},
		&events.Health{Service: "crm", Outcome: events.OutcomeSuccess, StatusCode: 200, LatencyMs: 3},
		&events.Status{Service: "elevenlabs", From: events.StatusUp, To: events.StatusDown, Message: "breaker open"},
		&events.Alert{Fingerprint: "fp1", Rule: "breaker_open", Severity: events.SeverityCritical, Status: events.AlertFiring, Service: "elevenlabs", Summary: "elevenlabs breaker opened", StartsAt: now},
		&events.Delivery{Sink: "webhook", Outcome: events.DeliveryDelivered, RefID: "a1", RefType: events.TypeAlert, Attempts: 1},
	}
}

func streamFor(ev events.Event) string {
	switch ev.(type) {
	case *events.Alert, *events.Delivery:
		return events.StreamAlerts
	}
	return events.StreamEvents
}

func TestEmitConsumeRoundTripEveryType(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, ev := range samples() {
		ev := ev
		t.Run(string(events.Stamp(ev, "test", time.Now()).Head().Type), func(t *testing.T) {
			if err := c.Emit(ctx, ev); err != nil {
				t.Fatalf("emit: %v", err)
			}
			got := make(chan events.Event, 1)
			cctx, ccancel := context.WithCancel(ctx)
			defer ccancel()
			go func() {
				_ = c.Consume(cctx, bus.ConsumerSpec{
					Stream:         streamFor(ev),
					Durable:        "rt-" + string(ev.Head().Type),
					FilterSubjects: []string{ev.Subject()},
				}, func(_ context.Context, m *bus.Msg) error {
					dec, err := events.Decode(m.Data)
					if err != nil {
						return err
					}
					if m.Subject != ev.Subject() {
						t.Errorf("subject %q, want %q", m.Subject, ev.Subject())
					}
					got <- dec
					return nil
				})
			}()
			select {
			case dec := <-got:
				want, _ := events.Encode(ev)
				have, _ := events.Encode(dec)
				if string(want) != string(have) {
					t.Errorf("round trip:\n got %s\nwant %s", have, want)
				}
			case <-ctx.Done():
				t.Fatal("no message consumed")
			}
		})
	}
}

func TestPublishTwiceWithOneIDIsStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx := context.Background()

	ev := &events.Health{Service: "llm", Outcome: events.OutcomeSuccess}
	for i := 0; i < 3; i++ {
		// Emit keeps the id it stamped the first time, as a republish after a
		// lost ack would.
		if err := c.Emit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	ack, err := c.PublishMsg(ctx, ev.Subject(), ev.ID, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("publish with a used id was not reported as duplicate")
	}
	info := streamInfo(t, c, events.StreamEvents)
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestHandlerErrorRedeliversWithGrowingDelay(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if err := c.Emit(ctx, &events.Health{Service: "llm", Outcome: events.OutcomeFailure}); err != nil {
		t.Fatal(err)
	}
	const fails = 4
	var (
		mu    sync.Mutex
		times []time.Time
		seen  []uint64
	)
	done := make(chan struct{})
	go func() {
		_ = c.Consume(ctx, bus.ConsumerSpec{
			Stream:  events.StreamEvents,
			Durable: "redeliver",
			Backoff: func(n uint64) time.Duration { return time.Duration(50<<n) * time.Millisecond }, // 100, 200, 400 ms
		}, func(_ context.Context, m *bus.Msg) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			seen = append(seen, m.Delivered)
			if len(times) <= fails-1 {
				return errors.New("downstream unavailable")
			}
			close(done)
			return nil
		})
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("message not redelivered until success")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range seen {
		if n != uint64(i+1) {
			t.Errorf("delivery %d reported count %d", i+1, n)
		}
	}
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		want := time.Duration(50<<i) * time.Millisecond
		if gap < want*9/10 {
			t.Errorf("redelivery %d came after %v, want at least the backoff %v", i+1, gap, want)
		}
	}
	waitFor(t, "message acknowledged", func() bool {
		info := consumerInfo(t, c, events.StreamEvents, "redeliver")
		return info.NumAckPending == 0 && info.NumPending == 0
	})
}

func TestMalformedMessageIsTerminated(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	bad := map[string][]byte{
		"garbage":      []byte("\x00\x01not json"),
		"unknown type": []byte(`{"type":"nope","id":"1"}`),
		"missing":      []byte(`{"type":"call","id":"x","v":1,"source":"s","time":"2026-01-01T00:00:00Z"}`),
	}
	for name, data := range bad {
		if _, err := c.PublishMsg(ctx, events.CallSubject(events.CallCompleted), "", data); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var calls atomic.Int32
	go func() {
		_ = c.Consume(ctx, bus.ConsumerSpec{
			Stream: events.StreamEvents, Durable: "malformed",
			Backoff: func(uint64) time.Duration { return 50 * time.Millisecond },
		}, func(_ context.Context, m *bus.Msg) error {
			calls.Add(1)
			_, err := events.Decode(m.Data)
			return err
		})
	}()
	// Terminated messages leave nothing pending or awaiting an ack; a nak'd
	// one would stay in NumAckPending/NumRedelivered.
	waitFor(t, "all malformed messages terminated", func() bool {
		info := consumerInfo(t, c, events.StreamEvents, "malformed")
		return info.AckFloor.Stream == 3 && info.NumAckPending == 0 && info.NumPending == 0
	})
	if n := calls.Load(); n != 3 {
		t.Errorf("handler ran %d times for 3 malformed messages; want 3 (no redelivery)", n)
	}
}

func TestLongHandlerKeepsItsMessage(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Emit(ctx, &events.Health{Service: "crm", Outcome: events.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan struct{})
	for i := 0; i < 2; i++ { // two processes sharing the durable
		go func() {
			_ = c.Consume(ctx, bus.ConsumerSpec{Stream: events.StreamEvents, Durable: "long", AckWait: time.Second},
				func(ctx context.Context, m *bus.Msg) error {
					if calls.Add(1) > 1 {
						t.Errorf("message redelivered while its handler was still running")
					}
					time.Sleep(3 * time.Second) // three ack waits
					close(done)
					return nil
				})
		}()
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("handler did not finish")
	}
	waitFor(t, "acknowledged", func() bool {
		return consumerInfo(t, c, events.StreamEvents, "long").NumAckPending == 0
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

func TestShutdownDrainsInFlightHandlers(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	bg := context.Background()
	if err := c.Emit(bg, &events.Health{Service: "crm", Outcome: events.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	started := make(chan struct{})
	finished := make(chan error, 1)
	returned := make(chan struct{})
	go func() {
		_ = c.Consume(ctx, bus.ConsumerSpec{Stream: events.StreamEvents, Durable: "drain", Grace: 5 * time.Second},
			func(hctx context.Context, m *bus.Msg) error {
				close(started)
				time.Sleep(300 * time.Millisecond)
				finished <- hctx.Err()
				return nil
			})
		close(returned)
	}()
	<-started
	cancel()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatalf("handler context cancelled inside the grace period: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not finish")
	}
	<-returned
	if info := consumerInfo(t, c, events.StreamEvents, "drain"); info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Fatalf("in-flight message not acknowledged on drain: %+v", info)
	}
}

func TestEmbeddedRestartKeepsMessages(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx := context.Background()
	const n = 25
	for i := 0; i < n; i++ {
		if err := c.Emit(ctx, &events.Health{Service: "llm", Outcome: events.OutcomeSuccess, Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	srv.Restart(t)
	// The same client reconnects to the restarted server.
	waitFor(t, "client reconnected", func() bool { return bus.NATSConn(c).IsConnected() })
	info := streamInfo(t, c, events.StreamEvents)
	if info.State.Msgs != n {
		t.Fatalf("after restart the stream holds %d messages, want %d", info.State.Msgs, n)
	}
	if err := c.Emit(ctx, &events.Health{Service: "llm", Outcome: events.OutcomeSuccess}); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
}

func streamInfo(t *testing.T, c *bus.Conn, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := bus.JetStream(c).Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info
}

func consumerInfo(t *testing.T, c *bus.Conn, stream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := bus.JetStream(c).Consumer(ctx, stream, durable)
	if err != nil {
		return &jetstream.ConsumerInfo{NumPending: 1 << 60}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
