package dispatcher

import (
	"time"

	"github.com/callagent/agent/events"
)

// Telephony results a completed call may carry (DOMAIN.md, "Telephony").
const (
	callStatusCompleted = "completed"
	callStatusFailed    = "failed"
)

// outcomeLost marks an attempt whose request left the queue without any
// outcome (see run.reconcile).
const outcomeLost = "lost"

// policy decides what an outcome means for a contact.
type policy struct {
	maxAttempts   int
	noAnswerDelay time.Duration
	skippedDelay  time.Duration
}

// defaultSkippedDelay re-queues a skipped contact when neither the
// configuration nor the event says when its breaker recovers.
const defaultSkippedDelay = time.Minute

// apply records a call event on st. It reports whether st changed: an event
// for an attempt st does not know, or one already recorded (a redelivery, a
// second dispatcher), changes nothing, which makes outcomes idempotent.
func (p policy) apply(st *ContactState, ev *events.Call, now time.Time) bool {
	a := st.attempt(ev.CallID)
	if a == nil {
		return false
	}
	at := ev.Time.UTC()
	if ev.Outcome == events.CallStarted {
		if a.StartedAt != nil {
			return false
		}
		// Outcomes are handled concurrently, so the start may be read after
		// the attempt's end: then it only completes the attempt's history,
		// and the state is what reading them in order would have made it.
		a.StartedAt = &at
		if !a.done() && a == st.last() && (st.Status == StatusQueued || st.Status.waiting() && a.ScheduledAt != nil) {
			// A scheduled attempt has no queued state of its own: the server
			// published it while the contact waited.
			st.Status, st.NextAttemptAt = StatusInProgress, nil
		}
		st.UpdatedAt = now.UTC()
		return true
	}
	if a.done() {
		return false
	}
	a.Outcome = ev.Outcome
	a.CallStatus = ev.CallStatus
	a.Reason = ev.Reason
	a.Service = ev.Service
	a.EndedAt = &at
	st.UpdatedAt = now.UTC()
	if a != st.last() || st.Status.Terminal() {
		return true // history only: a later attempt already decides the contact
	}
	switch {
	case ev.Outcome == events.CallCompleted && (ev.CallStatus == "" || ev.CallStatus == callStatusCompleted):
		st.finish(StatusCompleted, "")
	case ev.Outcome == events.CallCompleted && ev.CallStatus == callStatusFailed:
		// The carrier could not place the call at all: calling again will not help.
		st.finish(StatusFailed, "call_failed")
	case ev.Outcome == events.CallCompleted:
		// Busy, no-answer, canceled: the callee, not a service; try much later.
		p.requeue(st, StatusPending, ev.CallStatus, now.Add(p.noAnswerDelay))
	case ev.Outcome == events.CallCancelled:
		st.finish(StatusCancelled, orDefault(ev.Reason, "campaign cancelled"))
	case ev.Outcome == events.CallSuppressed:
		st.finish(StatusSuppressed, orDefault(ev.Reason, "do not call"))
	case ev.Outcome == events.CallSkipped:
		// Never earlier than the breaker said it would let calls through:
		// re-queueing into an open breaker would only burn an attempt.
		delay := max(p.skippedDelay, time.Duration(ev.RetryInMs)*time.Millisecond)
		if delay <= 0 {
			delay = defaultSkippedDelay
		}
		p.requeue(st, StatusSkipped, withService(orDefault(ev.Reason, events.CategoryCircuitOpen), ev.Service), now.Add(delay))
	default: // failed
		reason := orDefault(ev.Reason, orDefault(ev.ErrorCategory, events.CallFailed))
		st.finish(StatusFailed, withService(reason, ev.Service))
	}
	return true
}

// lose records that the latest attempt's request vanished without an outcome
// and makes the contact due again at once, if it has attempts left.
func (p policy) lose(st *ContactState, now time.Time) {
	a := st.last()
	at := now.UTC()
	a.Outcome, a.Reason, a.EndedAt = outcomeLost, "request left the queue without an outcome", &at
	st.UpdatedAt = at
	p.requeue(st, StatusPending, "request lost", now)
}

// requeue schedules the next attempt, or ends the contact as exhausted when
// the cap is reached.
func (p policy) requeue(st *ContactState, status Status, reason string, at time.Time) {
	if st.Attempts >= p.maxAttempts {
		st.finish(StatusExhausted, reason)
		return
	}
	at = at.UTC()
	st.Status, st.LastReason, st.NextAttemptAt = status, reason, &at
}

func (s *ContactState) finish(status Status, reason string) {
	s.Status, s.LastReason, s.NextAttemptAt = status, reason, nil
}

func withService(reason, service string) string {
	if service == "" {
		return reason
	}
	return reason + " (" + service + ")"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
