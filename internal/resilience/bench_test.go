package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/resilience"
)

// The benchmarks set this package's hot paths beside sony/gobreaker's:
//
//	go test -run='^$' -bench=. -benchmem ./internal/resilience/

func BenchmarkExecuteSuccess(b *testing.B) {
	br := resilience.NewBreaker("llm", config.Breaker{}, nil, nil)
	ctx := context.Background()
	for b.Loop() {
		if err := br.Execute(ctx, succeed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRetryExecuteSuccess(b *testing.B) {
	br := resilience.NewBreaker("llm", config.Breaker{FailureRate: 0.5}, nil, nil)
	r := resilience.NewRetry(seedRetry, nil)
	r.Budget = resilience.NewBudget(0.2, time.Minute, 0, nil)
	op := func(ctx context.Context, attempt int) error { return br.Execute(ctx, succeed) }
	ctx := context.Background()
	for b.Loop() {
		if err := r.Do(ctx, op); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGobreakerExecuteSuccess(b *testing.B) {
	cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{Name: "llm"})
	req := func() (struct{}, error) { return struct{}{}, nil }
	for b.Loop() {
		if _, err := cb.Execute(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecuteOpen(b *testing.B) {
	br := resilience.NewBreaker("llm", config.Breaker{}, nil, nil)
	br.ForceOpen(time.Now().Add(time.Hour), "", "bench")
	ctx := context.Background()
	for b.Loop() {
		if err := br.Execute(ctx, succeed); !errors.Is(err, resilience.ErrCircuitOpen) {
			b.Fatal(err)
		}
	}
}

func BenchmarkRetryExecuteOpen(b *testing.B) {
	br := resilience.NewBreaker("llm", config.Breaker{}, nil, nil)
	br.ForceOpen(time.Now().Add(time.Hour), "", "bench")
	r := resilience.NewRetry(seedRetry, nil)
	op := func(ctx context.Context, attempt int) error { return br.Execute(ctx, succeed) }
	ctx := context.Background()
	var re *resilience.RetryError
	if err := r.Do(ctx, op); !errors.As(err, &re) || re.Reason != resilience.StopCircuitOpen {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := r.Do(ctx, op); err == nil {
			b.Fatal("an open breaker let the call through")
		}
	}
}

func BenchmarkGobreakerExecuteOpen(b *testing.B) {
	cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "llm",
		Timeout:     time.Hour,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
	})
	boom := errors.New("boom")
	_, _ = cb.Execute(func() (struct{}, error) { return struct{}{}, boom })
	req := func() (struct{}, error) { return struct{}{}, nil }
	for b.Loop() {
		if _, err := cb.Execute(req); !errors.Is(err, gobreaker.ErrOpenState) {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecuteSuccessParallel(b *testing.B) {
	br := resilience.NewBreaker("llm", config.Breaker{}, nil, nil)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = br.Execute(ctx, succeed)
		}
	})
}

func BenchmarkGobreakerExecuteSuccessParallel(b *testing.B) {
	cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{Name: "llm"})
	req := func() (struct{}, error) { return struct{}{}, nil }
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = cb.Execute(req)
		}
	})
}
