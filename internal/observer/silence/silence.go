// Package silence keeps the operator's silences: matchers on a service, a
// rule or a severity that stop alerts from reaching the sinks for a while.
// Silences live in the key-value bucket "silences" (one key per silence id),
// so they survive restarts and every observer sees the same ones. The
// operator role writes them (`observer silence add|expire`); the observer
// role only reads them.
//
// A silenced alert is still derived and recorded (ALERTS, agent.alert.*): a
// silence mutes delivery, not the truth. Its resolution is muted too when the
// last firing notification of that episode was muted, even if the silence
// has expired since: a person who never heard of an alert should not be told
// it is over. That is Alertmanager's behaviour.
package silence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
)

// Bucket is the key-value bucket of silences.
const Bucket = "silences"

// Errors matched with errors.Is.
var (
	ErrNotFound = errors.New("no such silence")
	ErrInvalid  = errors.New("invalid silence")
)

// Matchers select the alerts a silence mutes: every field set must equal the
// alert's; empty fields match anything. At least one must be set.
type Matchers struct {
	Service  string `json:"service,omitempty"`
	Rule     string `json:"rule,omitempty"`
	Severity string `json:"severity,omitempty"`
}

func (m Matchers) String() string {
	var parts []string
	for _, f := range []struct{ k, v string }{{"service", m.Service}, {"rule", m.Rule}, {"severity", m.Severity}} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	return strings.Join(parts, ",")
}

// Silence is one silence as stored under its id.
type Silence struct {
	ID        string    `json:"id"`
	Matchers  Matchers  `json:"matchers"`
	StartsAt  time.Time `json:"starts_at"`
	EndsAt    time.Time `json:"ends_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Comment   string    `json:"comment"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Active reports whether the silence mutes at time at.
func (s Silence) Active(at time.Time) bool {
	return !at.Before(s.StartsAt) && at.Before(s.EndsAt)
}

// Matches reports whether the silence's matchers select the alert.
func (s Silence) Matches(a *events.Alert) bool {
	m := s.Matchers
	return (m.Service != "" || m.Rule != "" || m.Severity != "") &&
		(m.Service == "" || m.Service == a.Service) &&
		(m.Rule == "" || m.Rule == a.Rule) &&
		(m.Severity == "" || m.Severity == a.Severity)
}

// Validate checks what add needs: a matcher, a comment, an end after the start.
func (s Silence) Validate() error {
	m := s.Matchers
	switch {
	case m.Service == "" && m.Rule == "" && m.Severity == "":
		return fmt.Errorf("%w: needs --service, --rule or --severity (a silence of everything is not one)", ErrInvalid)
	case m.Severity != "" && events.SeverityRank(m.Severity) < 0:
		return fmt.Errorf("%w: unknown severity %q", ErrInvalid, m.Severity)
	case strings.TrimSpace(s.Comment) == "":
		return fmt.Errorf("%w: needs a comment saying why", ErrInvalid)
	case !s.EndsAt.After(s.StartsAt):
		return fmt.Errorf("%w: ends at %s, not after its start %s", ErrInvalid, s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339))
	}
	for _, v := range []string{m.Service, m.Rule} {
		if v != "" {
			if err := events.ValidToken(v); err != nil {
				return fmt.Errorf("%w: matcher %q: %w", ErrInvalid, v, err)
			}
		}
	}
	return nil
}

// Store reads and writes the silences bucket.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open opens the provisioned silences bucket (`dispatcher provision`
// creates it). now is the wall clock; nil means time.Now.
func Open(ctx context.Context, conn *bus.Conn, now func() time.Time) (*Store, error) {
	kv, err := conn.OpenKeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("silences: %w (run `dispatcher provision` as the admin)", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Store{kv: kv, now: now}, nil
}

// Add stores a new silence with a fresh id and returns it. A zero StartsAt
// means now.
func (st *Store) Add(ctx context.Context, s Silence) (Silence, error) {
	now := st.now().UTC()
	if s.StartsAt.IsZero() {
		s.StartsAt = now
	}
	s.ID = events.NewID()[:16]
	s.CreatedAt, s.UpdatedAt = now, now
	if err := s.Validate(); err != nil {
		return Silence{}, err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return Silence{}, err
	}
	if _, err := st.kv.Create(ctx, s.ID, data); err != nil {
		return Silence{}, fmt.Errorf("silences: add: %w", err)
	}
	return s, nil
}

// List returns every silence, expired ones included, the latest ending first.
func (st *Store) List(ctx context.Context) ([]Silence, error) {
	lister, err := st.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("silences: list: %w", err)
	}
	var out []Silence
	for key := range lister.Keys() {
		s, _, err := st.get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // expired by its key's removal between list and get
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	Sort(out)
	return out, nil
}

// Expire ends a silence now. Expiring an expired silence changes nothing.
func (st *Store) Expire(ctx context.Context, id string) (Silence, error) {
	s, rev, err := st.get(ctx, id)
	if err != nil {
		return Silence{}, err
	}
	now := st.now().UTC()
	if !s.EndsAt.After(now) {
		return s, nil
	}
	s.EndsAt, s.UpdatedAt = now, now
	if s.StartsAt.After(now) {
		s.StartsAt = now
	}
	data, err := json.Marshal(s)
	if err != nil {
		return Silence{}, err
	}
	if _, err := st.kv.Update(ctx, id, data, rev); err != nil {
		return Silence{}, fmt.Errorf("silences: expire %s: %w", id, err)
	}
	return s, nil
}

func (st *Store) get(ctx context.Context, id string) (Silence, uint64, error) {
	if err := events.ValidToken(id); err != nil {
		return Silence{}, 0, fmt.Errorf("%w: id %q", ErrNotFound, id)
	}
	e, err := st.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Silence{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Silence{}, 0, fmt.Errorf("silences: get %s: %w", id, err)
	}
	var s Silence
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return Silence{}, 0, fmt.Errorf("silences: decode %s: %w", id, err)
	}
	return s, e.Revision(), nil
}

// Sort orders silences the latest ending first, then by id.
func Sort(s []Silence) {
	slices.SortFunc(s, func(a, b Silence) int {
		if c := b.EndsAt.Compare(a.EndsAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
