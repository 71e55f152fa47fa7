package caller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dnc"
)

// PausedRecheck is how long a request of a paused campaign stays parked
// before a caller looks at the campaign again.
//
// A paused request is parked, not handed back with a delay: JetStream counts
// a request nak'd with a delay among the consumer's pending acknowledgements
// (caller.fleet_max_in_flight, the consumer's MaxAckPending), so a paused
// campaign with more queued requests than that would hold every other
// campaign of the shared queue. Parked, the request is a message schedule on
// its contact's re-queue subject (the same place the dispatcher stores a
// re-queue), which the server publishes back on the campaign's subject when
// due, and the original is acknowledged: it holds no slot of the window
// meanwhile, survives any caller, and the dispatcher, which counts stored
// schedules as requests out, neither re-sends nor takes it for lost. A
// contact has at most one attempt out, so its re-queue subject is free while
// its request is parked.
const PausedRecheck = 2 * time.Second

// Reasons on the terminal events of calls the gate ends.
const (
	ReasonCancelled  = "campaign_cancelled"
	ReasonDoNotCall  = "do_not_call"
	reasonPausedWait = "campaign paused"
)

// errPaused hands back the request of a paused campaign.
var errPaused = errors.New("campaign paused")

// errPaced hands back a request over its campaign's pacing limits.
var errPaced = errors.New("campaign pacing limit reached")

// gates are what the caller asks right before it dials a contact.
type gates struct {
	control *control.Store
	dnc     *dnc.List
	pacer   *control.Pacer
}

func openGates(ctx context.Context, conn *bus.Conn) (gates, error) {
	ctl, err := control.Open(ctx, conn)
	if err != nil {
		return gates{}, err
	}
	list, err := dnc.Open(ctx, conn)
	if err != nil {
		return gates{}, err
	}
	pacer, err := control.OpenPacer(ctx, conn)
	if err != nil {
		return gates{}, err
	}
	return gates{control: ctl, dnc: list, pacer: pacer}, nil
}

// gate decides whether req may be dialled now, read fresh from the buckets
// for every contact, so that what an operator says reaches every caller
// before its next dial. It returns the terminal event of a contact that must
// not be rung (suppressed, cancelled), or an error that hands the request
// back (paused, paced, bus trouble: never dial unchecked), or, when the dial
// may go ahead, the release of the pacing slot it holds (call it once the
// call has ended).
func (c *Caller) gate(ctx context.Context, req *events.CallRequest, admit bool) (*events.Call, func(), error) {
	none := func() {}
	listed, err := c.gates.dnc.Contains(ctx, req.Phone)
	if err != nil {
		return nil, none, err
	}
	if listed {
		return &events.Call{Outcome: events.CallSuppressed, Reason: ReasonDoNotCall,
			Message: "the number is on the do-not-call list"}, none, nil
	}
	ctl, err := c.gates.control.Get(ctx, req.Campaign)
	if err != nil {
		return nil, none, err
	}
	switch ctl.Effective() {
	case control.Cancelled:
		return &events.Call{Outcome: events.CallCancelled, Reason: ReasonCancelled,
			Message: fmt.Sprintf("campaign %s was cancelled before the contact was rung", req.Campaign)}, none, nil
	case control.Paused:
		return nil, none, fmt.Errorf("call %s: %w", req.CallID, errPaused)
	}
	if !admit {
		return nil, none, nil
	}
	release, wait, ok, err := c.gates.pacer.Admit(ctx, ctl, req.CallID)
	if err != nil {
		return nil, none, err
	}
	if !ok {
		return nil, none, bus.Retry(fmt.Errorf("call %s: %w", req.CallID, errPaced), wait)
	}
	return nil, release, nil
}

// park stores the request of a paused campaign as a message schedule due in
// PausedRecheck, on its contact's re-queue subject, targeting the campaign's
// subject. The message id is the attempt's and the delivered message's stream
// sequence: distinct for every parking (a schedule that fired is a new
// message), so the stream's duplicate window never drops one, yet the same
// for a redelivery of one message (this caller died between parking and
// acknowledging), which the stream then stores once.
func (c *Caller) park(ctx context.Context, m *bus.Msg, req *events.CallRequest) error {
	if err := events.ValidToken(req.ContactID); err != nil {
		return fmt.Errorf("park call %s: contact id: %w", req.CallID, err)
	}
	// The schedule's time is the stream's (wall) clock, in whole seconds:
	// round up, never fire early.
	at := time.Now().Add(PausedRecheck)
	if t := at.Truncate(time.Second); !t.Equal(at) {
		at = t.Add(time.Second)
	}
	id := fmt.Sprintf("%s.park.%d", req.ID, m.StreamSeq)
	_, err := c.conn.PublishMsg(ctx, events.RequeueSubject(req.Campaign, req.ContactID), id, m.Data,
		jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(events.DispatchSubject(req.Campaign)))
	if err != nil {
		return fmt.Errorf("park call %s: %w", req.CallID, err)
	}
	return nil
}
