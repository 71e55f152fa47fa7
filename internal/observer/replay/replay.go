// Package replay re-derives a past window of the EVENTS stream for a
// post-mortem. It reads the window with an ephemeral ordered consumer, which
// leaves the live durable consumers alone, runs the same status and alert
// rules as the live observer on the events' own time, and builds the report.
// It publishes nothing: the alerts it derives are returned, and handed to a
// sink only when asked to.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/report"
	"github.com/callagent/agent/internal/observer/rules"
)

// DefaultSlack is how much earlier than its time an event may be stored
// (clock skew between hosts) and how much later (publish delays, a caller
// catching up after a network partition). The stream is read by store time
// from From minus the slack to To plus the slack; the window itself is
// chosen by each event's own time.
const DefaultSlack = 5 * time.Minute

// ErrNoDeliverer is returned when a sink to deliver to is named but there is
// nothing to deliver with.
var ErrNoDeliverer = errors.New("replay: no delivery manager to deliver with")

// Deliverer hands derived alerts to one sink (the delivery manager).
type Deliverer interface {
	DeliverTo(ctx context.Context, sink string, alerts []*events.Alert) error
}

// Options describe one replay.
type Options struct {
	// From and To bound the window by event time, both inclusive.
	From, To time.Time
	Rules    config.Rules
	// Slack: see DefaultSlack; zero means the default.
	Slack time.Duration
	// TimelineLimit caps the report's timeline; see report.New.
	TimelineLimit int
	// DeliverTo, if set, names the sink the derived alerts are delivered to
	// with Deliverer. Empty: delivery off.
	DeliverTo string
	Deliverer Deliverer
	Log       *slog.Logger
}

// Result is what a replay derived.
type Result struct {
	Report   *report.Report
	Alerts   []*events.Alert
	Statuses []*events.Status
	// Skipped counts malformed messages left out.
	Skipped int
}

// Source is where a replay reads the EVENTS stream: an ordered consumer,
// which disturbs no durable one (a *bus.Conn).
type Source interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// Run replays the window from src's EVENTS stream.
func Run(ctx context.Context, src Source, opts Options) (*Result, error) {
	if opts.To.Before(opts.From) {
		return nil, fmt.Errorf("replay: window ends (%s) before it starts (%s)", opts.To.Format(time.RFC3339), opts.From.Format(time.RFC3339))
	}
	if opts.DeliverTo != "" && opts.Deliverer == nil {
		return nil, ErrNoDeliverer
	}
	if opts.Slack <= 0 {
		opts.Slack = DefaultSlack
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	start := opts.From.Add(-opts.Slack)
	cons, err := src.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.CallAll, events.AttemptAll, events.RetryAll, events.BreakerAll, events.HealthAll},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return nil, fmt.Errorf("replay: read %s: %w", events.StreamEvents, err)
	}
	d := newDeriver(opts)
	if err := read(ctx, cons, opts, d); err != nil {
		return nil, err
	}
	res := d.finish()
	if opts.DeliverTo != "" && len(res.Alerts) > 0 {
		if err := opts.Deliverer.DeliverTo(ctx, opts.DeliverTo, res.Alerts); err != nil {
			return res, fmt.Errorf("replay: deliver to %s: %w", opts.DeliverTo, err)
		}
	}
	return res, nil
}

// read feeds d the window's events until the stream is exhausted or a
// message stored past the window (plus slack) is reached.
func read(ctx context.Context, cons jetstream.Consumer, opts Options, d *deriver) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if info.NumPending == 0 {
		return nil
	}
	stop := opts.To.Add(opts.Slack)
	// The client keeps readAhead messages requested ahead of the one being
	// derived, so the window streams in while it is read rather than one
	// fetch round trip per batch.
	it, err := cons.Messages(jetstream.PullMaxMessages(readAhead))
	if err != nil {
		return fmt.Errorf("replay: read: %w", err)
	}
	defer it.Stop()
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg, err := it.Next(jetstream.NextMaxWait(endWait))
		switch {
		case errors.Is(err, nats.ErrTimeout):
			return nil // nothing more within the wait: the end of the stream
		case err != nil:
			return fmt.Errorf("replay: read: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		if md.Timestamp.After(stop) {
			return nil
		}
		ev, err := events.Decode(msg.Data())
		if err != nil {
			d.skipped++
			opts.Log.Warn("skipping malformed event", "seq", md.Sequence.Stream, "subject", msg.Subject(), "err", err)
		} else if t := ev.Head().Time; !t.Before(opts.From) && !t.After(opts.To) {
			d.add(ev)
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}

// How read pulls the window: messages requested ahead, and how long a
// silence ends the stream.
const (
	readAhead = 1000
	endWait   = 2 * time.Second
)

// deriver runs the rules and the report side by side.
type deriver struct {
	opts   Options
	engine *rules.Engine
	report *report.Builder
	res    Result
	// skipped counts malformed messages.
	skipped int
}

func newDeriver(opts Options) *deriver {
	return &deriver{opts: opts, engine: rules.New(opts.Rules), report: report.New(opts.From, opts.To, opts.TimelineLimit)}
}

func (d *deriver) add(ev events.Event) {
	// What falls due before the event is reported before it.
	d.outputs(d.engine.Advance(ev.Head().Time))
	d.report.Add(ev)
	d.outputs(d.engine.Apply(ev))
}

func (d *deriver) outputs(outs []rules.Output) {
	for _, o := range outs {
		var ev events.Event
		switch {
		case o.Alert != nil:
			ev = o.Alert
			d.res.Alerts = append(d.res.Alerts, o.Alert)
		case o.Status != nil:
			ev = o.Status
			d.res.Statuses = append(d.res.Statuses, o.Status)
		}
		events.Stamp(ev, "replay", time.Time{})
		d.report.Add(ev)
	}
}

func (d *deriver) finish() *Result {
	d.outputs(d.engine.Advance(d.opts.To))
	d.res.Report = d.report.Report()
	d.res.Skipped = d.skipped
	return &d.res
}
