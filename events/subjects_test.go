package events_test

import (
	"strings"
	"testing"

	"github.com/callagent/agent/events"
)

func TestSubjectBuilders(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{events.DispatchSubject("spring-renewals"), "agent.dispatch.spring-renewals"},
		{events.CallSubject(events.CallFailed), "agent.call.failed"},
		{events.AttemptSubject("elevenlabs"), "agent.attempt.elevenlabs"},
		{events.RetrySubject("llm"), "agent.retry.llm"},
		{events.BreakerSubject("telephony"), "agent.breaker.telephony"},
		{events.HealthSubject("crm"), "agent.health.crm"},
		{events.StatusSubject("elevenlabs"), "agent.status.elevenlabs"},
		{events.AlertSubject(events.SeverityCritical), "agent.alert.critical"},
		{events.DeliverySubject("telegram"), "agent.delivery.telegram"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestEventSubjects(t *testing.T) {
	want := map[string]string{
		"call":                 "agent.call.failed",
		"call_completed":       "agent.call.completed",
		"call_skipped":         "agent.call.skipped",
		"call_cancelled":       "agent.call.cancelled",
		"call_suppressed":      "agent.call.suppressed",
		"attempt":              "agent.attempt.elevenlabs",
		"retry":                "agent.retry.elevenlabs",
		"breaker":              "agent.breaker.elevenlabs",
		"breaker_adopted":      "agent.breaker.elevenlabs",
		"health":               "agent.health.elevenlabs",
		"status":               "agent.status.elevenlabs",
		"alert":                "agent.alert.critical",
		"alert_resolved":       "agent.alert.critical",
		"delivery":             "agent.delivery.telegram",
		"delivery_dead_letter": "agent.delivery.webhook",
	}
	for name, ev := range goldens() {
		t.Run(name, func(t *testing.T) {
			got := ev.Subject()
			if got != want[name] {
				t.Fatalf("subject %q, want %q", got, want[name])
			}
			// Every event subject is stored by exactly one stream.
			var streams []string
			for stream, subjects := range events.StreamSubjects {
				for _, s := range subjects {
					if strings.HasPrefix(got, strings.TrimSuffix(s, ">")) {
						streams = append(streams, stream)
					}
				}
			}
			if len(streams) != 1 {
				t.Errorf("subject %q is stored by streams %v, want exactly one", got, streams)
			}
		})
	}
	if got := goldenRequest().Subject(); got != "agent.dispatch.spring-renewals" {
		t.Errorf("request subject %q", got)
	}
}

func TestSubjectConstants(t *testing.T) {
	prefixes := map[string]string{
		events.DispatchPrefix: events.DispatchAll, events.CallPrefix: events.CallAll,
		events.AttemptPrefix: events.AttemptAll, events.RetryPrefix: events.RetryAll,
		events.BreakerPrefix: events.BreakerAll, events.HealthPrefix: events.HealthAll,
		events.StatusPrefix: events.StatusAll, events.AlertPrefix: events.AlertAll,
		events.DeliveryPrefix: events.DeliveryAll,
	}
	for prefix, all := range prefixes {
		if !strings.HasPrefix(prefix, events.Root+".") || !strings.HasSuffix(prefix, ".") {
			t.Errorf("prefix %q does not start with %q and end with a dot", prefix, events.Root+".")
		}
		if all != prefix+">" {
			t.Errorf("wildcard %q, want %q", all, prefix+">")
		}
	}
	if events.AllSubjects != events.Root+".>" {
		t.Errorf("AllSubjects %q", events.AllSubjects)
	}
}

func TestValidToken(t *testing.T) {
	valid := []string{"elevenlabs", "llm", "crm_v2", "spring-renewals", "2025", "ünïcode", "a"}
	invalid := []string{"", "eleven.labs", ".", "*", ">", "a*", "a>", "eleven labs", " llm", "llm\t", "a\nb", "a\rb",
		"a\fb", "a\vb", "a\x00b", "a\x7fb"}
	for _, s := range valid {
		if err := events.ValidToken(s); err != nil {
			t.Errorf("ValidToken(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range invalid {
		if err := events.ValidToken(s); err == nil {
			t.Errorf("ValidToken(%q) = nil, want an error", s)
		}
	}
}
