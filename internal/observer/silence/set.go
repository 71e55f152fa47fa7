package silence

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
)

// Set is the observer's live copy of the silences bucket, kept by a watch.
// The zero value is not usable: create it with NewSet.
type Set struct {
	onChange func()
	log      *slog.Logger

	settleOnce sync.Once
	settled    chan struct{}

	mu     sync.Mutex
	all    map[string]Silence
	loaded bool
}

// NewSet returns an empty set; onChange (may be nil) runs after every change
// the watch applies.
func NewSet(log *slog.Logger, onChange func()) *Set {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Set{onChange: onChange, log: log, all: map[string]Silence{}, settled: make(chan struct{})}
}

// Run watches the bucket until ctx is done. While the bucket does not exist
// (not provisioned yet) it retries every retry: alerts are then delivered as
// if there were no silence, which is what an operator who made none expects.
func (s *Set) Run(ctx context.Context, conn *bus.Conn, retry time.Duration) {
	warned := false
	conn.FollowKeyValue(ctx, Bucket, retry, s.apply, func(err error) {
		s.settle() // no bucket, so no silence yet: deliver meanwhile
		if !warned {
			s.log.Warn("silences not followed, retrying (is the bucket provisioned?)", "bucket", Bucket, "err", err)
			warned = true
		}
	})
}

func (s *Set) apply(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	switch {
	case e == nil: // the initial values are in
		s.loaded = true
		defer s.settle()
	case e.Operation() != jetstream.KeyValuePut:
		delete(s.all, e.Key())
	default:
		var sl Silence
		if err := json.Unmarshal(e.Value(), &sl); err != nil {
			s.log.Warn("undecodable silence ignored", "key", e.Key(), "err", err)
			break
		}
		s.all[e.Key()] = sl
	}
	s.mu.Unlock()
	s.onChange()
}

func (s *Set) settle() { s.settleOnce.Do(func() { close(s.settled) }) }

// Settled is closed once the bucket's silences are loaded, or the first
// attempt to follow it failed (it is not provisioned): delivery waits for it,
// so an alert is not sent because the silences were not read yet.
func (s *Set) Settled() <-chan struct{} { return s.settled }

// Put adds or replaces a silence in memory (tests, and what Run applies).
func (s *Set) Put(sl Silence) {
	s.mu.Lock()
	s.all[sl.ID] = sl
	s.mu.Unlock()
	s.onChange()
}

// Loaded reports whether the watch has delivered the bucket's contents.
func (s *Set) Loaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

// Active returns the silences active at at, the latest ending first.
func (s *Set) Active(at time.Time) []Silence {
	s.mu.Lock()
	out := make([]Silence, 0, len(s.all))
	for _, sl := range s.all {
		if sl.Active(at) {
			out = append(out, sl)
		}
	}
	s.mu.Unlock()
	Sort(out)
	return out
}

// Silencing returns the id of an active silence matching a at time at, or "".
func (s *Set) Silencing(a *events.Alert, at time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(s.all)) {
		if sl := s.all[id]; sl.Active(at) && sl.Matches(a) {
			return id
		}
	}
	return ""
}

// overlapping returns the id of a silence matching a that was active at some
// moment of [from, to], or "".
func (s *Set) overlapping(a *events.Alert, from, to time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(s.all)) {
		sl := s.all[id]
		if sl.Matches(a) && sl.StartsAt.Before(to.Add(time.Nanosecond)) && sl.EndsAt.After(from) {
			return id
		}
	}
	return ""
}

// maxEpisodes bounds what a Muter remembers; entries of resolved episodes
// older than episodeTTL go first.
const (
	maxEpisodes = 10000
	episodeTTL  = time.Hour
)

// Muter decides, for one sink, which alert notifications are muted. It
// remembers, per alert episode (fingerprint and start), whether the last
// firing notification was muted, so that the resolution follows it.
type Muter struct {
	set *Set

	mu       sync.Mutex
	episodes map[string]episode
}

type episode struct {
	by         string    // the silence that muted it; "" if delivered
	resolvedAt time.Time // zero while firing
}

// NewMuter returns a Muter over set.
func NewMuter(set *Set) *Muter {
	return &Muter{set: set, episodes: map[string]episode{}}
}

// Mute reports whether notification a, about to be delivered at now, is
// muted, and by which silence. A firing notification is muted while an
// active silence matches it. A resolution is muted when one matches now, or
// when the episode's last firing notification was muted. After a restart the
// Muter has not seen that firing notification: it then mutes the resolution
// if any matching silence was active during the episode.
func (m *Muter) Mute(a *events.Alert, now time.Time) (string, bool) {
	key := a.Fingerprint + "@" + strconv.FormatInt(a.StartsAt.UnixNano(), 10)
	id := m.set.Silencing(a, now)
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.Status != events.AlertResolved {
		m.episodes[key] = episode{by: id}
		m.prune(now)
		return id, id != ""
	}
	ep, seen := m.episodes[key]
	switch {
	case !ep.resolvedAt.IsZero():
		// A redelivered resolution: the same answer as the first time.
		return ep.by, ep.by != ""
	case id != "":
	case seen && ep.by != "":
		id = ep.by
	case !seen:
		end := now
		if a.EndsAt != nil {
			end = *a.EndsAt
		}
		if o := m.set.overlapping(a, a.StartsAt, end); o != "" {
			id = o
		}
	}
	m.episodes[key] = episode{by: id, resolvedAt: now}
	m.prune(now)
	return id, id != ""
}

func (m *Muter) prune(now time.Time) {
	if len(m.episodes) <= maxEpisodes {
		return
	}
	for k, ep := range m.episodes {
		if !ep.resolvedAt.IsZero() && now.Sub(ep.resolvedAt) > episodeTTL {
			delete(m.episodes, k)
		}
	}
}
