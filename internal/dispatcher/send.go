package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
)

// Sending is pipelined over a window of contacts, because one round trip at
// a time to the state bucket and the stream is what bounded a campaign's
// rate. The order of the three steps of each contact is what keeps anyone
// from being called twice, and it is kept: the state records the attempt as
// queued before its request is published (a crash in between leaves an
// attempt that is re-sent under the same message id, or found lost, never a
// second attempt for a call that may have been placed), and the stream's
// confirmation is recorded after. Within a window the state writes run
// concurrently, and the requests go out asynchronously, in file order, on
// the one connection, so the stream stores them in that order.
const (
	// sendWindow is how many contacts are sent at a time: the bound on
	// requests awaiting the stream's confirmation.
	sendWindow = 256
	// stateWriters bounds the state writes in flight at once.
	stateWriters = 32
	// publishAckTimeout bounds the wait for the stream to confirm a request
	// published asynchronously; it is then published again, synchronously.
	publishAckTimeout = 10 * time.Second
)

// sendJob is one contact to send: a due contact gets its next attempt (or is
// postponed), a re-queued one gets its next attempt stored as a schedule, and
// an attempt already recorded as queued or scheduled is published again.
type sendJob struct {
	id string
	// attempt is the attempt to publish; 0 for none (yet).
	attempt int
	// due: record the contact's next attempt before publishing it.
	due bool
	// requeue: record the contact's next attempt as scheduled before
	// publishing its schedule.
	requeue bool
	// at is when the stream publishes a scheduled attempt's request; zero
	// publishes it at once.
	at time.Time
}

// send sends the jobs, in order, a window at a time. It stops at the first
// window that had an error.
func (r *run) send(ctx context.Context, jobs []sendJob, now time.Time) error {
	for len(jobs) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(jobs), sendWindow)
		if err := r.sendWindow(ctx, jobs[:n], now); err != nil {
			return err
		}
		jobs = jobs[n:]
	}
	return nil
}

func (r *run) sendWindow(ctx context.Context, jobs []sendJob, now time.Time) error {
	queueErr := parallel(len(jobs), stateWriters, func(i int) error {
		j := &jobs[i]
		var err error
		switch {
		case j.due:
			j.attempt, err = r.queue(ctx, j.id, now)
		case j.requeue:
			j.attempt, j.at, err = r.schedule(ctx, j.id, now)
		}
		return err
	})
	// Every attempt the state records as queued is published, even when some
	// other contact's write failed: this one is already promised.
	acked, pubErr := r.publishAll(ctx, jobs)
	at := r.clock.Now().UTC()
	markErr := parallel(len(jobs), stateWriters, func(i int) error {
		if !acked[i] {
			return nil
		}
		return r.markPublished(ctx, jobs[i].id, CallID(r.set.Campaign, jobs[i].id, jobs[i].attempt), at)
	})
	return errors.Join(queueErr, pubErr, markErr)
}

// queue records the next attempt of a due contact, or postpones it to its
// calling window, and returns the attempt to publish (0 for none).
func (r *run) queue(ctx context.Context, id string, now time.Time) (int, error) {
	c := r.contacts[id]
	local := now.In(r.locs[c.Timezone])
	open := r.window.Open(local)
	next := r.window.Next(local).UTC()
	attempt := 0
	_, _, _, err := r.update(ctx, id, func(st *ContactState) bool {
		attempt = 0
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
		attempt = st.Attempts
		callID := CallID(r.set.Campaign, id, attempt)
		st.Status, st.NextAttemptAt, st.LastCallID = StatusQueued, nil, callID
		st.History = append(st.History, Attempt{Attempt: attempt, CallID: callID, QueuedAt: now.UTC()})
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("queue contact %s: %w", id, err)
	}
	return attempt, nil
}

// schedule records the next attempt of a re-queued contact as scheduled for
// its retry time (moved to the opening of its calling window if the retry
// falls outside it), and returns the attempt whose schedule to publish (0 for
// none) and when it fires.
func (r *run) schedule(ctx context.Context, id string, now time.Time) (int, time.Time, error) {
	loc := r.locs[r.contacts[id].Timezone]
	attempt, at := 0, time.Time{}
	_, _, _, err := r.update(ctx, id, func(st *ContactState) bool {
		attempt = 0
		if !st.requeueDue(now) {
			return false
		}
		st.UpdatedAt = now.UTC()
		if st.Attempts >= r.set.MaxAttempts {
			st.finish(StatusExhausted, orDefault(st.LastReason, "max attempts reached"))
			return true
		}
		fire := r.window.Next(st.NextAttemptAt.In(loc)).UTC()
		st.Attempts++
		st.MaxAttempts = r.set.MaxAttempts
		attempt, at = st.Attempts, fire
		callID := CallID(r.set.Campaign, id, attempt)
		st.NextAttemptAt, st.LastCallID = &fire, callID
		st.History = append(st.History, Attempt{Attempt: attempt, CallID: callID, QueuedAt: now.UTC(), ScheduledAt: &fire})
		return true
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("schedule contact %s: %w", id, err)
	}
	return attempt, at, nil
}

// message is what publishing a request sends: the request itself on the
// campaign's subject, or, for a scheduled attempt, a message schedule on the
// contact's re-queue subject that the server turns into the request when due.
// Both carry the attempt's message id, so two dispatchers (or a re-send) store
// one. The schedule's time is wall-clock time, the stream's clock: the
// dispatcher's own (faked in tests) gives only the delay.
func (r *run) message(req *events.CallRequest, data []byte, at time.Time) (*nats.Msg, []jetstream.PublishOpt) {
	if at.IsZero() {
		return &nats.Msg{Subject: r.subject, Data: data, Header: nats.Header{}}, nil
	}
	wall := time.Now().Add(at.Sub(r.clock.Now()))
	if t := wall.Truncate(time.Second); !t.Equal(wall) {
		wall = t.Add(time.Second) // @at has whole seconds: never fire early
	}
	opts := []jetstream.PublishOpt{jetstream.WithScheduleAt(wall), jetstream.WithScheduleTarget(r.subject)}
	return &nats.Msg{Subject: events.RequeueSubject(r.set.Campaign, req.ContactID), Data: data, Header: nats.Header{}}, opts
}

// request is the call request of one attempt.
func (r *run) request(id string, attempt int) *events.CallRequest {
	c := r.contacts[id]
	return &events.CallRequest{
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
}

// inFlight is one request published asynchronously.
type inFlight struct {
	job  int
	req  *events.CallRequest
	data []byte
	at   time.Time
	fut  jetstream.PubAckFuture
	err  error
}

// publishAll publishes the jobs' requests in order without waiting for each
// confirmation, then collects the confirmations. A request whose
// confirmation failed or did not come is published again synchronously under
// the same message id, which the stream stores once whatever became of the
// first. It reports which jobs the stream confirmed.
func (r *run) publishAll(ctx context.Context, jobs []sendJob) ([]bool, error) {
	acked := make([]bool, len(jobs))
	var (
		first  error
		failed int
	)
	fail := func(err error) {
		if first == nil {
			first = err
		}
		failed++
	}
	flights := make([]inFlight, 0, len(jobs))
	for i, j := range jobs {
		if j.attempt == 0 {
			continue
		}
		req := r.request(j.id, j.attempt)
		data, err := events.EncodeRequest(req)
		if err != nil {
			// Only a contact that slipped past validation gets here; calling
			// it again cannot help.
			if err := r.reject(ctx, j.id, j.attempt, err); err != nil {
				fail(err)
			}
			continue
		}
		f := inFlight{job: i, req: req, data: data, at: j.at}
		msg, opts := r.message(req, data, j.at)
		f.fut, f.err = r.conn.PublishAsync(msg, req.ID, opts...)
		flights = append(flights, f)
	}

	wctx, cancel := context.WithTimeout(ctx, publishAckTimeout)
	defer cancel()
	for k := range flights {
		f := &flights[k]
		var ack *jetstream.PubAck
		if f.err == nil {
			select {
			case ack = <-f.fut.Ok():
			case f.err = <-f.fut.Err():
			case <-wctx.Done():
				f.err = fmt.Errorf("no confirmation from the stream: %w", wctx.Err())
			}
		}
		if f.err != nil && ctx.Err() == nil {
			r.log.Warn("publish call request; retrying", "contact_id", f.req.ContactID, "attempt", f.req.Attempt, "err", f.err)
			ack, f.err = r.publishSync(ctx, f.req, f.data, f.at)
		}
		if f.err != nil {
			fail(fmt.Errorf("publish call request %s: %w", f.req.ID, f.err))
			continue
		}
		if ack.Duplicate {
			r.log.Info("call request already on the queue", "contact_id", f.req.ContactID, "attempt", f.req.Attempt)
		}
		acked[f.job] = true
	}
	return acked, firstOf(first, failed)
}

// publishSync publishes one request and waits for the stream, retrying with
// a growing delay.
func (r *run) publishSync(ctx context.Context, req *events.CallRequest, data []byte, at time.Time) (*jetstream.PubAck, error) {
	var (
		ack *jetstream.PubAck
		err error
	)
	for try, delay := 0, 250*time.Millisecond; ; try, delay = try+1, delay*2 {
		msg, opts := r.message(req, data, at)
		ack, err = r.conn.PublishMsg(ctx, msg.Subject, req.ID, msg.Data, opts...)
		if err == nil || try == 4 || ctx.Err() != nil {
			return ack, err
		}
		r.log.Warn("publish call request; retrying", "contact_id", req.ContactID, "attempt", req.Attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

// markPublished records that the stream has the request of an attempt.
func (r *run) markPublished(ctx context.Context, id, callID string, at time.Time) error {
	_, _, _, err := r.update(ctx, id, func(st *ContactState) bool {
		a := st.attempt(callID)
		if a == nil || a.PublishedAt != nil {
			return false
		}
		a.PublishedAt = &at
		return true
	})
	return err
}

// parallel calls f for 0..n-1 with at most limit calls running at once. It
// returns the first error, and how many calls failed when more than one did
// (a bus that is down fails them all alike).
func parallel(n, limit int, f func(i int) error) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		first  error
		failed int
	)
	sem := make(chan struct{}, limit)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstOf(first, failed)
}

// firstOf reports the first of failed errors.
func firstOf(first error, failed int) error {
	if failed > 1 {
		return fmt.Errorf("%w (and %d more)", first, failed-1)
	}
	return first
}
