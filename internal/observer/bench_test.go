package observer

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	ot "github.com/callagent/agent/internal/observer/observertest"
)

// BenchmarkIngest measures how many events per second the pipeline consumes
// with every rule on: b.N events (attempts, retries, calls and breaker
// transitions over four services) are stored first, then the time for the
// pipeline to catch up is measured. Run it with a fixed count:
//
//	go test -run '^$' -bench Ingest -benchtime 20000x ./internal/observer/
func BenchmarkIngest(b *testing.B) {
	srv := natstest.Start(b)
	conn := srv.Conn(b)
	ctx := context.Background()
	start := time.Now().Add(-time.Hour)
	for i := range b.N {
		at := start.Add(time.Duration(i) * 10 * time.Millisecond)
		ev := ot.Mix("e", i, at)
		id := ev.Head().ID
		data, err := events.Encode(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.PublishAsync(&nats.Msg{Subject: ev.Subject(), Data: data}, id); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-conn.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing timed out")
	}
	s, err := conn.Stream(ctx, events.StreamEvents)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	last := info.State.LastSeq

	b.ResetTimer()
	began := time.Now()
	r := startPipeline(b, conn, Options{Rules: config.Default().Observer.Rules, Tick: 100 * time.Millisecond}, nil)
	waitFor(b, "the pipeline to catch up", 10*time.Minute, func() bool { return r.p.Snapshot().Consumer.Seq >= last })
	elapsed := time.Since(began)
	b.StopTimer()
	r.stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
