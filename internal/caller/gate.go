package caller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dnc"
)

// PausedRecheck is how long a request of a paused campaign waits on the
// queue before a caller looks at the campaign again. While it waits it counts
// against caller.fleet_max_in_flight (the server keeps a request handed back
// with a delay among those pending acknowledgement).
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
		return nil, none, bus.Retry(fmt.Errorf("call %s: %w", req.CallID, errPaused), PausedRecheck)
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
