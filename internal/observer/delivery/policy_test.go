package delivery

import (
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/sink"
)

func TestRetryDelay(t *testing.T) {
	w := &worker{cfg: withDefaults(config.Sink{Backoff: time.Second, MaxBackoff: 10 * time.Second})}
	tests := []struct {
		name       string
		delivered  uint64
		retryAfter time.Duration
		want       time.Duration
	}{
		{"first failure waits backoff", 1, 0, time.Second},
		{"doubles per delivery", 2, 0, 2 * time.Second},
		{"and again", 3, 0, 4 * time.Second},
		{"capped at max_backoff", 5, 0, 10 * time.Second},
		{"stays capped", 60, 0, 10 * time.Second},
		{"the sink's retry-after wins, shorter", 5, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"the sink's retry-after wins, longer", 1, 30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sink.Result{Status: sink.Retryable, RetryAfter: tt.retryAfter}
			if got := w.retryDelay(r, tt.delivered); got != tt.want {
				t.Errorf("retryDelay(delivered %d, retry-after %s) = %s, want %s", tt.delivered, tt.retryAfter, got, tt.want)
			}
		})
	}
}

func TestEventIDIsDeterministic(t *testing.T) {
	a := eventID("telegram", "delivered", "evt-1")
	tests := []struct {
		name               string
		sink, outcome, ref string
		same               bool
	}{
		{"same record, same sink, same outcome", "telegram", "delivered", "evt-1", true},
		{"another sink", "email", "delivered", "evt-1", false},
		{"a dead letter of the same record", "telegram", "dead_letter", "evt-1", false},
		{"another record", "telegram", "delivered", "evt-2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := eventID(tt.sink, tt.outcome, tt.ref); (got == a) != tt.same {
				t.Errorf("eventID = %s vs %s, want same=%v", got, a, tt.same)
			}
		})
	}
	if len(a) != 32 {
		t.Errorf("id %q: want 32 hex characters like events.NewID", a)
	}
}
