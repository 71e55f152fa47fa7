// Package lease elects the one active observer among several sharing a
// durable consumer, with a key-value lease in the bucket observer_lease.
//
// # Why a lease, not a pinned priority group
//
// What an active observer does spans several consumers: the rules'
// durable on EVENTS, and one durable per sink on ALERTS or EVENTS. A
// pinned-client priority group pins each consumer on its own, so after a
// failover the rules could be pinned to one process and a sink to another;
// the observer's state (alert_state) also needs a single writer, which no
// consumer setting gives. One lease decides for all of them at once: the
// holder runs every consumer and writes the state, the others run none.
//
// # How
//
// The lease is one key (the durable's name) whose value names the holder.
// It is taken with Create, which succeeds only when the key is absent, with
// a per-key TTL (Nats-TTL): if the holder stops renewing, the server
// expires the key and leaves a marker, which the standbys' watch sees at
// once; the first standby whose Create lands holds it. The holder renews it
// every TTL/3 with a compare-and-set on its last revision, so a renewal
// fails when anyone else wrote the key. Fencing: the holder stops acting (its
// context is cancelled) the moment a renewal is refused, or when it has not
// managed to renew for TTL-TTL/3 (it cannot know then that nobody took it);
// a successor takes over only after the server expired the key, TTL after
// the last renewal. Writes to alert_state are a compare-and-set on the
// revision the writer loaded as well (package observer), so a deposed
// observer still finishing its last event cannot overwrite a newer state.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
)

// Bucket is the key-value bucket holding the leases (in bus.Buckets).
const Bucket = "observer_lease"

// Roles Status reports.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
)

// ErrLost is the cause of the context handed to the active function when
// the lease was lost.
var ErrLost = errors.New("observer lease lost")

// Options configure a Lease.
type Options struct {
	// Key is what is leased: the observer's durable consumer name.
	Key string
	// Holder names this process (its bus source).
	Holder string
	// Addr is where this process serves HTTP, shown to the others.
	Addr string
	// TTL is how long the lease lives unrenewed. Renew (default TTL/3) is
	// how often the holder renews it.
	TTL   time.Duration
	Renew time.Duration
	Log   *slog.Logger
}

// Holder is the lease's value: who holds it.
type Holder struct {
	Holder string    `json:"holder"`
	Addr   string    `json:"addr,omitempty"`
	Since  time.Time `json:"since"`
}

// Status is what this process knows of the lease.
type Status struct {
	// Role is RoleActive when this process holds the lease, else RoleStandby.
	Role string `json:"role"`
	Self string `json:"self"`
	// Active is the holder last seen (this process when it is active); nil
	// when nobody holds the lease.
	Active *Holder `json:"active,omitempty"`
	TTL    string  `json:"ttl"`
	// Running is false until Run has looked at the lease, and after it
	// returned.
	Running bool `json:"running"`
}

// Lease is one process's side of the election. Create it with Open.
type Lease struct {
	conn *bus.Conn
	kv   jetstream.KeyValue
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	active  bool
	running bool
	holder  *Holder
}

// Open opens (or creates) the bucket.
func Open(ctx context.Context, conn *bus.Conn, opts Options) (*Lease, error) {
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("observer lease: ttl %s: must be at least 1s", opts.TTL)
	}
	if opts.Renew <= 0 {
		opts.Renew = opts.TTL / 3
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	var cfg jetstream.KeyValueConfig
	for _, b := range bus.Buckets("") {
		if b.Name == Bucket {
			cfg = b.KeyValueConfig()
		}
	}
	kv, err := conn.OpenOrCreateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("observer lease: %w", err)
	}
	return &Lease{conn: conn, kv: kv, opts: opts, log: opts.Log.With("lease", opts.Key)}, nil
}

// Status reports the lease as this process last saw it.
func (l *Lease) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Status{Role: RoleStandby, Self: l.opts.Holder, TTL: l.opts.TTL.String(), Running: l.running}
	if l.active {
		s.Role = RoleActive
	}
	if l.holder != nil {
		h := *l.holder
		s.Active = &h
	}
	return s
}

// Run stands by until it holds the lease, then runs act with a context
// that is cancelled when the lease is lost (its cause is ErrLost), renewing
// the lease meanwhile; when act returns after losing the lease Run stands by
// again. When ctx is done Run waits for act to return, releases the lease
// so that a standby takes over at once, and returns act's error. An error
// from act while the lease is held is returned as well (after the release).
func (l *Lease) Run(ctx context.Context, act func(ctx context.Context) error) error {
	l.mu.Lock()
	l.running = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running, l.active = false, false
		l.mu.Unlock()
	}()
	for {
		rev, took, err := l.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = l.hold(ctx, rev, took, act)
		if errors.Is(err, ErrLost) && ctx.Err() == nil {
			continue
		}
		return err
	}
}

// acquire returns once this process holds the lease: its revision and
// when it was taken.
func (l *Lease) acquire(ctx context.Context) (uint64, time.Time, error) {
	waitStart := time.Now()
	var w jetstream.KeyWatcher
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	var lastRenew time.Time // the server's time of the holder's last write
	var previous string
	logged := false
	for {
		now := time.Now()
		value, err := json.Marshal(Holder{Holder: l.opts.Holder, Addr: l.opts.Addr, Since: now.UTC()})
		if err != nil {
			return 0, time.Time{}, err
		}
		rev, err := l.kv.Create(ctx, l.opts.Key, value, jetstream.KeyTTL(l.opts.TTL))
		if err == nil {
			l.mu.Lock()
			l.active = true
			l.holder = &Holder{Holder: l.opts.Holder, Addr: l.opts.Addr, Since: now.UTC()}
			l.mu.Unlock()
			attrs := []any{"holder", l.opts.Holder, "ttl", l.opts.TTL, "revision", rev}
			if previous != "" {
				// The takeover: how long the old holder had been silent,
				// and how long this one waited.
				attrs = append(attrs, "previous", previous, "silent_for", now.Sub(lastRenew).Round(time.Millisecond),
					"waited", now.Sub(waitStart).Round(time.Millisecond))
				l.log.Warn("observer lease taken over: this observer is active", attrs...)
			} else {
				l.log.Info("observer lease acquired: this observer is active", attrs...)
			}
			return rev, now, nil
		}
		if ctx.Err() != nil {
			return 0, time.Time{}, ctx.Err()
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			l.log.Warn("observer lease: create", "err", err)
		}
		if w == nil {
			if w, err = l.kv.Watch(ctx, l.opts.Key); err != nil {
				l.log.Warn("observer lease: watch", "err", err)
				w = nil
			}
		}
		var updates <-chan jetstream.KeyValueEntry
		if w != nil {
			updates = w.Updates()
		}
		// Wait for the key to go (a watch update) or, should the watch
		// miss it, try again after a renewal period.
		timer := time.NewTimer(l.opts.Renew)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return 0, time.Time{}, ctx.Err()
			case <-timer.C:
				break wait
			case e, ok := <-updates:
				if !ok {
					w, updates = nil, nil
					continue
				}
				if e == nil { // the watch's initial values are in
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					l.setHolder(nil)
					timer.Stop()
					break wait
				}
				var h Holder
				if json.Unmarshal(e.Value(), &h) == nil {
					l.setHolder(&h)
					if !logged || h.Holder != previous {
						l.log.Info("observer lease held by another observer: standing by", "active", h.Holder, "active_addr", h.Addr, "self", l.opts.Holder)
						logged = true
					}
					previous = h.Holder
				}
				lastRenew = e.Created()
			}
		}
	}
}

func (l *Lease) setHolder(h *Holder) {
	l.mu.Lock()
	l.holder = h
	l.mu.Unlock()
}

// hold runs act while renewing the lease, and cancels it when the lease is
// lost.
func (l *Lease) hold(ctx context.Context, rev uint64, took time.Time, act func(ctx context.Context) error) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- act(actx) }()

	value, err := json.Marshal(Holder{Holder: l.opts.Holder, Addr: l.opts.Addr, Since: took.UTC()})
	if err != nil {
		cancel(err)
		<-done
		return err
	}
	// The holder stands down once TTL-Renew has passed since the last
	// renewal that succeeded was sent, at that moment rather than at the
	// next tick: the server may expire the lease TTL after it.
	margin := l.opts.TTL - l.opts.Renew
	fence := time.NewTimer(margin)
	defer fence.Stop()
	t := time.NewTicker(l.opts.Renew)
	defer t.Stop()
	lost := false
	standDown := func(msg string, attrs ...any) {
		lost = true
		l.setHolder(nil)
		l.log.Warn(msg, attrs...)
		cancel(ErrLost)
	}
	for {
		select {
		case <-fence.C:
			if !lost {
				standDown("observer lease not renewed in time: standing down", "unrenewed_for", margin)
			}
		case err := <-done:
			l.mu.Lock()
			l.active = false
			l.mu.Unlock()
			if lost {
				return ErrLost
			}
			l.release(ctx, rev)
			return err
		case <-t.C:
			if lost {
				continue
			}
			// Renewed while act drains after a shutdown, too: the lease is
			// released only once nothing is in hand.
			sent := time.Now()
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), l.opts.Renew)
			next, err := l.renew(rctx, rev, value)
			rcancel()
			switch {
			case err == nil:
				rev = next
				fence.Reset(time.Until(sent.Add(margin)))
			case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
				standDown("observer lease lost: another observer holds it; standing by", "err", err)
			default:
				l.log.Warn("observer lease renewal failed; retrying", "err", err)
			}
		}
	}
}

// renew rewrites the lease if its revision is still rev, with a new TTL.
// kv.Update sets no TTL, so this is the bucket's own update message
// (subject $KV.<bucket>.<key>, expected last subject sequence) with one.
func (l *Lease) renew(ctx context.Context, rev uint64, value []byte) (uint64, error) {
	ack, err := l.conn.PublishMsg(ctx, "$KV."+Bucket+"."+l.opts.Key, "", value,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.opts.TTL))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", jetstream.ErrKeyRevisionMismatch, err)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// release deletes the lease if this process still holds it, so that a
// standby need not wait for it to expire.
func (l *Lease) release(ctx context.Context, rev uint64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(rctx, l.opts.Key, jetstream.LastRevision(rev)); err != nil {
		l.log.Warn("observer lease release", "err", err)
		return
	}
	l.setHolder(nil)
	l.log.Info("observer lease released")
}
