package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/natstest"
)

// A batch handler's per-message results follow the one ack policy: nil
// acks, Permanent terminates, Retry and other errors redeliver, a missing
// result redelivers, and a panic redelivers the whole batch.
func TestConsumeBatchSettlesEachMessage(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Message i's first delivery gets verdict[i]; every redelivery is acked.
	verdict := []string{"ack", "term", "retry", "fail", "ack", "missing"}
	for i := range verdict {
		if err := c.Emit(ctx, &events.Health{Service: fmt.Sprintf("svc%d", i), Outcome: events.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu         sync.Mutex
		batches    [][]string
		deliveries = map[string][]uint64{}
		panicked   []string // the batch whose handler panicked
	)
	go func() {
		_ = c.ConsumeBatch(ctx, bus.ConsumerSpec{
			Stream: events.StreamEvents, Durable: "batch", Batch: 10, BatchWait: 500 * time.Millisecond,
			IdleWait: time.Second,
			Backoff:  func(uint64) time.Duration { return 100 * time.Millisecond },
		}, func(_ context.Context, batch []*bus.Msg) []error {
			mu.Lock()
			defer mu.Unlock()
			var names []string
			var out []error
			for _, m := range batch {
				ev, err := events.DecodeAs[*events.Health](m.Data)
				if err != nil {
					out = append(out, err)
					continue
				}
				names = append(names, ev.Service)
				deliveries[ev.Service] = append(deliveries[ev.Service], m.Delivered)
				if m.Delivered > 1 {
					if panicked == nil {
						for _, m := range batch {
							ev, _ := events.DecodeAs[*events.Health](m.Data)
							panicked = append(panicked, ev.Service)
						}
						panic("one bad batch") // redelivers the batch, loses nothing
					}
					out = append(out, nil)
					continue
				}
				var i int
				fmt.Sscanf(ev.Service, "svc%d", &i)
				switch verdict[i] {
				case "ack":
					out = append(out, nil)
				case "term":
					out = append(out, bus.Permanent(errors.New("bad record")))
				case "retry":
					out = append(out, bus.Retry(errors.New("later"), 200*time.Millisecond))
				case "fail":
					out = append(out, errors.New("sink down"))
				case "missing":
					// no result: the slice ends here
				}
			}
			batches = append(batches, names)
			return out
		})
	}()
	waitFor(t, "every message settled for good", func() bool {
		info := consumerInfo(t, c, events.StreamEvents, "batch")
		return info.AckFloor.Stream == uint64(len(verdict)) && info.NumAckPending == 0 && info.NumPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(batches) == 0 || len(batches[0]) != len(verdict) {
		t.Fatalf("first batch %v, want all %d messages in one batch", batches, len(verdict))
	}
	want := map[string]int{"svc0": 1, "svc1": 1, "svc2": 2, "svc3": 2, "svc4": 1, "svc5": 2}
	if len(panicked) == 0 {
		t.Fatal("no redelivered batch reached the handler")
	}
	for _, svc := range panicked {
		want[svc]++ // its batch panicked and came again
	}
	for svc, n := range want {
		d := deliveries[svc]
		if len(d) == 0 || d[len(d)-1] != uint64(n) {
			t.Errorf("%s settled at delivery %v, want delivery %d", svc, d, n)
		}
	}
}

// A batch whose handler outlives the ack wait keeps every message: the
// consumer reports the batch in progress.
func TestConsumeBatchKeepsSlowBatch(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		if err := c.Emit(ctx, &events.Health{Service: fmt.Sprintf("svc%d", i), Outcome: events.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var seen []uint64
	go func() {
		_ = c.ConsumeBatch(ctx, bus.ConsumerSpec{
			Stream: events.StreamEvents, Durable: "slow", Batch: 3, BatchWait: 500 * time.Millisecond,
			AckWait: time.Second,
		}, func(_ context.Context, batch []*bus.Msg) []error {
			mu.Lock()
			for _, m := range batch {
				seen = append(seen, m.Delivered)
			}
			mu.Unlock()
			time.Sleep(2500 * time.Millisecond) // past the 1 s ack wait
			return make([]error, len(batch))
		})
	}()
	waitFor(t, "slow batch acknowledged", func() bool {
		info := consumerInfo(t, c, events.StreamEvents, "slow")
		return info.AckFloor.Stream == 3 && info.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, n := range seen {
		if n != 1 {
			t.Fatalf("deliveries %v: a message was redelivered while its batch was in hand", seen)
		}
	}
}
