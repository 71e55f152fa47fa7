package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// How the call requests reach the CALLS queue.
const (
	// DispatchFollow runs `dispatcher run`, which publishes every request and
	// follows the outcomes into the campaign state until the campaign ends.
	DispatchFollow = "follow"
	// DispatchNoFollow runs `dispatcher run --no-follow`: it publishes and
	// leaves, so the campaign state is not updated while the calls run.
	DispatchNoFollow = "no-follow"
	// DispatchDirect publishes the requests from the harness itself, as the
	// dispatcher would (same call ids, message ids and subject).
	DispatchDirect = "direct"
)

// Campaign is the campaign name of the generated contacts.
const Campaign = "load"

// CallsOptions configure RunCalls. Zero fields take the documented defaults.
type CallsOptions struct {
	Setup
	// Contacts is how many contacts the generated file holds. Default 10000,
	// at most MaxContacts.
	Contacts int
	// Callers is how many caller processes share the queue. Default 2.
	Callers int
	// Concurrency is caller.concurrency, calls one caller runs at once.
	// Default 32.
	Concurrency int
	// FleetMaxInFlight is caller.fleet_max_in_flight. Default
	// Callers*Concurrency, so that no caller waits for another's slots.
	FleetMaxInFlight int
	// Dispatch is DispatchDirect (default), DispatchFollow or DispatchNoFollow.
	Dispatch string
	// Timeout bounds the whole run after setup. Default 10m.
	Timeout time.Duration
	// Scenario is what the simulator plays; nil is a zero-latency healthy
	// one.
	Scenario *simulator.Scenario
	// CallerProfileDir, when set, has each caller write its CPU profile
	// there (caller-N.prof, from its start to its stop).
	CallerProfileDir string
	// KillLeaders, on a cluster (Setup.Cluster), kills with SIGKILL the
	// node leading CALLS once a fifth of the contacts have ended, restarts
	// it once a tenth more have, and when it has caught up kills the node
	// leading EVENTS.
	KillLeaders bool
}

// Kill is one node the run killed, and the stall it caused.
type Kill struct {
	Node, Stream string
	// At is when, from the start.
	At time.Duration
	// Stall is the longest time with no contact ending around the kill
	// (see Stall).
	Stall time.Duration
	at    time.Time
}

// Check reports the first option out of range, defaults applied.
func (o CallsOptions) Check() error {
	_, err := o.withDefaults()
	return err
}

func (o CallsOptions) withDefaults() (CallsOptions, error) {
	if o.Contacts == 0 {
		o.Contacts = 10000
	}
	if o.Callers == 0 {
		o.Callers = 2
	}
	if o.Concurrency == 0 {
		o.Concurrency = 32
	}
	if o.FleetMaxInFlight == 0 {
		o.FleetMaxInFlight = o.Callers * o.Concurrency
	}
	if o.Dispatch == "" {
		o.Dispatch = DispatchDirect
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	switch {
	case o.Contacts < 1 || o.Contacts > MaxContacts:
		return o, fmt.Errorf("contacts: %d: want 1 to %d", o.Contacts, MaxContacts)
	case o.Callers < 1:
		return o, fmt.Errorf("callers: %d: want at least 1", o.Callers)
	case o.Concurrency < 1:
		return o, fmt.Errorf("concurrency: %d: want at least 1", o.Concurrency)
	case o.FleetMaxInFlight < 1:
		return o, fmt.Errorf("fleet max in flight: %d: want at least 1", o.FleetMaxInFlight)
	case o.Timeout < 0:
		return o, errors.New("timeout must not be negative")
	}
	switch o.Dispatch {
	case DispatchFollow, DispatchNoFollow, DispatchDirect:
	default:
		return o, fmt.Errorf("dispatch %q: want %s, %s or %s", o.Dispatch, DispatchFollow, DispatchNoFollow, DispatchDirect)
	}
	return o, nil
}

// CallsReport is what RunCalls measured.
type CallsReport struct {
	Options CallsOptions
	// Contacts is how many contacts were dispatched.
	Contacts int
	// Terminal counts the terminal call events (completed, failed, skipped)
	// stored in EVENTS; Outcomes splits them by outcome.
	Terminal int
	Outcomes map[string]int
	// CallIDs is how many distinct call ids ended; more than Contacts means
	// contacts were re-queued (a skipped call gets a new attempt).
	CallIDs int
	// Duplicates counts terminal events beyond the first of a call id.
	Duplicates int
	// Missing counts contacts with no terminal event.
	Missing int
	// StreamTerminal is the terminal events EVENTS holds by its own subject
	// counts, a check on Terminal.
	StreamTerminal int
	// Wall is from the first request dispatched to the last terminal event
	// stored (by the stream's timestamps).
	Wall time.Duration
	// Published is when the last request was on the queue, from the start
	// (0 when the dispatcher follows: it does not say).
	Published time.Duration
	// DispatcherDone is when the following dispatcher exited, from the start.
	DispatcherDone time.Duration
	// MeanLatency is the mean time from a call's started event to its
	// terminal one (by the stream's timestamps), over the calls with both.
	MeanLatency time.Duration
	// Events is how many messages EVENTS stored during Wall.
	Events uint64
	// Callers' peak resident memory and CPU time.
	Callers []ProcStat
	// Dispatcher is the dispatcher's (empty with DispatchDirect); Harness
	// this process's, which runs the NATS server and the simulator.
	Dispatcher, Harness ProcStat
	// Incomplete says why the run ended before every contact had an outcome.
	Incomplete string
	// WorkDir is where the logs were (gone unless kept).
	WorkDir string
	// Kills are the nodes KillLeaders killed.
	Kills []Kill
}

// ProcStat is one process's figures.
type ProcStat struct {
	Name    string
	PeakRSS int64         // bytes; 0 when unknown
	CPU     time.Duration // user + system
}

func procStat(name string, st stack.Stats) ProcStat {
	return ProcStat{Name: name, PeakRSS: st.PeakRSS, CPU: st.CPU}
}

// OK reports whether every contact ended exactly once.
func (r *CallsReport) OK() bool {
	return r.Incomplete == "" && r.Missing == 0 && r.Duplicates == 0
}

// CallsPerSecond is contacts ended per second of wall time.
func (r *CallsReport) CallsPerSecond() float64 {
	return perSecond(float64(r.Contacts-r.Missing), r.Wall)
}

// EventsPerSecond is EVENTS messages stored per second of wall time.
func (r *CallsReport) EventsPerSecond() float64 { return perSecond(float64(r.Events), r.Wall) }

func perSecond(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// WriteText prints the report.
func (r *CallsReport) WriteText(w io.Writer) error {
	o := r.Options
	dispatch := map[string]string{
		DispatchFollow:   "dispatcher run (following outcomes)",
		DispatchNoFollow: "dispatcher run --no-follow",
		DispatchDirect:   "published by the harness",
	}[o.Dispatch]
	ew := &errWriter{w: w}
	ew.printf("calls: %d callers x concurrency %d (fleet_max_in_flight %d), requests: %s\n",
		o.Callers, o.Concurrency, o.FleetMaxInFlight, dispatch)
	ew.printf("  %-22s %d\n", "contacts", r.Contacts)
	ew.printf("  %-22s %d (completed %d, failed %d, skipped %d)\n", "terminal outcomes", r.Terminal,
		r.Outcomes[events.CallCompleted], r.Outcomes[events.CallFailed], r.Outcomes[events.CallSkipped])
	ew.printf("  %-22s %d\n", "  in EVENTS by subject", r.StreamTerminal)
	if r.CallIDs != r.Contacts {
		ew.printf("  %-22s %d\n", "call ids", r.CallIDs)
	}
	ew.printf("  %-22s %d\n", "duplicates", r.Duplicates)
	ew.printf("  %-22s %d\n", "missing", r.Missing)
	ew.printf("  %-22s %s\n", "wall time", r.Wall.Round(time.Millisecond))
	if r.Published > 0 {
		ew.printf("  %-22s %s\n", "all requests queued at", r.Published.Round(time.Millisecond))
	}
	if r.DispatcherDone > 0 {
		ew.printf("  %-22s %s\n", "dispatcher finished at", r.DispatcherDone.Round(time.Millisecond))
	}
	ew.printf("  %-22s %.1f\n", "calls/s", r.CallsPerSecond())
	if r.MeanLatency > 0 {
		ew.printf("  %-22s %s\n", "mean call latency", r.MeanLatency.Round(time.Millisecond))
	}
	ew.printf("  %-22s %d\n", "events stored", r.Events)
	ew.printf("  %-22s %.1f\n", "events/s", r.EventsPerSecond())
	for _, c := range r.Callers {
		ew.printf("  %-22s %s\n", c.Name+" peak RSS", mib(c.PeakRSS))
	}
	for i, k := range r.Kills {
		ew.printf("  %-22s kill -9 %s (leading %s) at %s: stall %s\n", fmt.Sprintf("node loss %d", i+1),
			k.Node, k.Stream, k.At.Round(time.Millisecond), k.Stall.Round(time.Millisecond))
	}
	ew.printf("  %-22s", "CPU time")
	for _, p := range append(append([]ProcStat{}, r.Callers...), r.Dispatcher, r.Harness) {
		if p.Name != "" {
			ew.printf(" %s %.1fs", p.Name, p.CPU.Seconds())
		}
	}
	ew.printf("\n")
	if r.Incomplete != "" {
		ew.printf("  %-22s %s\n", "incomplete", r.Incomplete)
	}
	verdict := "PASS: every contact ended exactly once"
	if !r.OK() {
		verdict = "FAIL: contacts missing or ended twice"
	}
	ew.printf("  %-22s %s\n", "result", verdict)
	return ew.err
}

func mib(b int64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// RunCalls generates o.Contacts contacts, runs them through o.Callers real
// caller processes against a zero-latency healthy simulator, and counts the
// terminal call events in EVENTS. It returns a report even when the run was
// incomplete; the error is for a run that could not be measured at all.
func RunCalls(ctx context.Context, o CallsOptions) (*CallsReport, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	bins := []string{"caller"}
	if o.Dispatch != DispatchDirect {
		bins = append(bins, "dispatcher")
	}
	sc := simulator.Scenario{Name: "healthy"}
	if o.Scenario != nil {
		sc = *o.Scenario
	}
	e, err := start(ctx, o.Setup, sc, bins...)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep := &CallsReport{Options: o, Contacts: o.Contacts, WorkDir: e.dir}

	csvPath := filepath.Join(e.dir, "contacts.csv")
	list, err := writeContactsFile(csvPath, o.Contacts)
	if err != nil {
		return nil, err
	}
	cfgPath, err := e.writeConfig("config.yaml", e.callsConfig(o))
	if err != nil {
		return nil, err
	}

	t := newTally(list)
	stopTally, err := t.follow(ctx, e.admin)
	if err != nil {
		return nil, err
	}
	defer stopTally()

	callers := make([]*Proc, o.Callers)
	for i := range callers {
		name := fmt.Sprintf("caller-%d", i+1)
		args := []string{"--config", cfgPath, "--name", name}
		if o.CallerProfileDir != "" {
			args = append(args, "--cpu-profile", filepath.Join(o.CallerProfileDir, name+".prof"))
		}
		if callers[i], err = e.spawn(name, "caller", args...); err != nil {
			return nil, err
		}
	}
	if err := e.waitCallers(ctx, callers, o.Callers*o.Concurrency); err != nil {
		return nil, err
	}
	e.progressf("%d callers ready (concurrency %d each, fleet_max_in_flight %d)", o.Callers, o.Concurrency, o.FleetMaxInFlight)

	events0, err := lastSeq(ctx, e.admin, events.StreamEvents)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	started := time.Now()
	e.progressf("dispatching %d contacts (%s)", o.Contacts, o.Dispatch)

	var disp *Proc
	queued := make(chan dispatched, 1)
	switch o.Dispatch {
	case DispatchDirect:
		go func() {
			err := publishDirect(rctx, e.admin, list)
			queued <- dispatched{after: time.Since(started), err: err}
		}()
	default:
		args := []string{"run", "--config", cfgPath, "--contacts", csvPath, "--campaign", Campaign, "--progress", "lines"}
		if o.Dispatch == DispatchNoFollow {
			args = append(args, "--no-follow")
		} else {
			args = append(args, "--timeout", o.Timeout.String())
		}
		if disp, err = e.spawn("dispatcher", "dispatcher", args...); err != nil {
			return nil, err
		}
		go func() {
			<-disp.Done()
			d := dispatched{after: time.Since(started)}
			if err := disp.Err(); err != nil {
				d.err = fmt.Errorf("dispatcher: %w (see %s)", err, e.logPath("dispatcher"))
			}
			queued <- d
		}()
	}

	killed := make(chan []Kill, 1)
	if o.KillLeaders && e.cluster != nil {
		go func() { killed <- e.killLeaders(rctx, t, started) }()
	} else {
		killed <- nil
	}
	var d *dispatched
	rep.Incomplete, d = e.waitDone(rctx, t, callers, queued, started)
	rep.Kills = <-killed
	var at []time.Time
	for _, k := range rep.Kills {
		at = append(at, k.at)
	}
	for i, s := range Stalls(t.storedTimes(), at, 15*time.Second) {
		rep.Kills[i].Stall = s
	}
	// What EVENTS stored up to the last outcome is the run's event count;
	// the rest (health probes while the harness settles) is not.
	if n, err := lastSeq(ctx, e.admin, events.StreamEvents); err == nil {
		rep.Events = n - events0
	}
	if last := t.lastStored(); !last.IsZero() {
		rep.Wall = last.Sub(started)
		e.progressf("last outcome stored after %s; settling", rep.Wall.Round(time.Millisecond))
	} else {
		rep.Wall = time.Since(started)
		e.progressf("no outcome after %s", rep.Wall.Round(time.Millisecond))
	}

	// Any duplicate would come from a request redelivered before its ack:
	// once CALLS is empty and nothing is pending, no more can appear.
	e.settle(ctx, 30*time.Second)
	if d == nil && rep.Incomplete == "" {
		// The dispatcher updates the campaign state after the last outcome.
		select {
		case got := <-queued:
			d = &got
		case <-time.After(30 * time.Second):
			rep.Incomplete = "the dispatcher did not finish within 30s of the last outcome"
		}
	}
	if d != nil {
		if d.err != nil && rep.Incomplete == "" {
			rep.Incomplete = d.err.Error()
		}
		if o.Dispatch == DispatchFollow {
			rep.DispatcherDone = d.after
		} else {
			rep.Published = d.after
		}
	}
	for _, c := range callers {
		rep.Callers = append(rep.Callers, procStat(c.Name, c.Stats()))
	}
	if disp != nil {
		rep.Dispatcher = procStat(disp.Name, disp.Stats())
	}
	// This process runs the NATS server and the simulator.
	rep.Harness = procStat("harness", stack.Self())
	for _, c := range callers {
		if err := c.Stop(15 * time.Second); err != nil {
			e.progressf("%v", err)
		}
	}
	stopTally()
	t.fill(rep)
	if n, err := streamTerminal(ctx, e.admin); err == nil {
		rep.StreamTerminal = n
	}
	return rep, nil
}

// callsConfig is the configuration of the callers and the dispatcher.
func (e *env) callsConfig(o CallsOptions) map[string]any {
	cfg := e.baseConfig()
	cfg["caller"] = map[string]any{
		"concurrency":         o.Concurrency,
		"fleet_max_in_flight": o.FleetMaxInFlight,
		"shutdown_grace":      "5s",
	}
	cfg["dispatcher"] = map[string]any{
		"campaign": Campaign,
		// Whatever the hour, the contacts are in their calling window.
		"calling_window": "00:00-24:00",
	}
	return cfg
}

// waitCallers waits until the callers have created the shared consumer and
// most of their workers are waiting for work, so the clock starts on a
// ready fleet.
func (e *env) waitCallers(ctx context.Context, callers []*Proc, workers int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, c := range callers {
			select {
			case <-c.Done():
				return fmt.Errorf("%s exited at start: %v (see %s)", c.Name, c.Err(), e.logPath(c.Name))
			default:
			}
		}
		{
			info, err := e.admin.ConsumerInfo(ctx, events.StreamCalls, "callers")
			// Each worker keeps one pull request waiting; the server caps
			// them per consumer, so do not ask for more than that.
			if err == nil && info.NumWaiting >= min(workers*3/4, 400) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			e.progressf("callers not all waiting after 30s; starting anyway")
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dispatched is how queueing the requests ended, and when.
type dispatched struct {
	after time.Duration
	err   error
}

// waitDone waits until every contact has a terminal event, and returns ""
// then, or why it stopped waiting; and how the dispatch ended, if it has.
func (e *env) waitDone(ctx context.Context, t *tally, callers []*Proc, queued <-chan dispatched, started time.Time) (string, *dispatched) {
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	var d *dispatched
	for {
		if t.done() {
			return "", d
		}
		for _, c := range callers {
			select {
			case <-c.Done():
				return fmt.Sprintf("%s exited: %v (see %s)", c.Name, c.Err(), e.logPath(c.Name)), d
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("stopped after %s: %v", time.Since(started).Round(time.Second), context.Cause(ctx)), d
		case got := <-queued:
			d = &got
			if got.err != nil {
				return got.err.Error(), d
			}
			e.progressf("dispatch done after %s", got.after.Round(time.Millisecond))
			queued = nil
		case <-report.C:
			n := t.ended()
			waiting, inFlight := e.queue(ctx)
			e.progressf("%d/%d contacts ended, %.0f calls/s; CALLS: %d waiting, %d in flight",
				n, t.total(), perSecond(float64(n), time.Since(started)), waiting, inFlight)
		case <-poll.C:
		}
	}
}

// settle waits until the CALLS queue is empty and the callers' consumer has
// nothing unacknowledged, or for at most max.
func (e *env) settle(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if e.drained(ctx) {
			// The last acks were seen; leave a moment for a straggling
			// publish to land before counting.
			time.Sleep(500 * time.Millisecond)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.progressf("CALLS not drained within %s", max)
}

// queue returns the requests waiting on CALLS and those taken by a caller
// and not yet acknowledged (-1 when unknown).
func (e *env) queue(ctx context.Context) (waiting, inFlight int64) {
	waiting, inFlight = -1, -1
	info, err := e.admin.ConsumerInfo(ctx, events.StreamCalls, "callers")
	if err != nil {
		return
	}
	return int64(info.NumPending), int64(info.NumAckPending)
}

// drained reports whether CALLS holds no request and the callers' consumer
// has none pending or unacknowledged. Only requests count: CALLS also stores
// the dispatcher's re-queues (message schedules on agent.requeue.>), which
// are not work yet.
func (e *env) drained(ctx context.Context) bool {
	s, err := e.admin.Stream(ctx, events.StreamCalls)
	if err != nil {
		return false
	}
	si, err := s.Info(ctx, jetstream.WithSubjectFilter(events.DispatchAll))
	if err != nil {
		return false
	}
	for _, n := range si.State.Subjects {
		if n > 0 {
			return false
		}
	}
	c, err := s.Consumer(ctx, "callers")
	if err != nil {
		return false
	}
	ci, err := c.Info(ctx)
	return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
}

func lastSeq(ctx context.Context, c *bus.Conn, stream string) (uint64, error) {
	s, err := c.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// streamTerminal is the number of terminal call events EVENTS holds, by its
// per-subject counts.
func streamTerminal(ctx context.Context, c *bus.Conn) (int, error) {
	s, err := c.Stream(ctx, events.StreamEvents)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.CallAll))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, outcome := range []string{events.CallCompleted, events.CallFailed, events.CallSkipped} {
		n += int(info.State.Subjects[events.CallSubject(outcome)])
	}
	return n, nil
}

// publishDirect publishes one request per contact of the file, as the
// dispatcher's first attempt would, with asynchronous publishes.
func publishDirect(ctx context.Context, c *bus.Conn, list []Contact) error {
	subject := events.DispatchSubject(Campaign)
	now := time.Now().UTC()
	for _, ct := range list {
		req := &events.CallRequest{
			ID: dispatcher.MsgID(Campaign, ct.ID, 1), Time: now, Source: c.Source,
			CallID: dispatcher.CallID(Campaign, ct.ID, 1), Campaign: Campaign, ContactID: ct.ID,
			Phone: ct.Phone, Name: ct.Name, Timezone: "UTC", Attempt: 1, MaxAttempts: 3,
		}
		data, err := events.EncodeRequest(req)
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		if _, err := c.PublishAsync(msg, req.ID); err != nil {
			return fmt.Errorf("publish %s: %w", req.ID, err)
		}
	}
	select {
	case <-c.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tally counts terminal call events by call id and contact, read from EVENTS
// with an ordered consumer.
type tally struct {
	mu        sync.Mutex
	contacts  map[string]bool // contact id -> has a terminal event
	endedN    int
	byCall    map[string]int
	outcomes  map[string]int
	terminals int
	last      time.Time   // when the stream stored the latest terminal event
	stored    []time.Time // when it stored each contact's first
	seq       uint64      // the stream sequence of the latest call event read
	seenAt    time.Time   // when a call event was last read
	// started is when each call's started event was stored; latSum and
	// latN add up start -> terminal times.
	started map[string]time.Time
	latSum  time.Duration
	latN    int
}

// next records seq as read, and reports whether it is new.
func (t *tally) next(seq uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seenAt = time.Now()
	if seq <= t.seq {
		return false
	}
	t.seq = seq
	return true
}

func (t *tally) lastSeq() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq
}

func (t *tally) seen() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seenAt
}

func (t *tally) touch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seenAt = time.Now()
}

func newTally(list []Contact) *tally {
	t := &tally{contacts: make(map[string]bool, len(list)), byCall: map[string]int{}, outcomes: map[string]int{}, started: map[string]time.Time{}, seenAt: time.Now()}
	for _, c := range list {
		t.contacts[c.ID] = false
	}
	return t
}

func (t *tally) follow(ctx context.Context, c *bus.Conn) (stop func(), err error) {
	cc, err := t.consume(ctx, c)
	if err != nil {
		return nil, err
	}
	// An ordered consumer lives on one server: when a cluster loses it,
	// the consumer may end or go quiet. Quiet for a while, it is made
	// again from the next sequence, so the count goes on.
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				cc.Stop()
				return
			case <-tick.C:
			}
			if time.Since(t.seen()) < 3*time.Second {
				continue
			}
			if next, err := t.consume(ctx, c); err == nil {
				cc.Stop()
				cc = next
				t.touch()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-exited }) }, nil
}

// consume starts an ordered consumer of the call events after the last
// one counted.
func (t *tally) consume(ctx context.Context, c *bus.Conn) (jetstream.ConsumeContext, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.CallAll}}
	if last := t.lastSeq(); last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := c.OrderedConsumer(cctx, events.StreamEvents, cfg)
	if err != nil {
		return nil, fmt.Errorf("follow call events: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if !t.next(md.Sequence.Stream) {
			return // counted by the consumer this one replaced
		}
		ev, err := events.DecodeAs[*events.Call](m.Data())
		if err != nil {
			return
		}
		t.add(ev, md.Timestamp)
	})
	if err != nil {
		return nil, fmt.Errorf("follow call events: %w", err)
	}
	return cc, nil
}

func (t *tally) add(ev *events.Call, stored time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ev.Outcome == events.CallStarted {
		if _, seen := t.started[ev.CallID]; !seen {
			t.started[ev.CallID] = stored
		}
		return
	}
	if began, ok := t.started[ev.CallID]; ok && t.byCall[ev.CallID] == 0 && !stored.IsZero() {
		t.latSum += stored.Sub(began)
		t.latN++
	}
	t.terminals++
	t.outcomes[ev.Outcome]++
	t.byCall[ev.CallID]++
	if ended, ours := t.contacts[ev.ContactID]; ours && !ended {
		t.contacts[ev.ContactID] = true
		t.endedN++
		t.stored = append(t.stored, stored)
	}
	if stored.After(t.last) {
		t.last = stored
	}
}

func (t *tally) done() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.endedN == len(t.contacts)
}

func (t *tally) ended() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.endedN
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.contacts)
}

func (t *tally) storedTimes() []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]time.Time(nil), t.stored...)
}

func (t *tally) lastStored() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

func (t *tally) fill(r *CallsReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Terminal = t.terminals
	r.Outcomes = make(map[string]int, len(t.outcomes))
	for k, v := range t.outcomes {
		r.Outcomes[k] = v
	}
	r.CallIDs = len(t.byCall)
	r.Duplicates = 0
	for _, n := range t.byCall {
		r.Duplicates += n - 1
	}
	r.Missing = len(t.contacts) - t.endedN
	if t.latN > 0 {
		r.MeanLatency = t.latSum / time.Duration(t.latN)
	}
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (w *errWriter) printf(format string, args ...any) {
	if w.err == nil {
		_, w.err = fmt.Fprintf(w.w, format, args...)
	}
}
