package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is where a contact stands in its campaign.
type Status string

// Contact statuses. Completed, failed, exhausted, cancelled and suppressed are
// terminal: a contact in one of them is never called again, whoever re-runs
// the campaign.
const (
	// StatusPending waits for its first attempt, or for the next one after a
	// busy or unanswered call (NextAttemptAt says when).
	StatusPending Status = "pending"
	// StatusQueued has a call request on the queue, not yet taken.
	StatusQueued Status = "queued"
	// StatusPostponed waits for its calling window to open.
	StatusPostponed Status = "postponed"
	// StatusInProgress has a caller working on it.
	StatusInProgress Status = "in_progress"
	// StatusCompleted was reached: the call was answered.
	StatusCompleted Status = "completed"
	// StatusFailed failed for a reason retrying will not fix.
	StatusFailed Status = "failed"
	// StatusSkipped was skipped because a service's breaker was open; it is
	// re-queued once the breaker should have recovered.
	StatusSkipped Status = "skipped"
	// StatusExhausted used every attempt the campaign allows.
	StatusExhausted Status = "exhausted"
	// StatusCancelled was waiting when its campaign was cancelled
	// (dispatcher cancel): it was not rung.
	StatusCancelled Status = "cancelled"
	// StatusSuppressed is on the do-not-call list: it was not rung.
	StatusSuppressed Status = "suppressed"
)

// Terminal reports whether the contact is done with.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusExhausted ||
		s == StatusCancelled || s == StatusSuppressed
}

// waiting reports whether the contact waits for the dispatcher to publish it.
func (s Status) waiting() bool {
	return s == StatusPending || s == StatusPostponed || s == StatusSkipped
}

// inFlight reports whether the contact has a request out.
func (s Status) inFlight() bool { return s == StatusQueued || s == StatusInProgress }

// Attempt is one call request of a contact and what became of it.
type Attempt struct {
	Attempt  int       `json:"attempt"`
	CallID   string    `json:"call_id"`
	QueuedAt time.Time `json:"queued_at"`
	// ScheduledAt is set on a re-queue: the request is stored on CALLS as a
	// message schedule that the server publishes at this time, so the attempt
	// happens whether or not a dispatcher is running then.
	ScheduledAt *time.Time `json:"scheduled_at,omitempty"`
	// PublishedAt is set once the stream confirmed the request (or, for a
	// scheduled attempt, its schedule).
	PublishedAt *time.Time `json:"published_at,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	// Outcome is the call's terminal outcome (completed, failed, skipped), or
	// "lost" when the request vanished without one; empty while it runs.
	Outcome    string     `json:"outcome,omitempty"`
	CallStatus string     `json:"call_status,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	Service    string     `json:"service,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
}

// done reports whether the attempt has its outcome.
func (a *Attempt) done() bool { return a.Outcome != "" }

// ContactState is a contact's durable campaign state, the value under the key
// "<campaign>.<contact_id>" of the state bucket. It holds the masked number
// only: the full one lives in the contact file and the call request.
type ContactState struct {
	Campaign  string `json:"campaign"`
	ContactID string `json:"contact_id"`
	// Contact is the masked number.
	Contact string `json:"contact"`
	// Line is where the contact was in the file that first added it.
	Line        int    `json:"line,omitempty"`
	Status      Status `json:"status"`
	Attempts    int    `json:"attempts"`
	MaxAttempts int    `json:"max_attempts,omitempty"`
	// LastReason says why the contact is where it is: busy, no-answer,
	// circuit_open, permanent, outside calling window, ...
	LastReason    string     `json:"last_reason,omitempty"`
	LastCallID    string     `json:"last_call_id,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	History       []Attempt  `json:"history,omitempty"`
}

// last returns the latest attempt, or nil before the first.
func (s *ContactState) last() *Attempt {
	if len(s.History) == 0 {
		return nil
	}
	return &s.History[len(s.History)-1]
}

// attempt returns the attempt with this call id, or nil.
func (s *ContactState) attempt(callID string) *Attempt {
	for i := range s.History {
		if s.History[i].CallID == callID {
			return &s.History[i]
		}
	}
	return nil
}

// scheduled returns the attempt a waiting contact has stored as a message
// schedule, not yet started nor ended, or nil.
func (s *ContactState) scheduled() *Attempt {
	a := s.last()
	if a == nil || a.ScheduledAt == nil || a.done() || a.StartedAt != nil || !s.Status.waiting() {
		return nil
	}
	return a
}

// pending returns the attempt whose request is out (queued, running, or
// stored as a schedule) without an outcome yet, or nil.
func (s *ContactState) pending() *Attempt {
	if a := s.scheduled(); a != nil {
		return a
	}
	if a := s.last(); a != nil && !a.done() && s.Status.inFlight() {
		return a
	}
	return nil
}

// due reports whether a waiting contact may be published at now: its time
// has come and no stored schedule publishes it already.
func (s *ContactState) due(now time.Time) bool {
	return s.Status.waiting() && (s.NextAttemptAt == nil || !s.NextAttemptAt.After(now)) && s.scheduled() == nil
}

// requeueDue reports whether a contact waits for a re-queue that has no
// schedule stored yet: a contact that had an attempt and waits for a later
// one. (A first attempt waiting for its calling window is held by the
// dispatcher instead.)
func (s *ContactState) requeueDue(now time.Time) bool {
	return s.Status.waiting() && s.Attempts > 0 && s.NextAttemptAt != nil && s.NextAttemptAt.After(now) && s.scheduled() == nil
}

func (s *ContactState) clone() *ContactState {
	c := *s
	c.History = append([]Attempt(nil), s.History...)
	return &c
}

// Campaign is the campaign's own record, under the key "<campaign>".
type Campaign struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Key returns the state bucket key of a contact. Campaign names and contact
// ids are both single tokens, so a campaign's contacts are "<campaign>.*" and
// its own record, "<campaign>", never collides with one of them.
func Key(campaign, contactID string) string { return campaign + "." + contactID }

// CallID is the call id of one attempt: unique per attempt, and made of the
// same safe characters as its parts.
func CallID(campaign, contactID string, attempt int) string {
	return fmt.Sprintf("%s-%s-%d", campaign, contactID, attempt)
}

// MsgID is the Nats-Msg-Id of one attempt's call request: publishing the same
// attempt again inside the stream's duplicate window stores nothing.
func MsgID(campaign, contactID string, attempt int) string {
	return fmt.Sprintf("%s.%s.%d", campaign, contactID, attempt)
}

// errConflict means another writer changed the key first.
var errConflict = errors.New("state changed concurrently")

// store reads and writes contact states with optimistic concurrency.
type store struct {
	kv jetstream.KeyValue
}

// get returns a contact's state and its revision, or jetstream.ErrKeyNotFound.
func (s store) get(ctx context.Context, key string) (*ContactState, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	st, err := decodeState(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("state %s: %w", key, err)
	}
	return st, e.Revision(), nil
}

// create stores a new contact state; it returns jetstream.ErrKeyExists if the
// contact already has one.
func (s store) create(ctx context.Context, key string, st *ContactState) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	return s.kv.Create(ctx, key, data)
}

// put writes st over revision rev, failing with errConflict if someone wrote
// in between.
func (s store) put(ctx context.Context, key string, st *ContactState, rev uint64) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	n, err := s.kv.Update(ctx, key, data, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s: %w", key, errConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("update state %s: %w", key, err)
	}
	return n, nil
}

// update applies change to the current state of key and writes it back,
// reading again and re-applying on a conflict. change returns false to leave
// the state as it is. update returns the state as stored (nil if the key does
// not exist) and whether this call changed it.
func (s store) update(ctx context.Context, key string, change func(st *ContactState) bool) (*ContactState, uint64, bool, error) {
	for try := 0; ; try++ {
		st, rev, err := s.get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, false, nil
		}
		if err != nil {
			return nil, 0, false, err
		}
		next := st.clone()
		if !change(next) {
			return st, rev, false, nil
		}
		n, err := s.put(ctx, key, next, rev)
		if errors.Is(err, errConflict) && try < 20 {
			continue
		}
		if err != nil {
			return nil, 0, false, err
		}
		return next, n, true, nil
	}
}

func decodeState(data []byte) (*ContactState, error) {
	var st ContactState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decode contact state: %w", err)
	}
	return &st, nil
}
