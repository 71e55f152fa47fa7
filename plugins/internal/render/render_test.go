package render

import (
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

func TestAlert(t *testing.T) {
	starts := time.Date(2025, 3, 14, 9, 27, 26, 0, time.UTC)
	ends := starts.Add(3*time.Minute + 10*time.Second)
	tests := []struct {
		name string
		in   *events.Alert
		want string
	}{
		{"firing", &events.Alert{Rule: "breaker_open", Severity: "critical", Status: "firing", Service: "elevenlabs",
			Summary: "elevenlabs circuit breaker opened", Message: "5 consecutive failures", StartsAt: starts, Count: 3,
			Labels: map[string]string{"region": "in", "campaign": "spring"}, CallIDs: []string{"c1", "c2"}},
			"CRITICAL: elevenlabs circuit breaker opened\n5 consecutive failures\nservice: elevenlabs\nrule: breaker_open\n" +
				"since: 2025-03-14 09:27:26 UTC\noccurrences: 3\nlabels: campaign=spring, region=in\ncalls: c1, c2"},
		{"resolved", &events.Alert{Rule: "breaker_open", Severity: "critical", Status: "resolved", Service: "crm",
			Summary: "crm down", StartsAt: starts, EndsAt: &ends},
			"RESOLVED: crm down\nservice: crm\nrule: breaker_open\nsince: 2025-03-14 09:27:26 UTC\n" +
				"resolved: 2025-03-14 09:30:36 UTC (after 3m10s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Event(tt.in).String(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestOtherEvents(t *testing.T) {
	ev := &events.Attempt{Header: events.Header{Type: events.TypeAttempt, Time: time.Date(2025, 3, 14, 9, 27, 5, 0, time.UTC)},
		CallRef: events.CallRef{CallID: "call-1"}, Service: "elevenlabs", Attempt: 2, Outcome: "failure",
		ErrorCategory: "transient", StatusCode: 503, Message: "503 Service Unavailable", BreakerState: "closed"}
	got := Event(ev)
	want := "attempt elevenlabs: 503 Service Unavailable\ntime: 2025-03-14 09:27:05 UTC\nerror category: transient\n" +
		"retry count: 1\ncircuit breaker: closed\nstatus code: 503\ncall: call-1"
	if got.String() != want || got.Service != "elevenlabs" {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
