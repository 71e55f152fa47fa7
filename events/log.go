package events

import (
	"fmt"
	"strings"
	"time"
)

// LogRecord is the seeds' log schema: one flat line per event, as the JSON-lines
// and spreadsheet sinks write it. The first six fields are always present;
// the rest say which event and call the line comes from, when there is one.
type LogRecord struct {
	Timestamp     time.Time `json:"timestamp"`
	Service       string    `json:"service"`
	ErrorCategory string    `json:"error_category"`
	// RetryCount is how many retries preceded this line: 0 on a first attempt.
	RetryCount   int    `json:"retry_count"`
	BreakerState string `json:"circuit_breaker_state"`
	Message      string `json:"message"`

	EventID string `json:"event_id,omitempty"`
	Type    Type   `json:"type,omitempty"`
	CallID  string `json:"call_id,omitempty"`
	// Contact is masked, like every contact outside the call request.
	Contact    string `json:"contact,omitempty"`
	Outcome    string `json:"outcome,omitempty"`
	StatusCode int    `json:"status_code,omitempty"`
	LatencyMs  int64  `json:"latency_ms,omitempty"`
}

// LogRecordOf derives the log line of any event. Fields that do not apply to
// the event's type are left empty; the message is the event's own, or, when it
// has none, a short sentence built from its fields, so no line is blank.
func LogRecordOf(ev Event) LogRecord {
	if ev == nil {
		return LogRecord{}
	}
	h := ev.Head()
	r := LogRecord{Timestamp: h.Time, EventID: h.ID, Type: h.Type}
	switch e := ev.(type) {
	case *Call:
		r.ref(e.CallRef)
		r.Service, r.ErrorCategory, r.Outcome = e.Service, e.ErrorCategory, e.Outcome
		r.RetryCount = max(e.Attempt-1, 0)
		r.StatusCode, r.LatencyMs = e.StatusCode, e.LatencyMs
		// A call is skipped, or fails as circuit_open, only because a breaker is open.
		if e.Outcome == CallSkipped || e.Reason == CategoryCircuitOpen || e.ErrorCategory == CategoryCircuitOpen {
			r.BreakerState = BreakerOpen
		}
		r.Message = orElse(e.Message, "call "+e.Outcome, e.Reason, e.CallStatus)
	case *Attempt:
		r.ref(e.CallRef)
		r.Service, r.ErrorCategory, r.BreakerState, r.Outcome = e.Service, e.ErrorCategory, e.BreakerState, e.Outcome
		r.RetryCount = max(e.Attempt-1, 0)
		r.StatusCode, r.LatencyMs = e.StatusCode, e.LatencyMs
		r.Message = orElse(e.Message, fmt.Sprintf("attempt %s %s", of(e.Attempt, e.MaxAttempts), e.Outcome), e.ErrorCode)
	case *Retry:
		r.ref(e.CallRef)
		r.Service, r.ErrorCategory, r.BreakerState = e.Service, e.ErrorCategory, e.BreakerState
		// The retry scheduled after attempt n is the n-th retry.
		r.RetryCount = max(e.Attempt, 0)
		r.StatusCode = e.StatusCode
		r.Message = orElse(e.Message, fmt.Sprintf("retry after attempt %s in %dms", of(e.Attempt, e.MaxAttempts), e.RetryInMs))
	case *Breaker:
		r.Service, r.BreakerState = e.Service, e.BreakerState
		r.Message = orElse(e.Message, fmt.Sprintf("breaker %s -> %s", e.From, e.To), e.Reason)
	case *Health:
		r.Service, r.BreakerState, r.Outcome = e.Service, e.BreakerState, e.Outcome
		r.StatusCode, r.LatencyMs = e.StatusCode, e.LatencyMs
		r.Message = orElse(e.Message, "health probe "+e.Outcome)
	case *Status:
		r.Service = e.Service
		r.Message = orElse(e.Message, fmt.Sprintf("status %s -> %s", orElse(e.From, "unknown"), e.To))
	case *Alert:
		r.Service, r.Outcome = e.Service, e.Status
		r.Message = e.Severity + " " + e.Status + ": " + orElse(e.Summary, e.Rule)
		if e.Message != "" {
			r.Message += ": " + e.Message
		}
		if len(e.CallIDs) == 1 {
			r.CallID = e.CallIDs[0]
		}
	case *Delivery:
		r.Service, r.Outcome = e.Sink, e.Outcome
		r.RetryCount = max(e.Attempts-1, 0)
		what := strings.Fields(fmt.Sprintf("%s %s %s", strings.ReplaceAll(e.Outcome, "_", " "), e.RefType, e.RefID))
		r.Message = orElse(e.Message, strings.Join(what, " "))
	}
	return r
}

func (r *LogRecord) ref(c CallRef) {
	r.CallID = c.CallID
	r.Contact = c.Contact
	// Defence in depth: a full number that slipped past validation is masked here.
	if e164("contact", c.Contact) == nil {
		r.Contact = MaskPhone(c.Contact)
	}
}

// orElse returns msg, or when it is empty, the fallback followed by the
// non-empty details, separated by ": ".
func orElse(msg, fallback string, details ...string) string {
	if msg != "" {
		return msg
	}
	parts := []string{fallback}
	for _, d := range details {
		if d != "" {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, ": ")
}

func of(n, limit int) string {
	if limit > 0 {
		return fmt.Sprintf("%d/%d", n, limit)
	}
	return fmt.Sprint(n)
}
