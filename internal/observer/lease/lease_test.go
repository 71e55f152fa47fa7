package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
)

func role(name string) config.NATS {
	return config.NATS{User: name, Password: name + "-dev-password"}
}

// term is one stretch of a process being active.
type term struct {
	from, to time.Time
	cause    error
}

// candidate runs one observer's side of the lease; act records its terms.
type candidate struct {
	l      *Lease
	cancel context.CancelFunc
	done   chan error

	mu    sync.Mutex
	terms []term
}

func start(t *testing.T, conn *bus.Conn, name string, ttl time.Duration) *candidate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := Open(ctx, conn, Options{Key: "observer", Holder: name, Addr: name + ":8080", TTL: ttl, Log: natstest.Logger(t).With("who", name)})
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{l: l, done: make(chan error, 1)}
	rctx, rcancel := context.WithCancel(context.Background())
	c.cancel = rcancel
	go func() {
		c.done <- l.Run(rctx, func(ctx context.Context) error {
			c.mu.Lock()
			c.terms = append(c.terms, term{from: time.Now()})
			c.mu.Unlock()
			<-ctx.Done()
			c.mu.Lock()
			c.terms[len(c.terms)-1].to, c.terms[len(c.terms)-1].cause = time.Now(), context.Cause(ctx)
			c.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		rcancel()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return", name)
		}
	})
	return c
}

func (c *candidate) snapshot() []term {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]term(nil), c.terms...)
}

func (c *candidate) active() bool {
	ts := c.snapshot()
	return len(ts) > 0 && ts[len(ts)-1].to.IsZero()
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setup(t *testing.T) *natstest.Server {
	t.Helper()
	return natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
}

// A holder that can no longer reach the server stops acting before the
// lease expires; a standby takes over once it has, never earlier.
func TestTakeoverAfterTTL(t *testing.T) {
	srv := setup(t)
	const ttl = 2 * time.Second
	connA := srv.Connect(t, role("observer"), "obs-a")
	a := start(t, connA, "obs-a", ttl)
	waitFor(t, "obs-a active", 5*time.Second, a.active)
	b := start(t, srv.Connect(t, role("observer"), "obs-b"), "obs-b", ttl)
	waitFor(t, "obs-b to see obs-a hold the lease", 5*time.Second, func() bool {
		s := b.l.Status()
		return s.Running && s.Active != nil && s.Active.Holder == "obs-a" && s.Active.Addr == "obs-a:8080"
	})
	// Several renewals: the lease must outlive its TTL while renewed.
	time.Sleep(2 * ttl)
	if b.active() || !a.active() {
		t.Fatalf("after %s of renewals: obs-a active %v, obs-b active %v", 2*ttl, a.active(), b.active())
	}
	if s := a.l.Status(); s.Role != RoleActive || s.Active == nil || s.Active.Holder != "obs-a" {
		t.Errorf("obs-a status %+v", s)
	}
	if s := b.l.Status(); s.Role != RoleStandby {
		t.Errorf("obs-b status %+v", s)
	}

	cut := time.Now()
	connA.Abort() // obs-a is alive but cannot renew
	waitFor(t, "obs-b active", 3*ttl, b.active)
	took := time.Since(cut)
	waitFor(t, "obs-a to stand down", ttl, func() bool { return !a.active() })
	at, bt := a.snapshot(), b.snapshot()
	last := at[len(at)-1]
	if !errors.Is(last.cause, ErrLost) {
		t.Errorf("obs-a stopped with cause %v, want ErrLost", last.cause)
	}
	if !last.to.Before(bt[0].from) {
		t.Errorf("obs-a acted until %s, after obs-b began at %s: two active observers", last.to.Format(time.StampMilli), bt[0].from.Format(time.StampMilli))
	}
	t.Logf("connection cut -> obs-a stood down in %s, obs-b active in %s (ttl %s)", last.to.Sub(cut).Round(time.Millisecond), took.Round(time.Millisecond), ttl)
}

// A holder whose renewal is refused (someone else wrote the lease) stops at
// once, stands by, and takes the lease again when it is free.
func TestDeposedHolderStops(t *testing.T) {
	srv := setup(t)
	const ttl = 3 * time.Second
	conn := srv.Connect(t, role("observer"), "obs-a")
	a := start(t, conn, "obs-a", ttl)
	waitFor(t, "obs-a active", 5*time.Second, a.active)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, js := natstest.Raw(t, srv.URL(), "observer", "observer-dev-password")
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	stolen := time.Now()
	if _, err := kv.Put(ctx, "observer", []byte(`{"holder":"obs-x","since":"2026-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	// The next renewal (every ttl/3) is refused.
	waitFor(t, "obs-a to stop", ttl, func() bool { return !a.active() })
	ts := a.snapshot()
	if !errors.Is(ts[0].cause, ErrLost) {
		t.Errorf("obs-a stopped with cause %v, want ErrLost", ts[0].cause)
	}
	t.Logf("obs-a stopped %s after its lease was overwritten", ts[0].to.Sub(stolen).Round(time.Millisecond))
	waitFor(t, "obs-a to see obs-x hold it", ttl, func() bool {
		s := a.l.Status()
		return s.Role == RoleStandby && s.Active != nil && s.Active.Holder == "obs-x"
	})
	// The stolen entry has no TTL: it goes when deleted, and obs-a, watching,
	// takes the lease back.
	if err := kv.Delete(ctx, "observer"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "obs-a active again", 5*time.Second, a.active)
	if n := len(a.snapshot()); n != 2 {
		t.Errorf("obs-a had %d terms, want 2", n)
	}
}

// A holder stopping cleanly releases the lease: the standby need not wait
// for it to expire.
func TestReleaseOnStop(t *testing.T) {
	srv := setup(t)
	const ttl = 30 * time.Second
	a := start(t, srv.Connect(t, role("observer"), "obs-a"), "obs-a", ttl)
	waitFor(t, "obs-a active", 5*time.Second, a.active)
	b := start(t, srv.Connect(t, role("observer"), "obs-b"), "obs-b", ttl)
	waitFor(t, "obs-b standing by", 5*time.Second, func() bool { s := b.l.Status(); return s.Running && s.Active != nil })
	a.cancel()
	if err := <-a.done; err != nil {
		t.Fatalf("obs-a Run: %v", err)
	}
	a.done <- nil // for the cleanup
	waitFor(t, "obs-b active well before the ttl", ttl/3, b.active)
	if s := b.l.Status(); s.Role != RoleActive || s.Active == nil || s.Active.Holder != "obs-b" {
		t.Errorf("obs-b status %+v", s)
	}
}
