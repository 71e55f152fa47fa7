package delivery_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/delivery"
)

// BenchmarkLogSink measures how many events per second a log sink receives
// through the real jsonl plugin: each round publishes perRound attempt
// events to EVENTS and waits until the sink has delivered (written and
// acknowledged) all of them. It reports events/s, end to end, with the
// default adaptive batching.
func BenchmarkLogSink(b *testing.B) {
	const perRound = 5000
	for _, size := range []int{1, 10, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			conn := natstest.Start(b).Conn(b)
			path := filepath.Join(b.TempDir(), "events.jsonl")
			sc := fastSink("bench", "jsonl", map[string]any{"path": path})
			sc.Kind = delivery.KindLog
			sc.BatchSize = size
			sc.BatchWait = 0 // the default: adaptive
			r := run(b, conn, nil, sc)

			total := 0
			start := time.Now()
			for b.Loop() {
				for i := range perRound {
					ev := &events.Attempt{Service: "elevenlabs", Attempt: i%4 + 1, Outcome: events.OutcomeFailure,
						ErrorCategory: events.CategoryTransient, StatusCode: 503, Message: "503 Service Unavailable", LatencyMs: 812}
					events.Stamp(ev, "bench", time.Now())
					data, err := events.Encode(ev)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := conn.PublishAsync(&nats.Msg{Subject: ev.Subject(), Data: data}, ev.ID); err != nil {
						b.Fatal(err)
					}
				}
				select {
				case <-conn.PublishAsyncComplete():
				case <-time.After(30 * time.Second):
					b.Fatal("publishes not acknowledged")
				}
				total += perRound
				waitFor(b, 60*time.Second, "the sink has every event", func() bool {
					return deliveries(b, r, "bench", "delivered") >= float64(total)
				})
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
			if got := len(lines(b, path)); got != total {
				b.Errorf("jsonl file has %d lines, want %d", got, total)
			}
		})
	}
}
