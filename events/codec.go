package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// MaxSize is the largest encoded event accepted by Decode.
const MaxSize = 64 << 10

// Errors returned by Decode and Validate, matched with errors.Is.
var (
	ErrMalformed   = errors.New("malformed event")
	ErrUnknownType = errors.New("unknown event type")
	ErrMissing     = errors.New("missing required field")
	ErrInvalid     = errors.New("invalid field")
	ErrTooLarge    = errors.New("event too large")
)

// FieldError names the field that failed validation.
type FieldError struct {
	Field string
	Err   error // ErrMissing or ErrInvalid
	Why   string
}

func (e *FieldError) Error() string {
	if e.Why == "" {
		return fmt.Sprintf("%s: %q", e.Err, e.Field)
	}
	return fmt.Sprintf("%s: %q: %s", e.Err, e.Field, e.Why)
}

func (e *FieldError) Unwrap() error { return e.Err }

func missing(field string) error { return &FieldError{Field: field, Err: ErrMissing} }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: ErrInvalid, Why: fmt.Sprintf(format, args...)}
}

// Encode validates ev and returns its JSON encoding.
func Encode(ev Event) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Head().Type, err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Head().Type, err)
	}
	return b, nil
}

// Decode parses and validates one event. Unknown fields are ignored; malformed
// JSON, an unknown type, a missing required field or an oversize payload is an
// error that says which, matched with errors.Is against the Err values above.
//
// An event is parsed once: the type is read off the bytes (typeHint), the
// payload decoded straight into that type, and the decoded header must name
// the same type. Anything else (no hint, a wrong one, an unknown type, JSON
// that does not decode) goes the long way, decodeProbed, which parses the
// type first and decides the error exactly as it always has.
func Decode(data []byte) (Event, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxSize)
	}
	if err := objectStart(data); err != nil {
		return nil, err
	}
	if t, ok := typeHint(data); ok {
		if ev := New(t); ev != nil && json.Unmarshal(data, ev) == nil && ev.Head().Type == t {
			// The payload is valid JSON and its (last, case-folded) type
			// key is t: the probe would have read t too.
			if err := ev.Validate(); err != nil {
				return nil, fmt.Errorf("%s event: %w", t, err)
			}
			return ev, nil
		}
	}
	return decodeProbed(data)
}

// typeKey is how Encode writes the type, first in every event.
var typeKey, nullLit = []byte(`"type"`), []byte("null")

// typeHint guesses the event's type from the first "type" key of data,
// without parsing it: the string after it, when it has no escapes. It may
// be wrong (a nested "type", a later duplicate key); Decode checks the
// guess against the decoded header. It gives up on a payload with a null
// anywhere: a null type key ({"type":"call","Type":null}) clears the
// probe's type but leaves a decoded header's alone, and Encode never
// writes a null.
func typeHint(data []byte) (Type, bool) {
	if bytes.Contains(data, nullLit) {
		return "", false
	}
	i := bytes.Index(data, typeKey)
	if i < 0 {
		return "", false
	}
	rest := bytes.TrimLeft(data[i+len(typeKey):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return "", false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) == 0 || rest[0] != '"' {
		return "", false
	}
	rest = rest[1:]
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return Type(rest[:end]), true
}

// decodeProbed parses the type, then the event of that type.
func decodeProbed(data []byte) (Event, error) {
	var probe struct {
		Type *Type `json:"type"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if probe.Type == nil || *probe.Type == "" {
		return nil, missing("type")
	}
	ev := New(*probe.Type)
	if ev == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, *probe.Type)
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("%w: %s event: %v", ErrMalformed, *probe.Type, err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("%s event: %w", *probe.Type, err)
	}
	return ev, nil
}

// DecodeAs decodes data into an event of the concrete type T.
func DecodeAs[T Event](data []byte) (T, error) {
	var zero T
	ev, err := Decode(data)
	if err != nil {
		return zero, err
	}
	t, ok := ev.(T)
	if !ok {
		return zero, fmt.Errorf("%w: got %s event, want %T", ErrUnknownType, ev.Head().Type, zero)
	}
	return t, nil
}

// objectStart rejects a payload that is not a JSON object before it is parsed:
// json.Unmarshal accepts a bare null into a struct, which would otherwise be
// reported as a missing type rather than as the malformed message it is.
func objectStart(data []byte) error {
	d := bytes.TrimLeft(data, " \t\r\n")
	if len(d) == 0 {
		return fmt.Errorf("%w: empty payload", ErrMalformed)
	}
	if d[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	return nil
}

// IsJSONObject is a cheap check used before decoding payloads from untrusted sources.
func IsJSONObject(data []byte) bool {
	d := bytes.TrimSpace(data)
	return len(d) > 1 && d[0] == '{' && d[len(d)-1] == '}'
}

func (h *Header) validate(want Type) error {
	switch {
	case h.ID == "":
		return missing("id")
	case utf8.RuneCountInString(h.ID) > 128:
		return invalid("id", "longer than 128 characters")
	case h.Type == "":
		return missing("type")
	case h.Type != want:
		return invalid("type", "%q, want %q", h.Type, want)
	case h.Time.IsZero():
		return missing("time")
	case h.Source == "":
		return missing("source")
	case h.V == 0:
		return missing("v")
	case h.V != Version:
		return invalid("v", "schema version %d, want %d", h.V, Version)
	}
	return nil
}

func token(field, v string) error {
	if v == "" {
		return missing(field)
	}
	if err := ValidToken(v); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

func oneOf(field, v string, allowed ...string) error {
	if v == "" {
		return missing(field)
	}
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return invalid(field, "%q is not one of %q", v, allowed)
}

func optionalOneOf(field, v string, allowed ...string) error {
	if v == "" {
		return nil
	}
	return oneOf(field, v, allowed...)
}

func nonNegative(field string, v int64) error {
	if v < 0 {
		return invalid(field, "negative: %d", v)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

var (
	categories    = []string{CategoryTransient, CategoryPermanent, CategoryCircuitOpen}
	breakerStates = []string{BreakerClosed, BreakerOpen, BreakerHalfOpen}
	statuses      = []string{StatusUp, StatusDegraded, StatusDown}
	severities    = []string{SeverityInfo, SeverityWarning, SeverityCritical}
	eventTypes    = []string{string(TypeCall), string(TypeAttempt), string(TypeRetry), string(TypeBreaker),
		string(TypeHealth), string(TypeStatus), string(TypeAlert), string(TypeDelivery)}
)

// Validate checks a call event.
func (e *Call) Validate() error {
	return firstErr(
		e.Header.validate(TypeCall),
		e.CallRef.validate(),
		required("call_id", e.CallID),
		oneOf("outcome", e.Outcome, CallStarted, CallCompleted, CallFailed, CallSkipped, CallCancelled, CallSuppressed),
		nonNegative("attempt", int64(e.Attempt)),
		optionalToken("service", e.Service),
		optionalOneOf("error_category", e.ErrorCategory, categories...),
		nonNegative("status_code", int64(e.StatusCode)),
		nonNegative("retry_in_ms", e.RetryInMs),
		nonNegative("latency_ms", e.LatencyMs),
		nonNegative("audio_bytes", e.AudioBytes),
	)
}

// Validate checks an attempt event.
func (e *Attempt) Validate() error {
	return firstErr(
		e.Header.validate(TypeAttempt),
		e.CallRef.validate(),
		token("service", e.Service),
		positive("attempt", e.Attempt),
		nonNegative("max_attempts", int64(e.MaxAttempts)),
		oneOf("outcome", e.Outcome, OutcomeSuccess, OutcomeFailure, OutcomeCanceled),
		optionalOneOf("error_category", e.ErrorCategory, categories...),
		nonNegative("status_code", int64(e.StatusCode)),
		nonNegative("latency_ms", e.LatencyMs),
		optionalOneOf("breaker_state", e.BreakerState, breakerStates...),
	)
}

// Validate checks a retry event.
func (e *Retry) Validate() error {
	return firstErr(
		e.Header.validate(TypeRetry),
		e.CallRef.validate(),
		token("service", e.Service),
		positive("attempt", e.Attempt),
		nonNegative("max_attempts", int64(e.MaxAttempts)),
		nonNegative("retry_in_ms", e.RetryInMs),
		optionalOneOf("error_category", e.ErrorCategory, categories...),
		nonNegative("status_code", int64(e.StatusCode)),
		optionalOneOf("breaker_state", e.BreakerState, breakerStates...),
	)
}

// Validate checks a breaker event.
func (e *Breaker) Validate() error {
	return firstErr(
		e.Header.validate(TypeBreaker),
		token("service", e.Service),
		oneOf("from", e.From, breakerStates...),
		oneOf("to", e.To, breakerStates...),
		oneOf("breaker_state", e.BreakerState, breakerStates...),
		nonNegative("failures", int64(e.Failures)),
	)
}

// Validate checks a health event.
func (e *Health) Validate() error {
	return firstErr(
		e.Header.validate(TypeHealth),
		token("service", e.Service),
		oneOf("outcome", e.Outcome, OutcomeSuccess, OutcomeFailure),
		nonNegative("status_code", int64(e.StatusCode)),
		nonNegative("latency_ms", e.LatencyMs),
		optionalOneOf("breaker_state", e.BreakerState, breakerStates...),
	)
}

// Validate checks a status event.
func (e *Status) Validate() error {
	return firstErr(
		e.Header.validate(TypeStatus),
		token("service", e.Service),
		optionalOneOf("from", e.From, statuses...),
		oneOf("to", e.To, statuses...),
	)
}

// Validate checks an alert event.
func (e *Alert) Validate() error {
	return firstErr(
		e.Header.validate(TypeAlert),
		required("fingerprint", e.Fingerprint),
		required("rule", e.Rule),
		oneOf("severity", e.Severity, severities...),
		oneOf("status", e.Status, AlertFiring, AlertResolved),
		optionalToken("service", e.Service),
		required("summary", e.Summary),
		requiredTime("starts_at", e.StartsAt),
		nonNegative("count", int64(e.Count)),
	)
}

// Validate checks a delivery event.
func (e *Delivery) Validate() error {
	return firstErr(
		e.Header.validate(TypeDelivery),
		token("sink", e.Sink),
		oneOf("outcome", e.Outcome, DeliveryDelivered, DeliveryDeadLetter),
		required("ref_id", e.RefID),
		optionalOneOf("ref_type", string(e.RefType), eventTypes...),
		nonNegative("attempts", int64(e.Attempts)),
	)
}

// validate guards the privacy rule of the contract: the contact on an event is
// masked, so a full E.164 number here is a leak, refused before it is published.
func (r *CallRef) validate() error {
	if r.Contact != "" && e164("contact", r.Contact) == nil {
		return invalid("contact", "a full phone number: mask it with MaskPhone")
	}
	return nil
}

func required(field, v string) error {
	if v == "" {
		return missing(field)
	}
	return nil
}

func requiredTime(field string, t time.Time) error {
	if t.IsZero() {
		return missing(field)
	}
	return nil
}

func optionalToken(field, v string) error {
	if v == "" {
		return nil
	}
	return token(field, v)
}

// positive checks a 1-based counter. Zero is what an absent field decodes to,
// so it is reported as missing, like an empty string.
func positive(field string, v int) error {
	if v == 0 {
		return missing(field)
	}
	if v < 1 {
		return invalid(field, "must be at least 1, got %d", v)
	}
	return nil
}

// SeverityRank orders severities: info < warning < critical. Unknown is -1.
func SeverityRank(s string) int {
	for i, v := range severities {
		if v == s {
			return i
		}
	}
	return -1
}
