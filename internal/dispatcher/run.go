package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/dispatcher/contacts"
)

// defaultDupWindow is the bus's default duplicate window, used when the CALLS
// stream does not say.
const defaultDupWindow = 2 * time.Minute

// run is one Run or Publish: the contacts it was given and the campaign state
// it watches.
type run struct {
	*Dispatcher
	clock    Clock
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

	lastReconcile time.Time
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
		r.order = append(r.order, c.ID)
	}
	r.tally.total = len(r.order)
	r.progress = newProgress(d.set.Progress, d.set.ProgressMode, r.clock, r.tally.total, d.set.MaxAttempts)
	return r, nil
}

// register adds the contacts the campaign does not know yet. Contacts it
// already has keep their state: that is what makes a re-run harmless.
func (r *run) register(ctx context.Context) error {
	now := r.clock.Now().UTC()
	added := 0
	for _, id := range r.order {
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
		_, err := r.store.create(ctx, Key(r.set.Campaign, id), st)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return fmt.Errorf("register contact %s: %w", id, err)
		}
		added++
	}
	r.log.Debug("contacts registered", "new", added, "known", len(r.order)-added)
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
		if e.Operation() != jetstream.KeyValuePut {
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
	st, rev, changed, err := r.store.update(ctx, Key(r.set.Campaign, ev.ContactID), func(st *ContactState) bool {
		return r.policy.apply(st, ev, now)
	})
	if err != nil {
		return err
	}
	if changed {
		r.observe(st, rev)
	}
	return nil
}

// follow dispatches and re-queues until every contact is done or ctx ends.
func (r *run) follow(ctx context.Context) error {
	for {
		wait, err := r.pass(ctx)
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
	_, err := r.pass(ctx)
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
// did not complete, and looks for lost requests. It returns how long to wait
// before the next pass if nothing else happens.
func (r *run) pass(ctx context.Context) (time.Duration, error) {
	now := r.clock.Now()
	wait := time.Hour
	stale := false
	for _, id := range r.order {
		if ctx.Err() != nil {
			return wait, ctx.Err()
		}
		st, _ := r.state(id)
		if st == nil {
			continue
		}
		switch {
		case st.due(now):
			if err := r.dispatch(ctx, id, now); err != nil {
				return time.Second, err
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
				if err := r.publish(ctx, id, a.Attempt); err != nil {
					return time.Second, err
				}
			case age >= r.dupWindow:
				stale = true
			default:
				wait = min(wait, r.dupWindow-age)
			}
		}
	}
	if stale {
		wait = min(wait, r.set.ReconcileInterval)
		if now.Sub(r.lastReconcile) >= r.set.ReconcileInterval {
			r.lastReconcile = now
			if err := r.reconcile(ctx, now); err != nil {
				return wait, err
			}
		}
	}
	return max(wait, 0), nil
}

// dispatch publishes the next attempt of a due contact, or postpones it to
// its calling window.
func (r *run) dispatch(ctx context.Context, id string, now time.Time) error {
	c := r.contacts[id]
	local := now.In(r.locs[c.Timezone])
	open := r.window.Open(local)
	next := r.window.Next(local).UTC()
	callID := ""
	st, rev, changed, err := r.store.update(ctx, Key(r.set.Campaign, id), func(st *ContactState) bool {
		callID = ""
		if !st.due(now) {
			return false
		}
		st.UpdatedAt = now.UTC()
		if !open {
			st.Status, st.NextAttemptAt = StatusPostponed, &next
			st.LastReason = fmt.Sprintf("outside calling window %s %s", r.window, c.Timezone)
			return true
		}
		if st.Attempts >= r.set.MaxAttempts {
			// The cap was lowered since this contact was re-queued.
			st.finish(StatusExhausted, orDefault(st.LastReason, "max attempts reached"))
			return true
		}
		st.Attempts++
		st.MaxAttempts = r.set.MaxAttempts
		callID = CallID(r.set.Campaign, id, st.Attempts)
		st.Status, st.NextAttemptAt, st.LastCallID = StatusQueued, nil, callID
		st.History = append(st.History, Attempt{Attempt: st.Attempts, CallID: callID, QueuedAt: now.UTC()})
		return true
	})
	if err != nil {
		return err
	}
	if !changed {
		return nil
	}
	r.observe(st, rev)
	if callID == "" {
		return nil
	}
	return r.publish(ctx, id, st.Attempts)
}

// publish sends the request of one attempt and records that the stream has
// it. The message id names the attempt, so sending it again is harmless
// inside the duplicate window, and that is all a retry here does.
func (r *run) publish(ctx context.Context, id string, attempt int) error {
	c := r.contacts[id]
	req := &events.CallRequest{
		ID:          MsgID(r.set.Campaign, id, attempt),
		Time:        r.clock.Now().UTC(),
		Source:      r.conn.Source,
		CallID:      CallID(r.set.Campaign, id, attempt),
		Campaign:    r.set.Campaign,
		ContactID:   id,
		Phone:       c.Phone,
		Name:        c.Name,
		Timezone:    c.Timezone,
		Vars:        c.Vars,
		Attempt:     attempt,
		MaxAttempts: r.set.MaxAttempts,
	}
	data, err := events.EncodeRequest(req)
	if err != nil {
		// Only a contact that slipped past validation gets here; calling it
		// again cannot help.
		return r.reject(ctx, id, attempt, err)
	}
	var ack *jetstream.PubAck
	for try, delay := 0, 250*time.Millisecond; ; try, delay = try+1, delay*2 {
		ack, err = r.conn.PublishMsg(ctx, r.subject, req.ID, data)
		if err == nil || try == 4 || ctx.Err() != nil {
			break
		}
		r.log.Warn("publish call request; retrying", "contact_id", id, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
	if err != nil {
		return fmt.Errorf("publish call request %s: %w", req.ID, err)
	}
	if ack.Duplicate {
		r.log.Info("call request already on the queue", "contact_id", id, "attempt", attempt)
	}
	now := r.clock.Now().UTC()
	st, rev, changed, err := r.store.update(ctx, Key(r.set.Campaign, id), func(st *ContactState) bool {
		a := st.attempt(req.CallID)
		if a == nil || a.PublishedAt != nil {
			return false
		}
		a.PublishedAt = &now
		return true
	})
	if err != nil {
		return err
	}
	if changed {
		r.observe(st, rev)
	}
	return nil
}

func (r *run) reject(ctx context.Context, id string, attempt int, cause error) error {
	r.log.Error("call request rejected", "contact_id", id, "err", cause)
	now := r.clock.Now().UTC()
	callID := CallID(r.set.Campaign, id, attempt)
	st, rev, changed, err := r.store.update(ctx, Key(r.set.Campaign, id), func(st *ContactState) bool {
		a := st.attempt(callID)
		if a == nil || a.done() {
			return false
		}
		a.Outcome, a.Reason, a.EndedAt = events.CallFailed, "invalid request", &now
		st.finish(StatusFailed, "invalid request: "+cause.Error())
		return true
	})
	if err == nil && changed {
		r.observe(st, rev)
	}
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
	info, err := r.calls.Info(ctx, jetstream.WithSubjectFilter(r.subject))
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
	for _, id := range r.order {
		st, _ := r.state(id)
		if st == nil || !st.Status.inFlight() {
			continue
		}
		a := st.last()
		if a == nil || a.done() || now.Sub(a.QueuedAt) < r.dupWindow {
			continue
		}
		callID := a.CallID
		nst, rev, changed, err := r.store.update(ctx, Key(r.set.Campaign, id), func(st *ContactState) bool {
			a := st.last()
			if a == nil || a.CallID != callID || a.done() || !st.Status.inFlight() {
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
			r.observe(nst, rev)
		}
	}
	return nil
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
