package dispatcher

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/dispatcher/contacts"
)

// A re-queue (the next attempt of a busy, unanswered or skipped contact) is
// not a timer in the dispatcher: it is a JetStream message schedule stored on
// CALLS under events.RequeueSubject(campaign, contact), one subject per
// contact, holding the attempt's full call request. When it is due the server
// publishes that request on events.DispatchSubject(campaign), where the
// callers take it, and purges the schedule in the same step; a new schedule
// on the subject replaces the old one (the server rolls the subject up). So a
// contact's pending re-queue is found, counted or deleted by its subject, with
// no dispatcher running. Callers consume agent.dispatch.> only, never the
// schedules.

// RequeueFilter is the subject filter of every stored re-queue of a campaign
// on CALLS.
func RequeueFilter(campaign string) string { return events.RequeueSubject(campaign, "*") }

// PendingRequeues returns the contacts of a campaign that have a re-queue
// stored on CALLS, not yet fired, in id order. A request a caller parked while
// the campaign is paused (caller.PausedRecheck) is stored the same way, on
// the same subject, and is listed too: its attempt is out, as a schedule.
func PendingRequeues(ctx context.Context, conn *bus.Conn, campaign string) ([]string, error) {
	calls, err := conn.Stream(ctx, events.StreamCalls)
	if err != nil {
		return nil, err
	}
	return pendingRequeues(ctx, calls, campaign)
}

func pendingRequeues(ctx context.Context, calls jetstream.Stream, campaign string) ([]string, error) {
	info, err := calls.Info(ctx, jetstream.WithSubjectFilter(RequeueFilter(campaign)))
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", events.StreamCalls, err)
	}
	prefix := events.RequeueSubject(campaign, "")
	var ids []string
	for _, subj := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		if id, ok := strings.CutPrefix(subj, prefix); ok && info.State.Subjects[subj] > 0 {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// PurgeRequeues deletes the stored re-queues of the given contacts of a
// campaign, or of all its contacts when no id is given, so they never fire.
// It returns the contacts that had one, in id order. It needs the purge
// permission on CALLS (nats.conf gives it to the dispatcher role).
//
// It does not touch the campaign state, and a dispatcher following the
// campaign would treat an attempt whose schedule vanished as a lost request
// (and re-queue it) once its time and the duplicate window have passed. A
// caller that pauses or cancels contacts therefore records that in their
// state first, then purges. A schedule that fires between the two is a
// request on the queue like any other: the returned list may name a contact
// whose request was published an instant before the purge; its call events
// say so. A paused campaign's parked request is such a stored schedule too:
// purged, its attempt is later taken for lost and gets the next attempt, so
// record a contact's end first here as well.
func PurgeRequeues(ctx context.Context, conn *bus.Conn, campaign string, contactIDs ...string) ([]string, error) {
	if err := events.ValidToken(campaign); err != nil {
		return nil, fmt.Errorf("campaign %q: %w", campaign, err)
	}
	for _, id := range contactIDs {
		if contacts.SafeID(id) != id {
			return nil, fmt.Errorf("contact id %q is not a subject token", id)
		}
	}
	calls, err := conn.Stream(ctx, events.StreamCalls)
	if err != nil {
		return nil, err
	}
	pending, err := pendingRequeues(ctx, calls, campaign)
	if err != nil {
		return nil, err
	}
	if len(contactIDs) == 0 {
		if len(pending) == 0 {
			return nil, nil
		}
		if err := calls.Purge(ctx, jetstream.WithPurgeSubject(RequeueFilter(campaign))); err != nil {
			return nil, fmt.Errorf("purge re-queues of %s: %w", campaign, err)
		}
		return pending, nil
	}
	var purged []string
	for _, id := range slices.Sorted(slices.Values(contactIDs)) {
		if !slices.Contains(pending, id) || slices.Contains(purged, id) {
			continue
		}
		if err := calls.Purge(ctx, jetstream.WithPurgeSubject(events.RequeueSubject(campaign, id))); err != nil {
			return purged, fmt.Errorf("purge re-queue of %s/%s: %w", campaign, id, err)
		}
		purged = append(purged, id)
	}
	return purged, nil
}
