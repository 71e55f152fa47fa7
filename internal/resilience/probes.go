package resilience

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ProbeBucket is the key-value bucket in which the fleet elects its
// half-open probes.
const ProbeBucket = "breaker_probes"

// ProbeBucketTTL is how long a claim is kept. Claims are only meaningful
// within their round (one recovery timeout); the TTL only tidies up.
const ProbeBucketTTL = time.Hour

// claimTimeout bounds the election's round trip: a slow bus must not hold a
// call for long, and on a timeout the probe runs anyway (see Fleet.claim).
const claimTimeout = 2 * time.Second

// probeGate elects the fleet's half-open probes. claim reports whether this
// process may run a probe of the slot's service, open period and round, and
// which slot it took; release gives a claimed slot back.
type probeGate interface {
	claim(ctx context.Context, want probeSlot) (*probeSlot, bool)
	release(slot *probeSlot)
}

// probeSlot names one of the fleet's probes: the service, the open period it
// follows (identified by the period's end, on which the fleet's breakers
// converge), the round of the election and the slot number, below slots.
type probeSlot struct {
	service string
	period  time.Time
	round   int64
	slots   int
	n       int
}

// key is the slot's key in ProbeBucket: <service>.<period unix ms>.<round>.<slot>.
func (s *probeSlot) key() string {
	return fmt.Sprintf("%s.%d.%d.%d", s.service, s.period.UnixMilli(), s.round, s.n)
}

// CoordinateProbes makes the fleet elect its half-open probes in kv (the
// ProbeBucket), so that HalfOpenRequests probes run across the fleet per
// open period rather than per caller. Without it each process lets its own
// probes through. Call it before the fleet's breakers are used.
func (f *Fleet) CoordinateProbes(kv jetstream.KeyValue) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes = kv
}

// claim takes the first free slot of want's round with a key-value Create,
// which only one process can win per key. A bus that cannot be asked lets
// the probe through: the fleet then probes as it did before the election,
// at most HalfOpenRequests per caller, rather than not at all.
func (f *Fleet) claim(ctx context.Context, want probeSlot) (*probeSlot, bool) {
	f.mu.Lock()
	kv := f.probes
	f.mu.Unlock()
	if kv == nil {
		return nil, true
	}
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	value := []byte(f.conn.Source)
	for n := range want.slots {
		slot := want
		slot.n = n
		_, err := kv.Create(cctx, slot.key(), value)
		if err == nil {
			return &slot, true
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if ctx.Err() != nil {
			return nil, false // the call itself is done; allow says so
		}
		f.log.Warn("fleet: probe election failed; probing without it", "service", want.service, "key", slot.key(), "err", err)
		return nil, true
	}
	return nil, false
}

// release deletes a claimed slot so that another probe may take it.
func (f *Fleet) release(slot *probeSlot) {
	f.mu.Lock()
	kv := f.probes
	f.mu.Unlock()
	if kv == nil || slot == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	if err := kv.Delete(ctx, slot.key()); err != nil {
		// The slot stays taken until its round ends.
		f.log.Warn("fleet: give back probe slot", "service", slot.service, "key", slot.key(), "err", err)
	}
}
