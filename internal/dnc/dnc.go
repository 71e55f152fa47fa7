// Package dnc is the do-not-call list: numbers nobody may ring, kept in the
// key-value bucket "dnc" and checked by the caller right before every dial,
// so a number added while a campaign runs is never rung; its contact ends
// suppressed.
//
// Numbers are stored normalised to E.164 and keyed by a SHA-256 of it, never
// in the clear: phone numbers are masked everywhere but the call request. The
// value holds only the masked number, for `dispatcher dnc list`. A hash of a
// phone number is not a secret (the space of numbers is small enough to try
// every one): it keeps numbers out of listings, logs and backups of the
// bucket, and the bucket's readers are only the dispatcher and caller roles.
package dnc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Bucket is the key-value bucket of the do-not-call list.
const Bucket = "dnc"

// ErrNotListed means Remove found no such number.
var ErrNotListed = errors.New("number is not on the do-not-call list")

// Entry is one suppressed number as stored.
type Entry struct {
	// Key is the SHA-256 of the E.164 number, hex.
	Key string `json:"key"`
	// Contact is the masked number.
	Contact string    `json:"contact"`
	AddedAt time.Time `json:"added_at"`
	Comment string    `json:"comment,omitempty"`
	By      string    `json:"by,omitempty"`
}

// Key is the bucket key of an E.164 number.
func Key(e164 string) string {
	sum := sha256.Sum256([]byte(e164))
	return hex.EncodeToString(sum[:])
}

// List is the do-not-call list.
type List struct {
	kv jetstream.KeyValue
}

// Open opens the bucket, creating it where the role may; callers only read
// it, so provision it first (`dispatcher provision`).
func Open(ctx context.Context, conn *bus.Conn) (*List, error) {
	kv, err := conn.KeyValue(ctx, Bucket, 0)
	if err != nil {
		return nil, fmt.Errorf("do-not-call list: %w", err)
	}
	return &List{kv: kv}, nil
}

// OpenExisting opens the bucket without creating it: asking must not change
// anything (a dry run). A missing bucket is jetstream.ErrBucketNotFound.
func OpenExisting(ctx context.Context, conn *bus.Conn) (*List, error) {
	kv, err := conn.OpenKeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("do-not-call list: %w", err)
	}
	return &List{kv: kv}, nil
}

// checkE164 guards the key: a number written another way would hash to
// another key and not be found. Numbers are normalised (contacts.Normalize)
// before they get here; this checks the shape only.
func checkE164(n string) error {
	ok := len(n) >= 9 && len(n) <= 16 && n[0] == '+' && n[1] != '0'
	for i := 1; ok && i < len(n); i++ {
		ok = n[i] >= '0' && n[i] <= '9'
	}
	if !ok {
		return fmt.Errorf("%q is not an E.164 number (write it as +<country><number>)", events.MaskPhone(n))
	}
	return nil
}

// Contains reports whether the E.164 number is listed.
func (l *List) Contains(ctx context.Context, e164 string) (bool, error) {
	_, err := l.kv.Get(ctx, Key(e164))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("check do-not-call list: %w", err)
}

// Add lists the E.164 number (again, with a new comment, if it was).
func (l *List) Add(ctx context.Context, e164, comment, by string, now time.Time) (Entry, error) {
	if err := checkE164(e164); err != nil {
		return Entry{}, err
	}
	e := Entry{Key: Key(e164), Contact: events.MaskPhone(e164), AddedAt: now.UTC(), Comment: comment, By: by}
	data, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	if _, err := l.kv.Put(ctx, e.Key, data); err != nil {
		return Entry{}, fmt.Errorf("add to do-not-call list: %w", err)
	}
	return e, nil
}

// Remove takes the E.164 number off the list.
func (l *List) Remove(ctx context.Context, e164 string) error {
	if err := checkE164(e164); err != nil {
		return err
	}
	key := Key(e164)
	if _, err := l.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return ErrNotListed
	} else if err != nil {
		return fmt.Errorf("remove from do-not-call list: %w", err)
	}
	if err := l.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("remove from do-not-call list: %w", err)
	}
	return nil
}

// Entries returns every listed number (masked), oldest first.
func (l *List) Entries(ctx context.Context) ([]Entry, error) {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list do-not-call numbers: %w", err)
	}
	var out []Entry
	seen := map[string]bool{}
	for k := range lister.Keys() {
		if seen[k] {
			continue
		}
		seen[k] = true
		v, err := l.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list do-not-call numbers: %w", err)
		}
		var e Entry
		if err := json.Unmarshal(v.Value(), &e); err != nil {
			e = Entry{Key: k, Contact: "(unreadable)"}
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.AddedAt.Compare(b.AddedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out, nil
}
