// Package observertest builds the event sequences the observer's tests feed:
// single events with chosen times, and the seed scenario as the callers
// report it.
package observertest

import (
	"fmt"
	"time"

	"github.com/callagent/agent/events"
)

// Source is the caller instance the built events come from.
const Source = "caller-test"

func head(id string, at time.Time) events.Header {
	return events.Header{ID: id, Type: "", Time: at.UTC(), Source: Source, V: events.Version}
}

func ref(call string) events.CallRef {
	return events.CallRef{CallID: call, Campaign: "seed", ContactID: "contact-" + call, Contact: "+91888****882"}
}

// Success is a successful attempt.
func Success(id string, at time.Time, call, service string, latency time.Duration) *events.Attempt {
	return &events.Attempt{Header: head(id, at), CallRef: ref(call), Service: service, Attempt: 1, MaxAttempts: 4,
		Outcome: events.OutcomeSuccess, LatencyMs: latency.Milliseconds(), BreakerState: events.BreakerClosed}
}

// Failure is a failed attempt, transient or permanent.
func Failure(id string, at time.Time, call, service string, attempt int, category string, status int, code, msg string) *events.Attempt {
	return &events.Attempt{Header: head(id, at), CallRef: ref(call), Service: service, Attempt: attempt, MaxAttempts: 4,
		Outcome: events.OutcomeFailure, ErrorCategory: category, StatusCode: status, ErrorCode: code,
		Message: msg, LatencyMs: 300, BreakerState: events.BreakerClosed}
}

// Retry is a scheduled retry after attempt.
func Retry(id string, at time.Time, call, service string, attempt int, delay time.Duration) *events.Retry {
	return &events.Retry{Header: head(id, at), CallRef: ref(call), Service: service, Attempt: attempt, MaxAttempts: 4,
		RetryInMs: delay.Milliseconds(), ErrorCategory: events.CategoryTransient, StatusCode: 503,
		Message: "503 Service Unavailable", BreakerState: events.BreakerClosed}
}

// Call is a call outcome; service and reason apply to failed and skipped.
func Call(id string, at time.Time, call, outcome, service, reason string) *events.Call {
	c := &events.Call{Header: head(id, at), CallRef: ref(call), Outcome: outcome, Attempt: 1,
		Service: service, Reason: reason}
	switch outcome {
	case events.CallFailed:
		c.ErrorCategory, c.StatusCode, c.Message = events.CategoryTransient, 503, "503 Service Unavailable"
	case events.CallSkipped:
		c.ErrorCategory, c.RetryInMs = events.CategoryCircuitOpen, 30000
	case events.CallCompleted:
		c.CallStatus = "completed"
	}
	return c
}

// Breaker is a breaker transition of the test caller.
func Breaker(id string, at time.Time, service, from, to string) *events.Breaker {
	b := &events.Breaker{Header: head(id, at), Service: service, From: from, To: to, BreakerState: to}
	if to == events.BreakerOpen {
		until := at.Add(30 * time.Second).UTC()
		b.OpenUntil, b.Reason, b.Failures = &until, "failure_threshold", 5
	}
	return b
}

// Health is a health probe result.
func Health(id string, at time.Time, service string, ok bool) *events.Health {
	h := &events.Health{Header: head(id, at), Service: service, Outcome: events.OutcomeSuccess, StatusCode: 200, LatencyMs: 20}
	if !ok {
		h.Outcome, h.StatusCode = events.OutcomeFailure, 503
	}
	return h
}

// Stamped fills in each event's type, so the events are valid as built.
func Stamped(evs ...events.Event) []events.Event {
	for _, ev := range evs {
		events.Stamp(ev, Source, time.Time{})
	}
	return evs
}

// Seed returns the seed scenario as the callers report it, starting at t0:
//
//	Contact 1: 503 -> retry (5s) -> retry (10s) -> retry (20s) -> failed -> alert -> next contact
//	Contact 2: service recovered -> success
//	Contact 3: success
//
// Event ids are "<prefix>-<n>", so two runs can tell their events apart.
func Seed(prefix string, t0 time.Time) []events.Event {
	n := 0
	id := func() string { n++; return fmt.Sprintf("%s-%02d", prefix, n) }
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const tts = "elevenlabs"
	unavailable := "503 Service Unavailable"
	evs := []events.Event{
		Call(id(), at(0), "call-1", events.CallStarted, "", ""),
		Success(id(), at(200), "call-1", "llm", 180*time.Millisecond),
		Failure(id(), at(500), "call-1", tts, 1, events.CategoryTransient, 503, "service_unavailable", unavailable),
		Retry(id(), at(500), "call-1", tts, 1, 5*time.Second),
		Failure(id(), at(5500), "call-1", tts, 2, events.CategoryTransient, 503, "service_unavailable", unavailable),
		Retry(id(), at(5500), "call-1", tts, 2, 10*time.Second),
		Failure(id(), at(15500), "call-1", tts, 3, events.CategoryTransient, 503, "service_unavailable", unavailable),
		Retry(id(), at(15500), "call-1", tts, 3, 20*time.Second),
		Failure(id(), at(35500), "call-1", tts, 4, events.CategoryTransient, 503, "service_unavailable", unavailable),
		Call(id(), at(35500), "call-1", events.CallFailed, tts, "retries_exhausted"),
	}
	for i, call := range []string{"call-2", "call-3"} {
		base := 36000 + i*2000
		evs = append(evs,
			Call(id(), at(base), call, events.CallStarted, "", ""),
			Success(id(), at(base+200), call, "llm", 180*time.Millisecond),
			Success(id(), at(base+500), call, tts, 250*time.Millisecond),
			Success(id(), at(base+1000), call, "telephony", 400*time.Millisecond),
			Success(id(), at(base+1500), call, "crm", 90*time.Millisecond),
			Call(id(), at(base+1600), call, events.CallCompleted, "", ""),
		)
	}
	return Stamped(evs...)
}

// Mix is the i-th event of the observer's mix (attempts, retries,
// calls, breaker transitions over four services) at time at: what the
// ingest benchmarks feed. Ids and call ids start with prefix.
func Mix(prefix string, i int, at time.Time) events.Event {
	services := []string{"llm", "elevenlabs", "telephony", "crm"}
	svc := services[i%len(services)]
	id := fmt.Sprintf("%s-%d", prefix, i)
	call := fmt.Sprintf("%s-call-%d", prefix, i/8)
	var ev events.Event
	switch {
	case i%500 == 499:
		ev = Breaker(id, at, svc, events.BreakerClosed, events.BreakerOpen)
	case i%500 == 250:
		ev = Breaker(id, at, svc, events.BreakerOpen, events.BreakerClosed)
	case i%10 == 3:
		ev = Failure(id, at, call, svc, 1, events.CategoryTransient, 503, "service_unavailable", "503")
	case i%10 == 4:
		ev = Retry(id, at, call, svc, 1, 5*time.Second)
	case i%50 == 7:
		ev = Call(id, at, call, events.CallFailed, svc, "retries_exhausted")
	case i%8 == 0:
		ev = Call(id, at, call, events.CallCompleted, "", "")
	default:
		ev = Success(id, at, call, svc, 150*time.Millisecond)
	}
	return Stamped(ev)[0]
}
