package bus_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/natstest"
)

// A batch consumer, with acks confirmed per message or per batch: every
// message handled is acknowledged once (none comes back after the ack
// wait), a failed one is still redelivered, and AfterBatch runs once the
// messages of each batch are handled.
func TestBatchAcksAndAfterBatch(t *testing.T) {
	for _, tt := range []struct {
		name                string
		ackAsync, readAhead bool
	}{
		{"double ack per message", false, false},
		{"async acks confirmed per batch", true, false},
		{"read ahead, async acks", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.Start(t)
			c := srv.Conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			const n, failing = 25, 7
			for range n {
				if err := c.Emit(ctx, &events.Health{Service: "crm", Outcome: events.OutcomeSuccess}); err != nil {
					t.Fatal(err)
				}
			}

			var (
				mu      sync.Mutex
				handled = map[uint64]int{} // deliveries per stream sequence
				calls   int
				batches []int // handler calls seen by each AfterBatch
			)
			cctx, stop := context.WithCancel(ctx)
			returned := make(chan struct{})
			go func() {
				defer close(returned)
				_ = c.Consume(cctx, bus.ConsumerSpec{
					Stream: events.StreamEvents, Durable: "batch", Batch: 10, AckAsync: tt.ackAsync, ReadAhead: tt.readAhead,
					Backoff: func(uint64) time.Duration { return 50 * time.Millisecond },
					AfterBatch: func(context.Context) error {
						mu.Lock()
						defer mu.Unlock()
						batches = append(batches, calls)
						return nil
					},
				}, func(_ context.Context, m *bus.Msg) error {
					mu.Lock()
					defer mu.Unlock()
					calls++
					handled[m.StreamSeq]++
					if m.StreamSeq == failing && m.Delivered == 1 {
						return errors.New("downstream unavailable")
					}
					return nil
				})
			}()
			// The ack wait is 30s: an ack lost would leave its message
			// pending past this wait.
			waitFor(t, "every message acknowledged", func() bool {
				info := consumerInfo(t, c, events.StreamEvents, "batch")
				return info.AckFloor.Stream == n && info.NumAckPending == 0 && info.NumPending == 0
			})
			waitFor(t, "the last batch closed", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(batches) > 0 && batches[len(batches)-1] == calls
			})
			stop()
			<-returned

			mu.Lock()
			defer mu.Unlock()
			for seq := uint64(1); seq <= n; seq++ {
				want := 1
				if seq == failing {
					want = 2
				}
				if handled[seq] != want {
					t.Errorf("message %d handled %d times, want %d", seq, handled[seq], want)
				}
			}
			if calls != n+1 {
				t.Errorf("%d handler calls, want %d", calls, n+1)
			}
			// Each batch handled at least one message before AfterBatch ran,
			// and at most Batch of them.
			prev := 0
			for i, seen := range batches {
				if seen <= prev || seen-prev > 10 {
					t.Errorf("AfterBatch %d ran after %d handler calls, the one before after %d", i+1, seen, prev)
				}
				prev = seen
			}
			if len(batches) < 3 {
				t.Errorf("AfterBatch ran %d times for %d messages in batches of 10", len(batches), n+1)
			}
		})
	}
}

// With ReadAhead the next messages are pulled while one is handled (the
// consumer has more than a batch delivered, unacknowledged, before the
// handler is free), and every message is still handled once, in stream
// order.
func TestReadAhead(t *testing.T) {
	srv := natstest.Start(t)
	c := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	emit := func() {
		if err := c.Emit(ctx, &events.Health{Service: "crm", Outcome: events.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu      sync.Mutex
		handled []uint64
	)
	release := make(chan struct{})
	go func() {
		_ = c.Consume(ctx, bus.ConsumerSpec{
			// Batches of 2: without reading ahead at most 2 are pulled
			// at a time.
			Stream: events.StreamEvents, Durable: "ahead", Batch: 2, AckAsync: true, ReadAhead: true,
		}, func(_ context.Context, m *bus.Msg) error {
			if m.StreamSeq == 1 {
				<-release // the first is slow
			}
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, m.StreamSeq)
			return nil
		})
	}()
	emit()
	waitFor(t, "the first message in hand", func() bool {
		return consumerInfo(t, c, events.StreamEvents, "ahead").NumAckPending == 1
	})
	for range 5 {
		emit()
	}
	waitFor(t, "more than a batch read ahead while the first is handled", func() bool {
		return consumerInfo(t, c, events.StreamEvents, "ahead").NumAckPending >= 3
	})
	close(release)
	waitFor(t, "every message acknowledged", func() bool {
		info := consumerInfo(t, c, events.StreamEvents, "ahead")
		return info.AckFloor.Stream == 6 && info.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(handled, want) {
		t.Errorf("handled %v, want %v", handled, want)
	}
}
