package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

// seedEvents is what the bus carries in the seed scenario, in order, with
// the retry delays of --fast.
func seedEvents() []events.Event {
	c1 := events.CallRef{CallID: "seed-1-1", Campaign: "seed", ContactID: "1", Contact: "+1415****101"}
	c2 := events.CallRef{CallID: "seed-2-1", Campaign: "seed", ContactID: "2", Contact: "+1415****102"}
	c3 := events.CallRef{CallID: "seed-3-1", Campaign: "seed", ContactID: "3", Contact: "+1415****103"}
	fail := func(n int) *events.Attempt {
		return &events.Attempt{CallRef: c1, Service: "elevenlabs", Attempt: n, MaxAttempts: 4, Outcome: events.OutcomeFailure,
			ErrorCategory: events.CategoryTransient, StatusCode: 503, ErrorCode: "system_busy"}
	}
	retry := func(n int, ms int64) *events.Retry {
		return &events.Retry{CallRef: c1, Service: "elevenlabs", Attempt: n, MaxAttempts: 4, RetryInMs: ms,
			ErrorCategory: events.CategoryTransient, StatusCode: 503}
	}
	ok := func(ref events.CallRef, svc string) *events.Attempt {
		return &events.Attempt{CallRef: ref, Service: svc, Attempt: 1, MaxAttempts: 4, Outcome: events.OutcomeSuccess}
	}
	call := func(ref events.CallRef, outcome string) *events.Call {
		return &events.Call{CallRef: ref, Outcome: outcome, Attempt: 1}
	}
	failed := call(c1, events.CallFailed)
	failed.Service, failed.StatusCode, failed.Reason, failed.ErrorCategory = "elevenlabs", 503, "retries_exhausted", events.CategoryTransient
	return []events.Event{
		&events.Health{Service: "elevenlabs", Outcome: events.OutcomeSuccess},
		&events.Status{Service: "elevenlabs", To: events.StatusUp},
		call(c1, events.CallStarted),
		ok(c1, "llm"),
		fail(1), retry(1, 50),
		fail(2), retry(2, 100),
		&events.Status{Service: "elevenlabs", From: events.StatusUp, To: events.StatusDegraded, Message: "2 attempts failed in a row"},
		fail(3), retry(3, 200),
		fail(4),
		failed,
		call(c2, events.CallStarted),
		ok(c2, "llm"),
		ok(c2, "elevenlabs"),
		&events.Alert{Fingerprint: "f1", Rule: "retries_exhausted", Severity: events.SeverityWarning, Status: events.AlertFiring,
			Service: "elevenlabs", Summary: "elevenlabs: a call failed with retries exhausted", StartsAt: time.Now(), CallIDs: []string{"seed-1-1"}},
		ok(c2, "telephony"), ok(c2, "crm"),
		call(c2, events.CallCompleted),
		call(c3, events.CallStarted),
		ok(c3, "llm"), ok(c3, "elevenlabs"), ok(c3, "telephony"), ok(c3, "crm"),
		call(c3, events.CallCompleted),
	}
}

// feed encodes each event as a publisher would and hands it to the tracer
// as the tail subscription does.
func feed(t *testing.T, tr *tracer, evs []events.Event) {
	t.Helper()
	now := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	for i, ev := range evs {
		events.Stamp(ev, "caller-1", now.Add(time.Duration(i)*time.Millisecond))
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatalf("encode %T: %v", ev, err)
		}
		tr.handle(ev.Subject(), data)
	}
}

func fixedClock() func() time.Time {
	t0 := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	return func() time.Time { return t0 }
}

func TestTraceLines(t *testing.T) {
	var out bytes.Buffer
	tr := newTracer(&out, nil, fixedClock())
	feed(t, tr, seedEvents())
	// A call request holds the full number: the tracer must not even read it.
	tr.handle("agent.dispatch.seed", []byte(`{"type":"request","phone":"+14155550101","contact_id":"9"}`))

	want := []string{
		"[  0.0s] Contact 1 (+1415****101): call started on caller-1",
		"[  0.0s] Contact 1 (+1415****101): elevenlabs 503 -> retry (50ms)",
		"[  0.0s] Contact 1 (+1415****101): elevenlabs 503 -> retry (100ms)",
		"[  0.0s] observer: elevenlabs up -> degraded: 2 attempts failed in a row",
		"[  0.0s] Contact 1 (+1415****101): elevenlabs 503 -> retry (200ms)",
		"[  0.0s] Contact 1 (+1415****101): elevenlabs 503 -> failed (retries exhausted)",
		"[  0.0s] Contact 2 (+1415****102): call started on caller-1",
		"[  0.0s] ALERT (warning): elevenlabs: a call failed with retries exhausted [seed-1-1]",
		"[  0.0s] Contact 2 (+1415****102): service recovered (elevenlabs) -> success",
		"[  0.0s] Contact 3 (+1415****103): call started on caller-1",
		"[  0.0s] Contact 3 (+1415****103): success",
	}
	if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("trace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	finals := []struct{ id, want string }{
		{"1", "Contact 1 (+1415****101): elevenlabs 503 -> retry (50ms) -> retry (100ms) -> retry (200ms) -> failed (retries exhausted) -> alert -> next contact"},
		{"2", "Contact 2 (+1415****102): service recovered (elevenlabs) -> success"},
		{"3", "Contact 3 (+1415****103): success"},
	}
	for _, f := range finals {
		t.Run("final "+f.id, func(t *testing.T) {
			got, ok := tr.finalLine(f.id)
			if !ok || got != f.want {
				t.Errorf("finalLine(%s) = %q, %v\nwant %q", f.id, got, ok, f.want)
			}
		})
	}
	if _, ok := tr.finalLine("9"); ok {
		t.Error("the call request's contact was traced")
	}
	for _, id := range []string{"seed-1-1", "seed-2-1", "seed-3-1"} {
		if !tr.ended(id) {
			t.Errorf("ended(%s) = false", id)
		}
	}
	if n := len(tr.firing()); n != 1 {
		t.Errorf("firing() has %d alerts, want 1", n)
	}
	if strings.Contains(out.String(), "4155550101") {
		t.Error("the trace shows a full phone number")
	}
}

// TestTraceTerminal checks the terminal rendering: the contact's line grows
// in place, and a side line is written above it, the live line erased (all
// the rows it wraps over in a 60-column terminal) and drawn again below.
func TestTraceTerminal(t *testing.T) {
	var out bytes.Buffer
	tr := newTracer(&out, func() int { return 60 }, fixedClock())
	evs := seedEvents()
	feed(t, tr, evs[2:9]) // contact 1 up to the status change

	const (
		line1 = "[  0.0s] Contact 1 (+1415****101): " // 35 runes
		erase = "\r\033[J"                            // a line of one row
		up1   = "\r\033[1A\033[J"                     // a line of 61 to 120 runes takes two rows
	)
	want := line1 + "calling on caller-1…" +
		erase + line1 + "elevenlabs 503" +
		erase + line1 + "elevenlabs 503 -> retry (50ms)" +
		up1 + line1 + "elevenlabs 503 -> retry (50ms) -> retry (100ms)" +
		up1 + "[  0.0s] observer: elevenlabs up -> degraded: 2 attempts failed in a row\n" +
		line1 + "elevenlabs 503 -> retry (50ms) -> retry (100ms)"
	if got := out.String(); got != want {
		t.Errorf("terminal output:\n%q\nwant:\n%q", got, want)
	}

	out.Reset()
	tr.println("done")
	if got := out.String(); got != "\ndone\n" {
		t.Errorf("println after a live line wrote %q, want the line ended first", got)
	}
}

func TestFailure(t *testing.T) {
	tests := []struct {
		service, code, category string
		status                  int
		want                    string
	}{
		{"elevenlabs", "system_busy", events.CategoryTransient, 503, "elevenlabs 503"},
		{"crm", "", events.CategoryTransient, 0, "crm transient error"},
		{"llm", "insufficient_quota", events.CategoryPermanent, 0, "llm insufficient_quota"},
		{"telephony", "", events.CategoryCircuitOpen, 0, "telephony circuit open"},
		{"", "", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := failure(tt.service, tt.status, tt.code, tt.category); got != tt.want {
				t.Errorf("failure() = %q, want %q", got, tt.want)
			}
		})
	}
}
