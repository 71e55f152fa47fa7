package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/rules"
	"github.com/callagent/agent/internal/simulator"
)

// AlertSink is the name of the webhook sink the observer delivers to; the
// simulator's receiver records it under /webhook/<AlertSink>.
const AlertSink = "webhook"

// AlertOptions configure RunAlertLatency. Zero fields take the documented
// defaults.
type AlertOptions struct {
	Setup
	// Samples is how many breaker-open events are measured. Default 200.
	Samples int
	// Rate is breaker-open events per second. Default 5.
	Rate float64
	// Services is how many service names the opens cycle through; each open
	// is closed half a period later, so the next open of a name is a new
	// alert episode, never a repeat folded into the last. Default 10.
	Services int
	// BatchSize and BatchWait are the webhook sink's batch_size and
	// batch_wait; 0 keeps the product defaults for an alert sink.
	BatchSize int
	BatchWait time.Duration
	// Timeout bounds the wait for the last alert after the last open.
	// Default 30s.
	Timeout time.Duration
}

// Check reports the first option out of range, defaults applied.
func (o AlertOptions) Check() error {
	_, err := o.withDefaults()
	return err
}

func (o AlertOptions) withDefaults() (AlertOptions, error) {
	if o.Samples == 0 {
		o.Samples = 200
	}
	if o.Rate == 0 {
		o.Rate = 5
	}
	if o.Services == 0 {
		o.Services = 10
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	switch {
	case o.Samples < 1:
		return o, fmt.Errorf("samples: %d: want at least 1", o.Samples)
	case o.Rate <= 0 || o.Rate > 1000:
		return o, fmt.Errorf("rate: %g/s: want more than 0 and at most 1000", o.Rate)
	case o.Services < 2:
		return o, fmt.Errorf("services: %d: want at least 2", o.Services)
	case o.BatchSize < 0 || o.BatchWait < 0 || o.Timeout < 0:
		return o, errors.New("batch size, batch wait and timeout must not be negative")
	}
	return o, nil
}

// AlertReport is what RunAlertLatency measured.
type AlertReport struct {
	Options AlertOptions
	// Samples is how many opens were published; Received how many of their
	// firing notifications reached the webhook.
	Samples, Received int
	// Duplicates counts firing notifications received again for a sample.
	Duplicates int
	// LostInDelivery counts the samples not received whose alert is in
	// ALERTS: the rules raised them, the sink or the receiver lost them.
	LostInDelivery int
	// Latency is publish -> webhook receipt per received sample, sorted.
	Latency []time.Duration
	// ToAlert is publish -> the alert stored in ALERTS (the observer's rules
	// stage), sorted; the rest of Latency is the sink's delivery.
	ToAlert []time.Duration
	// Span is how long the paced publishing took.
	Span time.Duration
}

// OK reports whether every sample's alert arrived exactly once.
func (r *AlertReport) OK() bool { return r.Received == r.Samples && r.Duplicates == 0 }

// WriteText prints the report.
func (r *AlertReport) WriteText(w io.Writer) error {
	o := r.Options
	// What the sink really runs with: the options, else the product's own
	// defaults for an alert sink.
	d := config.Sink{Kind: "alert", BatchSize: o.BatchSize, BatchWait: o.BatchWait}.WithDefaults()
	wait := d.BatchWait.String()
	if d.BatchWait == 0 {
		wait = "0 (adaptive)"
	}
	batch := fmt.Sprintf("batch_size %d, batch_wait %s", d.BatchSize, wait)
	if o.BatchSize == 0 && o.BatchWait == 0 {
		batch = "product defaults (" + batch + ")"
	}
	ew := &errWriter{w: w}
	ew.printf("alert-latency: breaker open -> observer (group_wait 0s) -> webhook sink plugin -> receiver\n")
	ew.printf("  %-22s %d at %.1f/s over %s, cycling %d services\n", "samples", r.Samples, o.Rate, r.Span.Round(time.Millisecond), o.Services)
	ew.printf("  %-22s %s\n", "webhook sink", batch)
	ew.printf("  %-22s %d\n", "received", r.Received)
	ew.printf("  %-22s %d\n", "lost", r.Samples-r.Received)
	if lost := r.Samples - r.Received; lost > 0 {
		ew.printf("  %-22s %d of the %d lost\n", "lost after ALERTS", r.LostInDelivery, lost)
	}
	ew.printf("  %-22s %d\n", "duplicates", r.Duplicates)
	if len(r.Latency) > 0 {
		ew.printf("  %-22s %8s %8s %8s %8s %8s\n", "", "p50", "p90", "p99", "max", "min")
		row := func(name string, d []time.Duration) {
			if len(d) == 0 {
				return
			}
			ew.printf("  %-22s %8s %8s %8s %8s %8s\n", name,
				ms(Percentile(d, 50)), ms(Percentile(d, 90)), ms(Percentile(d, 99)), ms(d[len(d)-1]), ms(d[0]))
		}
		row("publish -> webhook", r.Latency)
		row("publish -> ALERTS", r.ToAlert)
	}
	verdict := "PASS: every alert arrived once"
	if !r.OK() {
		verdict = "FAIL: alerts lost or sent twice"
	}
	ew.printf("  %-22s %s\n", "result", verdict)
	return ew.err
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// sample is one measured breaker open.
type sample struct {
	service   string
	published time.Time
	alerted   time.Time // stored in ALERTS
	received  time.Time // at the webhook receiver
	receipts  int
}

// key matches a firing alert to its open: the service and the alert's
// start, which the rules date by the breaker event's own time.
func key(service string, startsAt time.Time) string {
	return fmt.Sprintf("%s|%d", service, startsAt.UnixMilli())
}

// RunAlertLatency publishes paced breaker opens and closes and measures how
// long each open takes to reach the webhook receiver as a firing alert,
// through the real observer and the real webhook plugin.
func RunAlertLatency(ctx context.Context, o AlertOptions) (*AlertReport, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	e, err := start(ctx, o.Setup, simulator.Scenario{Name: "healthy"}, "observer", "plugins/"+AlertSink)
	if err != nil {
		return nil, err
	}
	defer e.close()
	cfgPath, err := e.writeConfig("config.yaml", e.alertConfig(o))
	if err != nil {
		return nil, err
	}
	obs, err := e.spawn("observer", "observer", "run", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := e.waitObserver(ctx, obs); err != nil {
		return nil, err
	}
	pub, err := e.connect(ctx, config.RoleCaller, "loadtest-breakers")
	if err != nil {
		return nil, err
	}
	defer pub.Close()

	m := &matcher{byKey: map[string]*sample{}}
	stopAlerts, err := m.followAlerts(ctx, e.admin)
	if err != nil {
		return nil, err
	}
	defer stopAlerts()
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go m.pollReceiver(pctx, e.sim)

	// One open that is not counted: the plugin's first delivery, the
	// connections' first use and the consumers' first pulls are paid here.
	warm := &sample{service: "loadtest-warmup"}
	if err := openClose(ctx, pub, m, warm, 0); err != nil {
		return nil, err
	}
	if err := m.wait(ctx, []*sample{warm}, 30*time.Second, obs); err != nil {
		return nil, fmt.Errorf("warm-up alert: %w (see %s)", err, e.logPath("observer"))
	}
	e.progressf("observer and webhook sink ready; first alert took %s", warm.received.Sub(warm.published).Round(time.Millisecond))

	period := time.Duration(float64(time.Second) / o.Rate)
	samples := make([]*sample, o.Samples)
	e.progressf("publishing %d breaker opens at %.1f/s", o.Samples, o.Rate)
	begin := time.Now()
	for i := range samples {
		samples[i] = &sample{service: fmt.Sprintf("loadtest-%02d", i%o.Services)}
		if err := sleepUntil(ctx, begin.Add(time.Duration(i)*period)); err != nil {
			return nil, err
		}
		if err := openClose(ctx, pub, m, samples[i], period/2); err != nil {
			return nil, err
		}
	}
	rep := &AlertReport{Options: o, Samples: o.Samples, Span: time.Since(begin)}
	if err := m.wait(ctx, samples, o.Timeout, obs); err != nil {
		e.progressf("%v", err)
	}
	// Leave a moment for a duplicate delivery to show.
	time.Sleep(500 * time.Millisecond)
	m.fill(rep, samples)
	return rep, nil
}

// alertConfig is the observer's configuration: alerts at once, one webhook
// sink pointed at the simulator.
func (e *env) alertConfig(o AlertOptions) map[string]any {
	cfg := e.baseConfig()
	cfg["observer"] = map[string]any{
		"http":       map[string]any{"addr": "127.0.0.1:0"},
		"plugin_dir": filepath.Join(e.bin, "plugins"),
		"rules":      map[string]any{"group_wait": "0s"},
	}
	sink := map[string]any{
		"name": AlertSink, "plugin": AlertSink, "kind": "alert", "min_severity": "info",
		"config": map[string]any{"url": e.sim.URL() + "/webhook/" + AlertSink},
	}
	if o.BatchSize > 0 {
		sink["batch_size"] = o.BatchSize
	}
	if o.BatchWait > 0 {
		sink["batch_wait"] = o.BatchWait.String()
	}
	cfg["sinks"] = []any{sink}
	return cfg
}

// waitObserver waits until the observer's consumer on EVENTS and the sink's
// on ALERTS exist.
func (e *env) waitObserver(ctx context.Context, obs *Proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-obs.Done():
			return fmt.Errorf("observer exited at start: %v (see %s)", obs.Err(), e.logPath("observer"))
		default:
		}
		_, err1 := e.admin.ConsumerInfo(ctx, events.StreamEvents, config.Default().Observer.Consumer)
		_, err2 := e.admin.ConsumerInfo(ctx, events.StreamAlerts, "sink-"+AlertSink)
		if err1 == nil && err2 == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("observer not consuming after 30s (see %s)", e.logPath("observer"))
		}
		if err := sleepUntil(ctx, time.Now().Add(100*time.Millisecond)); err != nil {
			return err
		}
	}
}

// openClose publishes a breaker open for s.service and, closeAfter later
// (at once when 0), its close, which resolves the alert so that the next
// open of the service starts a new one.
func openClose(ctx context.Context, pub *bus.Conn, m *matcher, s *sample, closeAfter time.Duration) error {
	now := time.Now()
	// The event's time is the alert's start: the key that finds it again.
	open := &events.Breaker{
		Header:  events.Header{Time: now.UTC().Truncate(time.Millisecond)},
		Service: s.service, From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen,
		Reason: "loadtest", Message: "load harness", Failures: 5,
	}
	m.expect(key(s.service, open.Time), s)
	s.published = now
	if err := pub.Emit(ctx, open); err != nil {
		return fmt.Errorf("publish breaker open: %w", err)
	}
	if err := sleepUntil(ctx, now.Add(closeAfter)); err != nil {
		return err
	}
	closed := &events.Breaker{
		Service: s.service, From: events.BreakerHalfOpen, To: events.BreakerClosed, BreakerState: events.BreakerClosed,
		Reason: "loadtest",
	}
	if err := pub.Emit(ctx, closed); err != nil {
		return fmt.Errorf("publish breaker close: %w", err)
	}
	return nil
}

// matcher pairs firing breaker_open alerts, in ALERTS and at the webhook,
// with the opens that caused them.
type matcher struct {
	mu    sync.Mutex
	byKey map[string]*sample
	seen  int // webhook receipts already read
}

func (m *matcher) expect(k string, s *sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byKey[k] = s
}

// firing returns the sample a firing breaker_open alert belongs to.
func (m *matcher) firing(a *events.Alert) *sample {
	if a.Rule != rules.RuleBreakerOpen || a.Status != events.AlertFiring {
		return nil
	}
	return m.byKey[key(a.Service, a.StartsAt)]
}

func (m *matcher) followAlerts(ctx context.Context, c *bus.Conn) (stop func(), err error) {
	cons, err := c.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AlertAll},
	})
	if err != nil {
		return nil, fmt.Errorf("follow alerts: %w", err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		a, err := events.DecodeAs[*events.Alert](msg.Data())
		if err != nil {
			return
		}
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if s := m.firing(a); s != nil && s.alerted.IsZero() {
			s.alerted = md.Timestamp
		}
	})
	if err != nil {
		return nil, fmt.Errorf("follow alerts: %w", err)
	}
	return cc.Stop, nil
}

// pollReceiver reads what the simulator's webhook receiver got. The
// receiver stamps each request on arrival, so polling late does not change
// the figures.
func (m *matcher) pollReceiver(ctx context.Context, sim *simulator.Server) {
	for {
		got := sim.Received(simulator.ServiceWebhook)
		m.mu.Lock()
		for _, r := range got[m.seen:] {
			var body struct {
				Events []json.RawMessage `json:"events"`
			}
			if r.Path != AlertSink || json.Unmarshal([]byte(r.Body), &body) != nil {
				continue
			}
			for _, raw := range body.Events {
				a, err := events.DecodeAs[*events.Alert](raw)
				if err != nil {
					continue
				}
				if s := m.firing(a); s != nil {
					s.receipts++
					if s.received.IsZero() {
						s.received = r.Time
					}
				}
			}
		}
		m.seen = len(got)
		m.mu.Unlock()
		if sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) != nil {
			return
		}
	}
}

// wait waits until every sample was received, or timeout.
func (m *matcher) wait(ctx context.Context, samples []*sample, timeout time.Duration, obs *Proc) error {
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		left := 0
		for _, s := range samples {
			if s.received.IsZero() {
				left++
			}
		}
		m.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-obs.Done():
			return fmt.Errorf("observer exited: %v", obs.Err())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d alerts not received after %s", left, len(samples), timeout)
		}
		if err := sleepUntil(ctx, time.Now().Add(20*time.Millisecond)); err != nil {
			return err
		}
	}
}

func (m *matcher) fill(r *AlertReport, samples []*sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range samples {
		if s.received.IsZero() {
			if !s.alerted.IsZero() {
				r.LostInDelivery++
			}
			continue
		}
		r.Received++
		r.Duplicates += s.receipts - 1
		r.Latency = append(r.Latency, s.received.Sub(s.published))
		if !s.alerted.IsZero() {
			r.ToAlert = append(r.ToAlert, s.alerted.Sub(s.published))
		}
	}
	slices.Sort(r.Latency)
	slices.Sort(r.ToAlert)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
