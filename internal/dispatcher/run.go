package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/resilience"
)

// defaultDupWindow is the bus's default duplicate window, used when the CALLS
// stream does not say.
const defaultDupWindow = 2 * time.Minute

// run is one Run or Publish: the contacts it was given and the campaign state
// it watches.
type run struct {
	*Dispatcher
	clock    resilience.Clock
	subject  string
	order    []string // contact ids in file order
	contacts map[string]contacts.Contact
	locs     map[string]*time.Location
	progress *progress

	calls     jetstream.Stream
	cons      jetstream.Consumer
	dupWindow time.Duration

	mu    sync.Mutex
	view  map[string]*entry // contact id -> latest known state
	tally tally             // statuses of this run's contacts
	wake  chan struct{}
	// dirty holds this run's contacts whose state changed since the last
	// pass looked at them: a pass after a change looks at these alone.
	dirty map[string]struct{}

	index map[string]int // contact id -> position in order
	// deadline is when a contact left alone since the last full pass needs
	// one (a retry or calling window due, an attempt to check for loss).
	deadline      time.Time
	lastReconcile time.Time

	ctl controlView // pause, resume, cancel (control.go)
}

type entry struct {
	st  *ContactState
	rev uint64
}

func (d *Dispatcher) newRun(list []contacts.Contact) (*run, error) {
	r := &run{
		Dispatcher: d,
		clock:      d.set.Clock,
		subject:    events.DispatchSubject(d.set.Campaign),
		contacts:   make(map[string]contacts.Contact, len(list)),
		locs:       map[string]*time.Location{},
		view:       map[string]*entry{},
		dirty:      map[string]struct{}{},
		index:      make(map[string]int, len(list)),
		dupWindow:  defaultDupWindow,
		wake:       make(chan struct{}, 1),
	}
	for _, c := range list {
		if contacts.SafeID(c.ID) != c.ID {
			return nil, fmt.Errorf("contact on line %d: id %q is not safe for keys (use contacts.SafeID)", c.Line, c.ID)
		}
		if _, dup := r.contacts[c.ID]; dup {
			return nil, fmt.Errorf("contact on line %d: id %q given twice", c.Line, c.ID)
		}
		zone := c.Timezone
		if zone == "" {
			zone = d.set.DefaultTimezone
			c.Timezone = zone
		}
		if _, ok := r.locs[zone]; !ok {
			loc, err := time.LoadLocation(zone)
			if err != nil {
				return nil, fmt.Errorf("contact on line %d: time zone: %w", c.Line, err)
			}
			r.locs[zone] = loc
		}
		r.contacts[c.ID] = c
		r.index[c.ID] = len(r.order)
		r.order = append(r.order, c.ID)
	}
	r.tally.total = len(r.order)
	r.progress = newProgress(d.set.Progress, d.set.ProgressMode, r.clock, r.tally.total, d.set.MaxAttempts)
	return r, nil
}

// register adds the contacts the campaign does not know yet. Contacts it
// already has keep their state: that is what makes a re-run harmless. It runs
// once the watcher has loaded the campaign's state, so only new contacts are
// written, concurrently.
func (r *run) register(ctx context.Context) error {
	now := r.clock.Now().UTC()
	var missing []string
	r.mu.Lock()
	for _, id := range r.order {
		if r.view[id] == nil {
			missing = append(missing, id)
		}
	}
	r.mu.Unlock()
	err := parallel(len(missing), stateWriters, func(i int) error {
		id := missing[i]
		c := r.contacts[id]
		st := &ContactState{
			Campaign:    r.set.Campaign,
			ContactID:   id,
			Contact:     c.Masked(),
			Line:        c.Line,
			Status:      StatusPending,
			MaxAttempts: r.set.MaxAttempts,
			CreatedAt:   now,
			UpdatedAt:   now,
		}
		key := Key(r.set.Campaign, id)
		rev, err := r.store.create(ctx, key, st)
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another dispatcher of the campaign added it a moment ago: take
			// its state rather than wait for the watcher to bring it.
			st, rev, err = r.store.get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil // and deleted since: nothing to dispatch
			}
		}
		if err != nil {
			return fmt.Errorf("register contact %s: %w", id, err)
		}
		r.observe(st, rev)
		return nil
	})
	if err != nil {
		return err
	}
	r.log.Debug("contacts registered", "new", len(missing), "known", len(r.order)-len(missing))
	return nil
}

// watch feeds the bucket's changes to the view until the watcher stops.
func (r *run) watch(w jetstream.KeyWatcher, ready chan<- struct{}) {
	initial := true
	for e := range w.Updates() {
		if e == nil {
			if initial {
				initial = false
				close(ready)
			}
			continue
		}
		if e.Operation() != jetstream.KeyValuePut || r.known(e.Key(), e.Revision()) {
			continue
		}
		st, err := decodeState(e.Value())
		if err != nil {
			r.log.Warn("unreadable contact state", "key", e.Key(), "err", err)
			continue
		}
		r.observe(st, e.Revision())
	}
}

// known reports whether the view has key at rev or later: most of what the
// watcher brings are this process's own writes, already observed.
func (r *run) known(key string, rev uint64) bool {
	id, ok := strings.CutPrefix(key, r.set.Campaign+".")
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.view[id]
	return e != nil && e.rev >= rev
}

// observe records a state at a revision, unless a newer one is known, and
// reports the change.
func (r *run) observe(st *ContactState, rev uint64) {
	if st == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.view[st.ContactID]
	if old != nil && old.rev >= rev {
		return
	}
	r.view[st.ContactID] = &entry{st: st, rev: rev}
	if _, ours := r.contacts[st.ContactID]; ours {
		var prev *ContactState
		if old != nil {
			prev = old.st
		}
		r.tally.move(prev, st)
		r.progress.change(prev, st, r.tally)
		r.dirty[st.ContactID] = struct{}{}
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *run) state(id string) (*ContactState, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.view[id]
	if e == nil {
		return nil, 0
	}
	return e.st, e.rev
}

// update applies change to the contact's latest known state and writes it
// over that state's revision: no read, when the view is current. When the
// view has no state, or change finds nothing to do in it (the view may lag
// behind the bucket), or another writer got there first, it reads the bucket
// and applies change there (store.update). It returns what store.update does.
func (r *run) update(ctx context.Context, id string, change func(st *ContactState) bool) (*ContactState, uint64, bool, error) {
	key := Key(r.set.Campaign, id)
	if cur, rev := r.state(id); cur != nil {
		next := cur.clone()
		if change(next) {
			n, err := r.store.put(ctx, key, next, rev)
			if err == nil {
				r.observe(next, n)
				return next, n, true, nil
			}
			if !errors.Is(err, errConflict) {
				return nil, 0, false, err
			}
		}
	}
	st, rev, changed, err := r.store.update(ctx, key, change)
	if err == nil && changed {
		r.observe(st, rev)
	}
	return st, rev, changed, err
}

// takeDirty returns the contacts changed since the last call, in file order.
func (r *run) takeDirty() []string {
	r.mu.Lock()
	ids := make([]string, 0, len(r.dirty))
	for id := range r.dirty {
		ids = append(ids, id)
	}
	clear(r.dirty)
	r.mu.Unlock()
	slices.SortFunc(ids, func(a, b string) int { return r.index[a] - r.index[b] })
	return ids
}

func (r *run) snapshotTally() tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tally
}

func (r *run) finished() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tally.terminal() == r.tally.total
}

// handle applies one call event of the bus to the campaign state.
func (r *run) handle(ctx context.Context, m *bus.Msg) error {
	ev, err := events.DecodeAs[*events.Call](m.Data)
	if err != nil {
		return err
	}
	if ev.Campaign != r.set.Campaign || ev.CallID == "" || contacts.SafeID(ev.ContactID) != ev.ContactID {
		return nil // another campaign's call, or one no dispatcher of ours sent
	}
	now := r.clock.Now()
	_, _, _, err = r.update(ctx, ev.ContactID, func(st *ContactState) bool {
		return r.policy.apply(st, ev, now)
	})
	return err
}

// follow dispatches and re-queues until every contact is done or ctx ends.
func (r *run) follow(ctx context.Context) error {
	for {
		// A change wakes a pass over the changed contacts; time passing, one
		// over them all.
		full := !r.clock.Now().Before(r.deadline)
		wait, err := r.pass(ctx, full)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Warn("dispatch pass failed; will retry", "err", err)
			wait = min(wait, time.Second)
		}
		if r.finished() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake:
		case <-r.clock.After(wait):
		}
	}
}

// once reads the outcomes already on the bus, then makes one pass.
func (r *run) once(ctx context.Context) error {
	if err := r.catchUp(ctx); err != nil {
		r.log.Warn("outcomes not fully read before publishing", "err", err)
	}
	_, err := r.pass(ctx, true)
	return err
}

// catchUp waits until the outcome consumer has handled every outcome stored so far.
func (r *run) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.set.CatchUpTimeout)
	defer cancel()
	for {
		ok, err := r.caughtUp(ctx)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *run) caughtUp(ctx context.Context) (bool, error) {
	ci, err := r.cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("outcome consumer info: %w", err)
	}
	return ci.NumPending == 0 && ci.NumAckPending == 0, nil
}

// pass publishes every contact that is due, re-sends requests whose publish
// did not complete, and looks for lost requests: among all the contacts when
// full, or else among those changed since the last pass. It returns how long
// to wait before the next pass if nothing else happens.
func (r *run) pass(ctx context.Context, full bool) (time.Duration, error) {
	now := r.clock.Now()
	ids := r.takeDirty()
	if full {
		ids = r.order
	}
	wait := time.Hour
	stale := false
	var jobs []sendJob
	for _, id := range ids {
		st, _ := r.state(id)
		if st == nil {
			continue
		}
		switch {
		case st.due(now):
			jobs = append(jobs, sendJob{id: id, due: true})
		case st.requeueDue(now):
			jobs = append(jobs, sendJob{id: id, requeue: true})
		case st.scheduled() != nil:
			// The stream publishes it when due; this process only re-sends a
			// schedule whose publish did not complete, and looks for a
			// request lost after it should have fired.
			a := st.scheduled()
			switch age, late := now.Sub(a.QueuedAt), now.Sub(*a.ScheduledAt); {
			case a.PublishedAt == nil && age < r.dupWindow/2:
				jobs = append(jobs, sendJob{id: id, attempt: a.Attempt, at: *a.ScheduledAt})
			case late >= r.dupWindow:
				stale = true
			default:
				wait = min(wait, r.dupWindow-late)
			}
		case st.Status.waiting():
			wait = min(wait, st.NextAttemptAt.Sub(now))
		case st.Status.inFlight():
			a := st.last()
			if a == nil || a.done() {
				continue
			}
			age := now.Sub(a.QueuedAt)
			switch {
			case a.PublishedAt == nil && age < r.dupWindow/2:
				// A publish that did not complete, here or in another
				// dispatcher: the same message id is deduplicated if it did.
				jobs = append(jobs, sendJob{id: id, attempt: a.Attempt})
			case age >= r.dupWindow:
				stale = true
			default:
				wait = min(wait, r.dupWindow-age)
			}
		}
	}
	jobs, gateErr := r.gateJobs(ctx, ids, jobs, now)
	if gateErr != nil {
		r.deadline = minTime(r.deadline, now.Add(time.Second))
		return time.Second, gateErr
	}
	if full {
		r.deadline = now.Add(wait)
	} else {
		r.deadline = minTime(r.deadline, now.Add(wait))
	}
	if err := r.send(ctx, jobs, now); err != nil {
		r.deadline = minTime(r.deadline, now.Add(time.Second))
		return time.Second, err
	}
	if stale {
		r.deadline = minTime(r.deadline, now.Add(r.set.ReconcileInterval))
		if now.Sub(r.lastReconcile) >= r.set.ReconcileInterval {
			r.lastReconcile = now
			if err := r.reconcile(ctx, now); err != nil {
				return max(r.deadline.Sub(now), 0), err
			}
		}
	}
	return max(r.deadline.Sub(now), 0), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (r *run) reject(ctx context.Context, id string, attempt int, cause error) error {
	r.log.Error("call request rejected", "contact_id", id, "err", cause)
	now := r.clock.Now().UTC()
	callID := CallID(r.set.Campaign, id, attempt)
	_, _, _, err := r.update(ctx, id, func(st *ContactState) bool {
		a := st.attempt(callID)
		if a == nil || a.done() {
			return false
		}
		a.Outcome, a.Reason, a.EndedAt = events.CallFailed, "invalid request", &now
		st.finish(StatusFailed, "invalid request: "+cause.Error())
		return true
	})
	return err
}

// reconcile looks for requests that left the queue without an outcome: a
// caller that terminated one, a stream purged by an operator. It acts only
// when that is certain: the campaign has no request left on CALLS (a work
// queue keeps each one until a caller acknowledges it, which callers do only
// after publishing the outcome), every outcome stored so far has been read,
// and the attempt is older than the duplicate window (so no publish of it can
// still be on its way). Then the attempt is recorded as lost and the contact
// gets its next attempt, never the same one again.
func (r *run) reconcile(ctx context.Context, now time.Time) error {
	if r.ctl.get().Effective() == control.Paused {
		// The callers park the campaign's requests back and forth between
		// the queue and schedules: nothing is certain until it resumes.
		return nil
	}
	// A schedule still stored has not fired: its attempt is not lost. The
	// schedules are read first: the server stores a fired request and purges
	// its schedule in one step, so a schedule missing here has its request
	// on the campaign's subject by the time that is read below.
	prefix := events.RequeueSubject(r.set.Campaign, "")
	info, err := r.calls.Info(ctx, jetstream.WithSubjectFilter(RequeueFilter(r.set.Campaign)))
	if err != nil {
		return fmt.Errorf("stream %s info: %w", events.StreamCalls, err)
	}
	stored := info.State.Subjects
	info, err = r.calls.Info(ctx, jetstream.WithSubjectFilter(r.subject))
	if err != nil {
		return fmt.Errorf("stream %s info: %w", events.StreamCalls, err)
	}
	if info.State.Subjects[r.subject] > 0 {
		return nil
	}
	ok, err := r.caughtUp(ctx)
	if err != nil || !ok {
		return err
	}
	// A caller parks a paused campaign's request as a schedule again
	// (caller.PausedRecheck): read the schedules once more, so one that moved
	// from the campaign's subject back to a schedule between the two reads
	// above is not taken for lost. It next fires seconds later, long after
	// these reads.
	info, err = r.calls.Info(ctx, jetstream.WithSubjectFilter(RequeueFilter(r.set.Campaign)))
	if err != nil {
		return fmt.Errorf("stream %s info: %w", events.StreamCalls, err)
	}
	for subj, n := range info.State.Subjects {
		stored[subj] += n
	}
	for _, id := range r.order {
		st, _ := r.state(id)
		if st == nil || stored[prefix+id] > 0 {
			continue
		}
		a := st.pending()
		if a == nil || now.Sub(sentAt(a)) < r.dupWindow {
			continue
		}
		callID := a.CallID
		_, _, changed, err := r.update(ctx, id, func(st *ContactState) bool {
			a := st.pending()
			if a == nil || a.CallID != callID {
				return false
			}
			r.policy.lose(st, now)
			return true
		})
		if err != nil {
			return err
		}
		if changed {
			r.log.Warn("call request lost; next attempt scheduled", "contact_id", id, "call_id", callID)
		}
	}
	return nil
}

// sentAt is when an attempt's request went on the queue: when it was
// queued, or when its schedule fired.
func sentAt(a *Attempt) time.Time {
	if a.ScheduledAt != nil && a.ScheduledAt.After(a.QueuedAt) {
		return *a.ScheduledAt
	}
	return a.QueuedAt
}

// summary reports this run's contacts in file order.
func (r *run) summary() *Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := make([]ContactState, 0, len(r.order))
	for _, id := range r.order {
		if e := r.view[id]; e != nil {
			list = append(list, *e.st)
		}
	}
	return newSummary(r.set.Campaign, list)
}

// loadCampaign returns the campaign's record, creating it on first use.
func loadCampaign(ctx context.Context, kv jetstream.KeyValue, name string, now time.Time) (*Campaign, error) {
	c := &Campaign{Name: name, CreatedAt: now.UTC()}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	_, err = kv.Create(ctx, name, data)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("create campaign %s: %w", name, err)
	}
	e, err := kv.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("campaign %s: %w", name, err)
	}
	if err := json.Unmarshal(e.Value(), c); err != nil {
		return nil, fmt.Errorf("campaign %s: %w", name, err)
	}
	return c, nil
}
