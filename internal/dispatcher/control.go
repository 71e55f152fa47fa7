package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/control"
)

// reasonCancelled is the last reason of a contact the campaign's cancel
// ended before it had a request out.
const reasonCancelled = "campaign cancelled"

// controlView is the campaign's control record as the watcher last saw it.
type controlView struct {
	mu sync.Mutex
	c  control.Control
}

func (v *controlView) get() control.Control {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.c
}

// watchControl follows the campaign's control record (pause, resume,
// cancel) until ctx ends, and returns once the current one is known. A
// change makes the next pass look at every contact.
func (r *run) watchControl(ctx context.Context) error {
	store, err := control.Open(ctx, r.conn)
	if err != nil {
		return err
	}
	w, err := store.KV().Watch(ctx, r.set.Campaign)
	if err != nil {
		return fmt.Errorf("watch campaign control: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			c := control.Control{Campaign: r.set.Campaign, State: control.Running}
			if e.Operation() == jetstream.KeyValuePut {
				var err error
				if c, err = control.Decode(e.Value()); err != nil {
					r.log.Warn("unreadable campaign control record", "err", err)
					continue
				}
			}
			r.ctl.mu.Lock()
			r.ctl.c = c
			r.ctl.mu.Unlock()
			r.log.Info("campaign control", "state", c.Effective(), "max_calls_per_second", c.MaxCallsPerSecond, "max_concurrent_calls", c.MaxConcurrentCalls)
			r.touchAll()
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// touchAll marks every contact of the run changed and wakes the follower.
func (r *run) touchAll() {
	r.mu.Lock()
	for _, id := range r.order {
		r.dirty[id] = struct{}{}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// gateJobs applies the campaign's control to a pass's jobs. Paused: no new
// attempt is queued or scheduled (a request already promised is still
// published: callers hold it until the campaign resumes). Cancelled: no new
// attempt either, and every contact among ids waiting with no request out
// ends cancelled, including one whose re-queue is stored as a schedule (see
// cancelWaiting).
func (r *run) gateJobs(ctx context.Context, ids []string, jobs []sendJob, now time.Time) ([]sendJob, error) {
	state := r.ctl.get().Effective()
	if state == control.Running {
		return jobs, nil
	}
	kept := jobs[:0]
	for _, j := range jobs {
		if !j.due && !j.requeue {
			kept = append(kept, j)
		}
	}
	if state == control.Cancelled {
		return kept, r.cancelWaiting(ctx, ids, now)
	}
	return kept, nil
}

// cancelWaiting ends cancelled the contacts among ids that wait, with no
// request on the queue. A contact whose next attempt is stored as a message
// schedule ends cancelled too, with that attempt: when the schedule fires, a
// caller finds the campaign cancelled and acknowledges the request without
// ringing anyone, and its cancelled outcome finds the attempt done already.
//
// Only once every outcome stored so far is read: a schedule that fired and
// whose caller got past its last check before the cancel has published its
// started event by then, and that contact is in progress, not waiting (its
// call finishes).
func (r *run) cancelWaiting(ctx context.Context, ids []string, now time.Time) error {
	var todo []string
	for _, id := range ids {
		if st, _ := r.state(id); st != nil && st.Status.waiting() {
			todo = append(todo, id)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := r.catchUp(ctx); err != nil {
		return fmt.Errorf("read outcomes before cancelling: %w", err)
	}
	return parallel(len(todo), stateWriters, func(i int) error {
		_, _, _, err := r.update(ctx, todo[i], func(st *ContactState) bool {
			return cancelContact(st, now, true)
		})
		return err
	})
}

// cancelContact ends a waiting contact cancelled. withSchedule also ends one
// whose attempt is stored as a schedule.
func cancelContact(st *ContactState, now time.Time, withSchedule bool) bool {
	if !st.Status.waiting() {
		return false
	}
	at := now.UTC()
	if a := st.scheduled(); a != nil {
		if !withSchedule {
			return false
		}
		a.Outcome, a.Reason, a.EndedAt = events.CallCancelled, reasonCancelled, &at
	}
	st.UpdatedAt = at
	st.finish(StatusCancelled, reasonCancelled)
	return true
}

// CancelWaiting ends cancelled every contact of the campaign that waits for
// an attempt with no request out (pending, postponed, skipped), for
// `dispatcher cancel` when no dispatcher follows the campaign. Contacts with
// a request on the queue, or a re-queue stored as a schedule, are left to
// the callers, which end them cancelled when they take the request, and to
// the dispatcher that follows the campaign next. The campaign must already be
// cancelled in the control bucket. It returns how many contacts it ended.
func CancelWaiting(ctx context.Context, kv jetstream.KeyValue, campaign string, now time.Time) (int, error) {
	lister, err := kv.ListKeysFiltered(ctx, campaign+".*")
	if err != nil {
		return 0, fmt.Errorf("list campaign %s: %w", campaign, err)
	}
	var keys []string
	seen := map[string]bool{}
	for k := range lister.Keys() {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	s := store{kv: kv}
	var mu sync.Mutex
	n := 0
	err = parallel(len(keys), stateWriters, func(i int) error {
		_, _, changed, err := s.update(ctx, keys[i], func(st *ContactState) bool {
			return cancelContact(st, now, false)
		})
		if changed {
			mu.Lock()
			n++
			mu.Unlock()
		}
		return err
	})
	return n, err
}
