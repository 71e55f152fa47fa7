package control

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
)

// PacingBucket holds the fleet's pacing counters: one key per call slot in
// use ("<campaign>.slot.<n>", the call id) and one per second of dialling
// ("<campaign>.rate.<unix second>", how many dials started in it). Callers
// read and write it; entries live PacingTTL unless refreshed.
const PacingBucket = "campaign_pacing"

// PacingTTL is how long a slot outlives a caller that died holding it. A live
// holder refreshes its slot every PacingTTL/3, so a long call keeps it.
const PacingTTL = 15 * time.Minute

// SlotRetry is how long a call waits before it asks again for a slot of a
// campaign whose calls are all in use.
const SlotRetry = time.Second

// Pacer admits dials under a campaign's pacing limits, fleet-wide: every
// caller counts in the same bucket, with compare-and-set writes.
//
// The guarantee: at most MaxConcurrentCalls calls of a campaign hold a slot
// at once (a slot is taken right before dialling and given back once the call
// has ended), and at most MaxCallsPerSecond dials start within one
// wall-clock second as the callers' clocks tell it (a fixed window, so two
// adjacent seconds may let 2x through within one sliding second). A caller
// that dies holding a slot leaves it taken for up to PacingTTL: pacing errs
// on fewer calls, never more.
type Pacer struct {
	kv  jetstream.KeyValue
	now func() time.Time
	log interface {
		Warn(msg string, args ...any)
	}
}

// OpenPacer opens the pacing bucket (creating it where the role may).
func OpenPacer(ctx context.Context, conn *bus.Conn) (*Pacer, error) {
	kv, err := conn.KeyValue(ctx, PacingBucket, PacingTTL)
	if err != nil {
		return nil, fmt.Errorf("campaign pacing: %w", err)
	}
	return &Pacer{kv: kv, now: time.Now, log: conn.Log()}, nil
}

// Admit reserves one dial of callID under c's limits. When a limit is
// reached it returns ok false and how long to wait before asking again.
// When ok, release must be called once the call has ended.
func (p *Pacer) Admit(ctx context.Context, c Control, callID string) (release func(), wait time.Duration, ok bool, err error) {
	release = func() {}
	if c.MaxConcurrentCalls > 0 {
		slot, got, err := p.claimSlot(ctx, c, callID)
		if err != nil || !got {
			return release, SlotRetry, false, err
		}
		release = p.hold(ctx, slot, callID)
	}
	if c.MaxCallsPerSecond > 0 {
		wait, got, err := p.takeRate(ctx, c)
		if err != nil || !got {
			release()
			return func() {}, wait, false, err
		}
	}
	return release, 0, true, nil
}

// claimSlot creates one of the campaign's slot keys, starting at a random
// one so that callers asking at once rarely collide.
func (p *Pacer) claimSlot(ctx context.Context, c Control, callID string) (string, bool, error) {
	n := c.MaxConcurrentCalls
	start := rand.IntN(n)
	for i := range n {
		key := c.Campaign + ".slot." + strconv.Itoa((start+i)%n)
		_, err := p.kv.Create(ctx, key, []byte(callID))
		switch {
		case err == nil:
			return key, true, nil
		case errors.Is(err, jetstream.ErrKeyExists):
			continue
		default:
			return "", false, fmt.Errorf("claim call slot: %w", err)
		}
	}
	return "", false, nil
}

// hold keeps the slot fresh while the call lasts and returns its release.
func (p *Pacer) hold(ctx context.Context, key, callID string) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(PacingTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := p.kv.Put(context.WithoutCancel(ctx), key, []byte(callID)); err != nil {
					p.log.Warn("refresh call slot", "key", key, "err", err)
				}
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := p.kv.Delete(dctx, key); err != nil {
				// It frees itself after PacingTTL.
				p.log.Warn("release call slot", "key", key, "err", err)
			}
		})
	}
}

// takeRate counts one dial in the current second, if it has room.
func (p *Pacer) takeRate(ctx context.Context, c Control) (time.Duration, bool, error) {
	for try := 0; try < 50; try++ {
		now := p.now()
		sec := now.Unix()
		next := time.Unix(sec+1, 0).Sub(now)
		key := c.Campaign + ".rate." + strconv.FormatInt(sec, 10)
		e, err := p.kv.Get(ctx, key)
		var count int
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, false, fmt.Errorf("read dial rate: %w", err)
		default:
			count, _ = strconv.Atoi(string(e.Value()))
			rev = e.Revision()
		}
		if count >= c.MaxCallsPerSecond {
			return next, false, nil
		}
		val := []byte(strconv.Itoa(count + 1))
		if rev == 0 {
			_, err = p.kv.Create(ctx, key, val)
		} else {
			_, err = p.kv.Update(ctx, key, val, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another caller counted first: read again
		}
		if err != nil {
			return 0, false, fmt.Errorf("count dial: %w", err)
		}
		return 0, true, nil
	}
	return 100 * time.Millisecond, false, nil
}
