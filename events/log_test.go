package events_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

func TestLogRecordOf(t *testing.T) {
	tests := map[string]events.LogRecord{
		"attempt": {
			Timestamp: at(12 * time.Second), Service: "elevenlabs", ErrorCategory: events.CategoryTransient,
			RetryCount: 1, BreakerState: events.BreakerClosed, Message: "503 Service Unavailable",
			EventID: "3c5e7a9b1d2f4e6a8c0b2d4f6a8c0e2b", Type: events.TypeAttempt, CallID: "call-7f3a9c2e", Contact: "+91888****882",
			Outcome: events.OutcomeFailure, StatusCode: 503, LatencyMs: 812,
		},
		"retry": {
			Timestamp: at(12*time.Second + 900*time.Millisecond), Service: "elevenlabs", ErrorCategory: events.CategoryTransient,
			RetryCount: 2, BreakerState: events.BreakerClosed, Message: "503 Service Unavailable",
			EventID: "7b9d1f3a5c6e8a0b2c4d6e8f0a1b3c5d", Type: events.TypeRetry, CallID: "call-7f3a9c2e", Contact: "+91888****882",
			StatusCode: 503,
		},
		"call": {
			Timestamp: at(41 * time.Second), Service: "elevenlabs", ErrorCategory: events.CategoryTransient,
			Message: "elevenlabs: 503 Service Unavailable after 4 attempts",
			EventID: "0f8e9a3c5b7d41e2a6c4b2d0e8f6a4c2", Type: events.TypeCall, CallID: "call-7f3a9c2e", Contact: "+91888****882",
			Outcome: events.CallFailed, StatusCode: 503, LatencyMs: 41230,
		},
		"call_completed": {
			Timestamp: at(95 * time.Second), RetryCount: 1, Message: "call completed: completed",
			EventID: "5a1c7e9b3d2f4a6c8e0b1d3f5a7c9e1b", Type: events.TypeCall, CallID: "call-7f3a9c2e", Contact: "+91888****882",
			Outcome: events.CallCompleted, LatencyMs: 64210,
		},
		"call_skipped": {
			Timestamp: at(50 * time.Second), Service: "elevenlabs", ErrorCategory: events.CategoryCircuitOpen,
			BreakerState: events.BreakerOpen, Message: "elevenlabs breaker is open",
			EventID: "9d3b5f7a1c2e4b6d8f0a2c4e6b8d0f2a", Type: events.TypeCall, CallID: "call-7f3a9c2e", Contact: "+91888****882",
			Outcome: events.CallSkipped,
		},
		"breaker": {
			Timestamp: at(33 * time.Second), Service: "elevenlabs", BreakerState: events.BreakerOpen,
			Message: "5 consecutive failures", EventID: "1e3a5c7e9b0d2f4a6c8e0a2c4e6a8c0e", Type: events.TypeBreaker,
		},
		"breaker_adopted": {
			Timestamp: at(33*time.Second + 40*time.Millisecond), Service: "elevenlabs", BreakerState: events.BreakerOpen,
			Message: "breaker closed -> open: adopted", EventID: "2f4b6d8f0a1c3e5a7c9e1b3d5f7a9c1e", Type: events.TypeBreaker,
		},
		"health": {
			Timestamp: at(70 * time.Second), Service: "elevenlabs", BreakerState: events.BreakerOpen,
			Message: "probe: 503 Service Unavailable", EventID: "4d6f8a0c2e3b5d7f9a1c3e5b7d9f1a3c", Type: events.TypeHealth,
			Outcome: events.OutcomeFailure, StatusCode: 503, LatencyMs: 245,
		},
		"status": {
			Timestamp: at(34 * time.Second), Service: "elevenlabs", Message: "breaker open on 2 of 2 callers",
			EventID: "6a8c0e2b4d5f7a9c1e3b5d7f9a0c2e4b", Type: events.TypeStatus,
		},
		"alert": {
			Timestamp: at(35 * time.Second), Service: "elevenlabs",
			Message: "critical firing: elevenlabs circuit breaker opened: 5 consecutive failures (503 Service Unavailable); calls are skipped until 09:27:56Z",
			EventID: "8c0e2a4b6d7f9a1c3e5b7d9f0a2c4e6b", Type: events.TypeAlert, Outcome: events.AlertFiring,
		},
		"alert_resolved": {
			Timestamp: at(140 * time.Second), Service: "elevenlabs",
			Message: "critical resolved: elevenlabs circuit breaker closed again",
			EventID: "0e2c4a6b8d9f1a3c5e7b9d1f2a4c6e8b", Type: events.TypeAlert, Outcome: events.AlertResolved,
		},
		"delivery": {
			Timestamp: at(36 * time.Second), Service: "telegram", Message: "delivered alert 8c0e2a4b6d7f9a1c3e5b7d9f0a2c4e6b",
			EventID: "2a4c6e8b0d1f3a5c7e9b1d3f4a6c8e0b", Type: events.TypeDelivery, Outcome: events.DeliveryDelivered,
		},
		"delivery_dead_letter": {
			Timestamp: at(96 * time.Second), Service: "webhook", RetryCount: 4,
			Message: "POST 127.0.0.1:9443/hook: 500 Internal Server Error",
			EventID: "3b5d7f9a1c2e4b6d8f0a2c4e5b7d9f1a", Type: events.TypeDelivery, Outcome: events.DeliveryDeadLetter,
		},
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			ev, err := events.Decode(readGolden(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := events.LogRecordOf(ev); !reflect.DeepEqual(got, want) {
				t.Errorf("LogRecordOf\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestLogRecordRetryCount: an attempt counts the retries before it, a retry
// counts itself.
func TestLogRecordRetryCount(t *testing.T) {
	for n := 1; n <= 4; n++ {
		a := &events.Attempt{Service: "llm", Attempt: n, Outcome: events.OutcomeFailure}
		if got := events.LogRecordOf(a).RetryCount; got != n-1 {
			t.Errorf("attempt %d: retry count %d, want %d", n, got, n-1)
		}
		r := &events.Retry{Service: "llm", Attempt: n, RetryInMs: 5000}
		if got := events.LogRecordOf(r).RetryCount; got != n {
			t.Errorf("retry after attempt %d: retry count %d, want %d", n, got, n)
		}
	}
}

func TestLogRecordFallbackMessages(t *testing.T) {
	tests := []struct {
		ev   events.Event
		want string
	}{
		{&events.Attempt{Service: "llm", Attempt: 1, MaxAttempts: 3, Outcome: events.OutcomeSuccess}, "attempt 1/3 success"},
		{&events.Attempt{Service: "llm", Attempt: 2, Outcome: events.OutcomeFailure, ErrorCode: "rate_limited"}, "attempt 2 failure: rate_limited"},
		{&events.Retry{Service: "llm", Attempt: 1, MaxAttempts: 3, RetryInMs: 5000}, "retry after attempt 1/3 in 5000ms"},
		{&events.Call{Outcome: events.CallFailed, Reason: "timeout"}, "call failed: timeout"},
		{&events.Call{Outcome: events.CallStarted}, "call started"},
		{&events.Health{Service: "crm", Outcome: events.OutcomeSuccess}, "health probe success"},
		{&events.Status{Service: "crm", To: events.StatusUp}, "status unknown -> up"},
		{&events.Alert{Rule: "error_rate", Severity: events.SeverityWarning, Status: events.AlertFiring}, "warning firing: error_rate"},
		{&events.Delivery{Sink: "email", Outcome: events.DeliveryDeadLetter, RefID: "a1"}, "dead letter a1"},
	}
	for _, tc := range tests {
		if got := events.LogRecordOf(tc.ev).Message; got != tc.want {
			t.Errorf("%T: message %q, want %q", tc.ev, got, tc.want)
		}
	}
}

func TestLogRecordMasksContact(t *testing.T) {
	// Built by hand and never validated: the log line must still not leak it.
	a := &events.Attempt{CallRef: events.CallRef{CallID: "c1", Contact: "+918881234882"}, Service: "llm", Attempt: 1}
	if got := events.LogRecordOf(a).Contact; got != "+91888****882" {
		t.Errorf("contact %q, want it masked", got)
	}
}

func TestLogRecordJSON(t *testing.T) {
	if (events.LogRecordOf(nil) != events.LogRecord{}) {
		t.Error("LogRecordOf(nil) is not the zero record")
	}
	// The seeds' six columns are always present, even when empty, so every
	// line of a log has the same shape.
	rec := events.LogRecordOf(&events.Status{Header: events.Header{ID: "s1", Type: events.TypeStatus, Time: at(0)}, Service: "crm", To: events.StatusUp})
	var m map[string]any
	if err := json.Unmarshal(marshal(t, rec), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"timestamp", "service", "error_category", "retry_count", "circuit_breaker_state", "message"} {
		if _, ok := m[k]; !ok {
			t.Errorf("log record JSON lacks %q: %v", k, m)
		}
	}
	if m["timestamp"] != "2025-03-14T09:26:53.589Z" || m["event_id"] != "s1" || m["type"] != "status" {
		t.Errorf("log record JSON %v", m)
	}
	for _, k := range []string{"call_id", "contact", "outcome", "status_code", "latency_ms"} {
		if _, ok := m[k]; ok {
			t.Errorf("empty optional field %q is present: %v", k, m)
		}
	}
}
