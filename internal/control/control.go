// Package control owns what an operator says about a running campaign: its
// state (running, paused, cancelled) and its pacing (calls per second, calls
// at once), kept in the key-value bucket campaign_control, one key per
// campaign. The dispatcher role writes it (dispatcher pause|resume|cancel|
// pace); callers only read it, right before they dial, so that what the
// operator says applies at once to every caller of the fleet.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
)

// Bucket is the key-value bucket of campaign control records.
const Bucket = "campaign_control"

// State is what a campaign may do.
type State string

// Campaign states. Cancelled is final: a cancelled campaign never dials again.
const (
	Running   State = "running"
	Paused    State = "paused"
	Cancelled State = "cancelled"
)

// Errors of Set, matched with errors.Is.
var (
	// ErrFinal means the campaign is cancelled: nothing changes it back.
	ErrFinal = errors.New("campaign is cancelled")
	// ErrInvalid means a pacing value is out of range.
	ErrInvalid = errors.New("invalid control value")
)

// Control is a campaign's control record. The zero value is a running
// campaign without pacing limits: a campaign nobody paused has no record.
type Control struct {
	Campaign string `json:"campaign"`
	State    State  `json:"state"`
	// MaxCallsPerSecond caps how many contacts the fleet starts dialling in
	// one wall-clock second; 0 is no cap.
	MaxCallsPerSecond int `json:"max_calls_per_second,omitempty"`
	// MaxConcurrentCalls caps the calls of the campaign ringing or in
	// progress across the fleet at once; 0 is no cap.
	MaxConcurrentCalls int       `json:"max_concurrent_calls,omitempty"`
	UpdatedAt          time.Time `json:"updated_at,omitzero"`
	// By is the process that made the last change.
	By string `json:"by,omitempty"`
}

// Effective is the state, Running when none was ever set.
func (c Control) Effective() State {
	if c.State == "" {
		return Running
	}
	return c.State
}

// String is one line for `dispatcher status`.
func (c Control) String() string {
	s := "control: " + string(c.Effective())
	rate, conc := "no limit", "no limit"
	if c.MaxCallsPerSecond > 0 {
		rate = fmt.Sprint(c.MaxCallsPerSecond)
	}
	if c.MaxConcurrentCalls > 0 {
		conc = fmt.Sprint(c.MaxConcurrentCalls)
	}
	s += fmt.Sprintf("; max_calls_per_second %s; max_concurrent_calls %s", rate, conc)
	if !c.UpdatedAt.IsZero() {
		s += fmt.Sprintf("; changed %s by %s", c.UpdatedAt.UTC().Format(time.DateTime+" MST"), c.By)
	}
	return s
}

// Store reads and writes control records.
type Store struct {
	kv jetstream.KeyValue
}

// Open opens the bucket, creating it where the role may (the admin role, or a
// test server without permissions); callers may only read it, so provision
// it first (`dispatcher provision`).
func Open(ctx context.Context, conn *bus.Conn) (*Store, error) {
	kv, err := conn.KeyValue(ctx, Bucket, 0)
	if err != nil {
		return nil, fmt.Errorf("campaign control: %w", err)
	}
	return &Store{kv: kv}, nil
}

// OpenExisting opens the bucket without creating it: asking must not change
// anything. A missing bucket is jetstream.ErrBucketNotFound.
func OpenExisting(ctx context.Context, conn *bus.Conn) (*Store, error) {
	kv, err := conn.OpenKeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("campaign control: %w", err)
	}
	return &Store{kv: kv}, nil
}

// KV is the bucket, for watching.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// Get returns the campaign's record: a running one without limits when it
// has none.
func (s *Store) Get(ctx context.Context, campaign string) (Control, error) {
	c, _, err := s.get(ctx, campaign)
	return c, err
}

func (s *Store) get(ctx context.Context, campaign string) (Control, uint64, error) {
	e, err := s.kv.Get(ctx, campaign)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Control{Campaign: campaign, State: Running}, 0, nil
	}
	if err != nil {
		return Control{}, 0, fmt.Errorf("campaign control %s: %w", campaign, err)
	}
	c, err := Decode(e.Value())
	if err != nil {
		return Control{}, 0, fmt.Errorf("campaign control %s: %w", campaign, err)
	}
	return c, e.Revision(), nil
}

// Decode reads a record as stored.
func Decode(data []byte) (Control, error) {
	var c Control
	if err := json.Unmarshal(data, &c); err != nil {
		return Control{}, fmt.Errorf("decode control record: %w", err)
	}
	c.State = c.Effective()
	return c, nil
}

// Update applies change to the campaign's record and stores it, with
// optimistic concurrency (two operators at once both see their change
// applied to the other's). A cancelled campaign refuses every change but
// another cancel (ErrFinal).
func (s *Store) Update(ctx context.Context, campaign, by string, now time.Time, change func(c *Control) error) (Control, error) {
	for try := 0; ; try++ {
		cur, rev, err := s.get(ctx, campaign)
		if err != nil {
			return Control{}, err
		}
		next := cur
		if err := change(&next); err != nil {
			return cur, err
		}
		if cur.State == Cancelled && next != cur {
			return cur, fmt.Errorf("%s: %w", campaign, ErrFinal)
		}
		if next.MaxCallsPerSecond < 0 || next.MaxConcurrentCalls < 0 {
			return cur, fmt.Errorf("%w: pacing limits must not be negative", ErrInvalid)
		}
		if next == cur && rev != 0 {
			return cur, nil
		}
		next.Campaign, next.UpdatedAt, next.By = campaign, now.UTC(), by
		data, err := json.Marshal(next)
		if err != nil {
			return Control{}, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, campaign, data)
		} else {
			_, err = s.kv.Update(ctx, campaign, data, rev)
		}
		if (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) && try < 10 {
			continue
		}
		if err != nil {
			return Control{}, fmt.Errorf("campaign control %s: %w", campaign, err)
		}
		return next, nil
	}
}

// SetState moves the campaign to state.
func (s *Store) SetState(ctx context.Context, campaign, by string, now time.Time, state State) (Control, error) {
	return s.Update(ctx, campaign, by, now, func(c *Control) error {
		if c.State == Cancelled && state != Cancelled {
			return fmt.Errorf("%s: %w", campaign, ErrFinal)
		}
		c.State = state
		return nil
	})
}
