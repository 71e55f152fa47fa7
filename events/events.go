package events

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Version is the schema version carried in every event's "v" field.
const Version = 1

// Type names an event type. The set is part of the public contract.
type Type string

// The event types of the contract.
const (
	TypeCall     Type = "call"
	TypeAttempt  Type = "attempt"
	TypeRetry    Type = "retry"
	TypeBreaker  Type = "breaker"
	TypeHealth   Type = "health"
	TypeStatus   Type = "status"
	TypeAlert    Type = "alert"
	TypeDelivery Type = "delivery"
)

// Types lists every event type, in contract order.
var Types = []Type{TypeCall, TypeAttempt, TypeRetry, TypeBreaker, TypeHealth, TypeStatus, TypeAlert, TypeDelivery}

// Error categories: how a failure is classified.
const (
	CategoryTransient   = "transient"
	CategoryPermanent   = "permanent"
	CategoryCircuitOpen = "circuit_open"
)

// Call outcomes, the last token of agent.call.<outcome>.
const (
	CallStarted   = "started"
	CallCompleted = "completed"
	CallFailed    = "failed"
	CallSkipped   = "skipped"
	// CallCancelled ends a call whose campaign was cancelled before the
	// contact was rung (dispatcher cancel): nobody was called.
	CallCancelled = "cancelled"
	// CallSuppressed ends a call whose number is on the do-not-call list,
	// found right before dialling: nobody was called.
	CallSuppressed = "suppressed"
)

// Attempt and health outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	// OutcomeCanceled marks an attempt cut short by the caller's own context
	// (shutdown): neither a success nor a failure of the service.
	OutcomeCanceled = "canceled"
)

// Breaker states.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// Service statuses derived by the observer.
const (
	StatusUp       = "up"
	StatusDegraded = "degraded"
	StatusDown     = "down"
)

// Alert severities, the last token of agent.alert.<severity>, in rising order.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Alert states.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// Delivery outcomes on agent.delivery.<sink>.
const (
	DeliveryDelivered  = "delivered"
	DeliveryDeadLetter = "dead_letter"
)

// Event is implemented by every event type of the contract.
type Event interface {
	// Head returns the common fields.
	Head() *Header
	// Subject is the NATS subject the event is published on.
	Subject() string
	// Validate reports the first missing or invalid field.
	Validate() error
}

// Header holds the fields every event carries.
type Header struct {
	ID     string    `json:"id"`
	Type   Type      `json:"type"`
	Time   time.Time `json:"time"`
	Source string    `json:"source"`
	V      int       `json:"v"`
}

// Head returns h itself, so that embedding Header satisfies half of Event.
func (h *Header) Head() *Header { return h }

// Stamp fills the header of ev: a new id, its type, the time now in UTC, the
// source and the schema version. Fields already set are kept, so a republish
// keeps its id and is deduplicated.
func Stamp(ev Event, source string, now time.Time) Event {
	h := ev.Head()
	if h.ID == "" {
		h.ID = NewID()
	}
	h.Type = typeOf(ev)
	if h.Time.IsZero() {
		h.Time = now.UTC()
	}
	if h.Source == "" {
		h.Source = source
	}
	h.V = Version
	return ev
}

// NewID returns a random 128-bit event id as 32 hex characters.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b[:])
}

// CallRef identifies the call an event belongs to. The contact is always masked.
type CallRef struct {
	CallID    string `json:"call_id,omitempty"`
	Campaign  string `json:"campaign,omitempty"`
	ContactID string `json:"contact_id,omitempty"`
	Contact   string `json:"contact,omitempty"`
}

// Call reports a call's start or its one terminal outcome.
type Call struct {
	Header
	CallRef
	// Outcome is started, completed, failed, skipped, cancelled or suppressed.
	Outcome string `json:"outcome"`
	// Attempt is the campaign-level attempt number for this contact (1-based).
	Attempt int `json:"attempt,omitempty"`
	// Service is the service that failed or was skipped, on failed and skipped.
	Service       string `json:"service,omitempty"`
	ErrorCategory string `json:"error_category,omitempty"`
	StatusCode    int    `json:"status_code,omitempty"`
	// Reason says why a call failed: "permanent", "retries_exhausted",
	// "budget_exhausted", "circuit_open", "timeout".
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// CallStatus is the telephony result of a completed call: completed, busy,
	// no-answer, failed or canceled.
	CallStatus string `json:"call_status,omitempty"`
	// CRMRecordID, on completed, is the CRM's id of the call's record: the
	// write is done. A completed call is published only once it is.
	CRMRecordID string `json:"crm_record_id,omitempty"`
	// RetryInMs, on skipped, is when the breaker expects to try again.
	RetryInMs int64 `json:"retry_in_ms,omitempty"`
	LatencyMs int64 `json:"latency_ms,omitempty"`
	// AudioBytes, on a terminal event, is the size of the call's audio kept
	// in the call_audio bucket for the telephony provider to fetch; 0 or
	// absent when none was stored.
	AudioBytes int64 `json:"audio_bytes,omitempty"`
}

// Attempt reports one try against one service.
type Attempt struct {
	Header
	CallRef
	Service       string `json:"service"`
	Attempt       int    `json:"attempt"`
	MaxAttempts   int    `json:"max_attempts,omitempty"`
	Outcome       string `json:"outcome"`
	ErrorCategory string `json:"error_category,omitempty"`
	StatusCode    int    `json:"status_code,omitempty"`
	ErrorCode     string `json:"error_code,omitempty"`
	Message       string `json:"message,omitempty"`
	LatencyMs     int64  `json:"latency_ms"`
	BreakerState  string `json:"breaker_state,omitempty"`
}

// Retry reports a scheduled retry.
type Retry struct {
	Header
	CallRef
	Service       string `json:"service"`
	Attempt       int    `json:"attempt"`
	MaxAttempts   int    `json:"max_attempts,omitempty"`
	RetryInMs     int64  `json:"retry_in_ms"`
	ErrorCategory string `json:"error_category,omitempty"`
	StatusCode    int    `json:"status_code,omitempty"`
	Message       string `json:"message,omitempty"`
	BreakerState  string `json:"breaker_state,omitempty"`
}

// Breaker reports a circuit breaker transition in one caller.
type Breaker struct {
	Header
	Service      string `json:"service"`
	From         string `json:"from"`
	To           string `json:"to"`
	BreakerState string `json:"breaker_state"`
	Reason       string `json:"reason,omitempty"`
	Message      string `json:"message,omitempty"`
	// Origin is the source whose transition this one adopts; empty when the
	// transition is this caller's own. Adopted transitions are not re-adopted,
	// which is what keeps the fleet free of echo loops.
	Origin string `json:"origin,omitempty"`
	// OpenUntil is when an open breaker will let a probe through.
	OpenUntil *time.Time `json:"open_until,omitempty"`
	Failures  int        `json:"failures,omitempty"`
}

// Health reports a background health probe.
type Health struct {
	Header
	Service      string `json:"service"`
	Outcome      string `json:"outcome"`
	StatusCode   int    `json:"status_code,omitempty"`
	LatencyMs    int64  `json:"latency_ms"`
	Message      string `json:"message,omitempty"`
	BreakerState string `json:"breaker_state,omitempty"`
}

// Status reports a change of a service's derived status.
type Status struct {
	Header
	Service string `json:"service"`
	From    string `json:"from,omitempty"`
	To      string `json:"to"`
	Message string `json:"message,omitempty"`
}

// Alert is an alert or its resolution.
type Alert struct {
	Header
	Fingerprint string            `json:"fingerprint"`
	Rule        string            `json:"rule"`
	Severity    string            `json:"severity"`
	Status      string            `json:"status"`
	Service     string            `json:"service,omitempty"`
	Summary     string            `json:"summary"`
	Message     string            `json:"message,omitempty"`
	StartsAt    time.Time         `json:"starts_at"`
	EndsAt      *time.Time        `json:"ends_at,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Count is how many occurrences this notification groups.
	Count int `json:"count,omitempty"`
	// CallIDs lists (some of) the calls behind the alert.
	CallIDs []string `json:"call_ids,omitempty"`
}

// Delivery is a sink's receipt or dead letter for one record.
type Delivery struct {
	Header
	Sink        string `json:"sink"`
	Outcome     string `json:"outcome"`
	RefID       string `json:"ref_id"`
	RefType     Type   `json:"ref_type,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Attempts    int    `json:"attempts,omitempty"`
	Message     string `json:"message,omitempty"`
}

func typeOf(ev Event) Type {
	switch ev.(type) {
	case *Call:
		return TypeCall
	case *Attempt:
		return TypeAttempt
	case *Retry:
		return TypeRetry
	case *Breaker:
		return TypeBreaker
	case *Health:
		return TypeHealth
	case *Status:
		return TypeStatus
	case *Alert:
		return TypeAlert
	case *Delivery:
		return TypeDelivery
	}
	return ""
}

// New returns an empty event of type t, or nil for an unknown type.
func New(t Type) Event {
	switch t {
	case TypeCall:
		return &Call{}
	case TypeAttempt:
		return &Attempt{}
	case TypeRetry:
		return &Retry{}
	case TypeBreaker:
		return &Breaker{}
	case TypeHealth:
		return &Health{}
	case TypeStatus:
		return &Status{}
	case TypeAlert:
		return &Alert{}
	case TypeDelivery:
		return &Delivery{}
	}
	return nil
}
