package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	ot "github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// BenchOptions configure RunBench. Zero fields take the defaults.
type BenchOptions struct {
	Setup
	// Messages is how many messages each throughput figure moves: the raw
	// ceilings, observer ingest and the log sink. Default 100000.
	Messages int
	// Calls is how many calls the end-to-end figure runs. Default 5000.
	Calls int
	// AlertSamples is how many paced breaker opens the alert figure
	// measures, at AlertRate per second. Defaults 100 and 5.
	AlertSamples int
	AlertRate    float64
	// RealisticCalls is how many calls the realistic-latency figure runs
	// (RealisticInFlight at once, about a minute each). Default 2000.
	RealisticCalls int
	// ReplayEvents is the replay figure's window. Default 1,000,000.
	ReplayEvents int
	// Rows selects the figures by BenchRows name; empty runs them all.
	Rows []string
}

// BenchRows names the figures RunBench can run, in its order.
var BenchRows = []string{"ingest", "logsink", "alerts", "calls", "demo", "realistic", "replay"}

// CheckRows reports the first unknown row name.
func CheckRows(rows []string) error {
	for _, r := range rows {
		if !slices.Contains(BenchRows, r) {
			return fmt.Errorf("row %q: want one of %s", r, strings.Join(BenchRows, ", "))
		}
	}
	return nil
}

func (o BenchOptions) want(row string) bool {
	return len(o.Rows) == 0 || slices.Contains(o.Rows, row)
}

func (o BenchOptions) withDefaults() BenchOptions {
	if o.Messages <= 0 {
		o.Messages = 100000
	}
	if o.Calls <= 0 {
		o.Calls = 5000
	}
	if o.AlertSamples <= 0 {
		o.AlertSamples = 100
	}
	if o.AlertRate <= 0 {
		o.AlertRate = 5
	}
	if o.RealisticCalls <= 0 {
		o.RealisticCalls = 2000
	}
	if o.ReplayEvents <= 0 {
		o.ReplayEvents = 1000000
	}
	return o
}

// BenchRow is one line of the table: a figure, the raw ceiling it is
// compared with, and the goal for it.
type BenchRow struct {
	Name  string
	Value float64
	Unit  string
	// Ceiling is the raw figure of the same work (0: none applies).
	Ceiling     float64
	CeilingName string
	// Goal says what is wanted; Met whether the figure reaches it ("" when
	// not judged).
	Goal string
	Met  string
	Note string
}

// BenchReport is RunBench's table.
type BenchReport struct {
	Options BenchOptions
	Size    int // bytes per message of the throughput figures
	Rows    []BenchRow
	// Failed lists the figures that could not be measured, and why.
	Failed []string
	// pubCeil is the async publish ceiling, 0 when not measured.
	pubCeil float64
}

// OK reports whether every figure was measured.
func (r *BenchReport) OK() bool { return len(r.Failed) == 0 }

// WriteText prints the table.
func (r *BenchReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("bench: %d messages of %d bytes per throughput figure, %d calls, %d alerts at %.0f/s, %d realistic calls, %d-event replay window\n\n",
		r.Options.Messages, r.Size, r.Options.Calls, r.Options.AlertSamples, r.Options.AlertRate, r.Options.RealisticCalls, r.Options.ReplayEvents)
	ew.printf("| %-44s | %14s | %-30s | %7s | %-22s | %-4s |\n", "figure", "value", "ceiling (same run)", "ratio", "goal", "met")
	ew.printf("|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 46), strings.Repeat("-", 16), strings.Repeat("-", 32), strings.Repeat("-", 9), strings.Repeat("-", 24), strings.Repeat("-", 6))
	for _, row := range r.Rows {
		ceil, ratio := "-", "-"
		if row.Ceiling > 0 {
			ceil = fmt.Sprintf("%s %s", num(row.Ceiling), row.CeilingName)
			ratio = fmt.Sprintf("%.0f %%", 100*row.Value/row.Ceiling)
		}
		value := num(row.Value) + " " + row.Unit
		if row.Value == 0 {
			value = row.Unit
		}
		ew.printf("| %-44s | %14s | %-30s | %7s | %-22s | %-4s |\n", row.Name, value, ceil, ratio, row.Goal, row.Met)
	}
	for _, row := range r.Rows {
		if row.Note != "" {
			ew.printf("  %s: %s\n", row.Name, row.Note)
		}
	}
	for _, f := range r.Failed {
		ew.printf("  NOT MEASURED: %s\n", f)
	}
	return ew.err
}

func num(v float64) string {
	if v >= 100 {
		return commas(int64(v + 0.5))
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func judge(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// RunBench runs, one after the other in this process tree, the raw
// JetStream ceilings (`go tool nats bench`: async publish and a durable
// consumer, messages the size of an attempt event) and the project's
// figures against them: observer ingest with every rule on, a log sink
// through the real jsonl plugin, breaker-open -> webhook latency and calls
// end to end. A figure that fails is reported as not measured; the others
// still run.
func RunBench(ctx context.Context, o BenchOptions) (*BenchReport, error) {
	o = o.withDefaults()
	rep := &BenchReport{Options: o, Size: len(attemptPayload())}
	if err := CheckRows(o.Rows); err != nil {
		return nil, err
	}
	if o.want("ingest") || o.want("logsink") {
		if err := rep.throughput(ctx, o); err != nil {
			return nil, err
		}
	}

	set := o.Setup
	set.WorkDir = "" // each mode its own temporary store
	sub := func(name string) Setup {
		if o.Setup.WorkDir != "" {
			set.WorkDir = filepath.Join(o.Setup.WorkDir, name)
		}
		return set
	}
	if o.want("alerts") {
		rep.alerts(ctx, o, sub("alerts"))
	}
	if o.want("calls") {
		if cr, err := RunCalls(ctx, CallsOptions{Setup: sub("calls"), Contacts: o.Calls, Callers: 2}); err != nil {
			rep.Failed = append(rep.Failed, "calls: "+err.Error())
		} else if !cr.OK() {
			rep.Failed = append(rep.Failed, fmt.Sprintf("calls: %d missing, %d duplicates (%s)", cr.Missing, cr.Duplicates, cr.Incomplete))
		} else {
			cps := cr.CallsPerSecond()
			perCall := float64(cr.Events) / float64(max(cr.Terminal, 1))
			ceil := 0.0
			if rep.pubCeil > 0 {
				ceil = rep.pubCeil / perCall
			}
			rep.Rows = append(rep.Rows, BenchRow{Name: "calls end to end, 2 callers, zero latency", Value: cps, Unit: "calls/s",
				Ceiling: ceil, CeilingName: fmt.Sprintf("pub / %.0f events per call", perCall), Goal: ">= 2,000 calls/s", Met: judge(cps >= 2000),
				Note: fmt.Sprintf("%s events/s stored; callers' CPU %s", num(cr.EventsPerSecond()), cpuOf(cr.Callers))})
		}
	}
	if o.want("demo") {
		rep.demo(ctx, o.Setup)
	}
	if o.want("realistic") {
		name := fmt.Sprintf("%s in flight, 1 s/request, 60 s calls", commas(RealisticInFlight))
		if cr, err := benchRealistic(ctx, sub("realistic"), o.RealisticCalls); err != nil {
			rep.Failed = append(rep.Failed, "realistic latency: "+err.Error())
		} else if !cr.OK() {
			rep.Failed = append(rep.Failed, fmt.Sprintf("realistic latency: %d missing, %d duplicates (%s)", cr.Missing, cr.Duplicates, cr.Incomplete))
		} else {
			rep.Rows = append(rep.Rows, littleRow(name, cr, RealisticInFlight))
		}
	}
	if o.want("replay") {
		name := fmt.Sprintf("replay, re-derived from a %s-event window", shortCount(o.ReplayEvents))
		if rate, took, err := benchReplay(ctx, sub("replay"), o.ReplayEvents); err != nil {
			rep.Failed = append(rep.Failed, "replay: "+err.Error())
		} else {
			rep.Rows = append(rep.Rows, BenchRow{Name: name, Value: rate, Unit: "ev/s", Goal: ">= 100,000 ev/s", Met: judge(rate >= 100000),
				Note: fmt.Sprintf("observer replay --format json over the window, process start -> exit %s", took.Round(time.Millisecond))})
		}
	}
	return rep, nil
}

func shortCount(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return commas(int64(n))
}

// throughput runs the ceilings, observer ingest and the log sink on one
// server.
func (rep *BenchReport) throughput(ctx context.Context, o BenchOptions) error {
	e, err := start(ctx, o.Setup, simulator.Scenario{Name: "healthy"}, "observer", "plugins/jsonl")
	if err != nil {
		return err
	}
	defer e.close()

	pubCeil, consCeil, err := e.natsBench(ctx, o.Messages, rep.Size)
	if err != nil {
		rep.Failed = append(rep.Failed, "nats bench ceilings: "+err.Error())
	}
	rep.pubCeil = pubCeil
	if !o.want("ingest") {
	} else if ing, err := e.benchIngest(ctx, o.Messages); err != nil {
		rep.Failed = append(rep.Failed, "observer ingest: "+err.Error())
	} else {
		rep.Rows = append(rep.Rows, BenchRow{Name: "observer ingest, every rule on", Value: ing, Unit: "ev/s",
			Ceiling: consCeil, CeilingName: "durable consume", Goal: ">= 60 % of consume", Met: judgeRatio(ing, consCeil, 0.6)})
	}
	if !o.want("logsink") {
	} else if ls, err := e.benchLogSink(ctx, o.Messages); err != nil {
		rep.Failed = append(rep.Failed, "log sink: "+err.Error())
	} else {
		rep.Rows = append(rep.Rows, BenchRow{Name: "log sink via jsonl plugin, publish -> acked", Value: ls, Unit: "ev/s",
			Ceiling: min(pubCeil, consCeil), CeilingName: "min(pub, consume)", Goal: ">= 100,000 ev/s", Met: judge(ls >= 100000),
			Note: "publish to EVENTS until written by the plugin and acknowledged; the observer's pipeline ingests the same events meanwhile"})
	}
	return nil
}

func (rep *BenchReport) demo(ctx context.Context, set Setup) {
	if set.BinDir == "" {
		rep.Rows = append(rep.Rows, BenchRow{Name: demoRow, Unit: "not measured", Met: "-", Note: "needs --bin with bin/demo (make bench gives it)"})
		return
	}
	d, err := benchDemo(ctx, set)
	if err != nil {
		rep.Failed = append(rep.Failed, "demo ready: "+err.Error())
		return
	}
	rep.Rows = append(rep.Rows, BenchRow{Name: demoRow, Value: ms64(d), Unit: "ms", Goal: "<= 3,000 ms", Met: judge(d <= 3*time.Second),
		Note: "bin/demo --fast started -> its \"Started:\" line (NATS, provision, simulator, media, observer ready, both callers waiting)"})
}

func (rep *BenchReport) alerts(ctx context.Context, o BenchOptions, set Setup) {
	ar, err := RunAlertLatency(ctx, AlertOptions{Setup: set, Samples: o.AlertSamples, Rate: o.AlertRate})
	switch {
	case err != nil:
		rep.Failed = append(rep.Failed, "alert latency: "+err.Error())
	case len(ar.Latency) == 0 || !ar.OK():
		rep.Failed = append(rep.Failed, fmt.Sprintf("alert latency: %d of %d alerts received, %d duplicates", ar.Received, ar.Samples, ar.Duplicates))
	default:
		p50, p99 := quantile(ar.Latency, 0.5), quantile(ar.Latency, 0.99)
		rep.Rows = append(rep.Rows,
			BenchRow{Name: "breaker open -> webhook p50 (paced)", Value: ms64(p50), Unit: "ms", Goal: "-"},
			BenchRow{Name: "breaker open -> webhook p99 (paced)", Value: ms64(p99), Unit: "ms", Goal: "<= 50 ms", Met: judge(p99 <= 50*time.Millisecond),
				Note: fmt.Sprintf("observer's share (publish -> ALERTS) p99 %s", ms(quantile(ar.ToAlert, 0.99)))})
	}
}

func cpuOf(ps []ProcStat) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s %s", p.Name, p.CPU.Round(10*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func judgeRatio(v, ceiling, want float64) string {
	if ceiling <= 0 {
		return "?"
	}
	return judge(v >= want*ceiling)
}

func ms64(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// attemptPayload is the encoded attempt event the throughput figures move:
// its size is the ceilings' message size too.
func attemptPayload() []byte {
	ev := &events.Attempt{Service: "elevenlabs", Attempt: 2, Outcome: events.OutcomeFailure,
		ErrorCategory: events.CategoryTransient, StatusCode: 503, Message: "503 Service Unavailable", LatencyMs: 812}
	events.Stamp(ev, "bench", time.Now())
	data, _ := events.Encode(ev)
	return data
}

var rateRe = regexp.MustCompile(`stats: ([\d,]+) msgs/sec`)

// benchRate is the rate of a `nats bench` run: its last "stats: N msgs/sec"
// line, the aggregate when there are several clients.
func benchRate(out string) (float64, error) {
	m := rateRe.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("no rate in %q", out)
	}
	return strconv.ParseFloat(strings.ReplaceAll(m[len(m)-1][1], ",", ""), 64)
}

// natsBench runs `go tool nats bench js pub async` then `js consume` (a
// durable, explicit acks) on a stream of its own, file storage, as the
// admin role.
func (e *env) natsBench(ctx context.Context, n, size int) (pub, consume float64, err error) {
	root, err := stack.RepoRoot()
	if err != nil {
		return 0, 0, err
	}
	common := []string{"--server", e.nats.URL(), "--no-progress"}
	if c, ok := e.roles[config.RoleAdmin]; ok {
		common = append(common, "--user", c.User, "--password", c.Password)
	}
	run := func(args ...string) (float64, error) {
		cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "nats"}, append(args, common...)...)...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("nats %s: %w: %s", strings.Join(args[:4], " "), err, out.String())
		}
		rate, err := benchRate(out.String())
		if err != nil {
			return 0, fmt.Errorf("nats %s: %w", strings.Join(args[:4], " "), err)
		}
		return rate, nil
	}
	sizeArg := strconv.Itoa(size)
	msgs := strconv.Itoa(n)
	if pub, err = run("bench", "js", "pub", "async", "bench.ceiling", "--create", "--purge", "--storage", "file",
		"--msgs", msgs, "--size", sizeArg, "--batch", "500"); err != nil {
		return 0, 0, err
	}
	e.progressf("ceiling: JetStream async publish %s msgs/s", num(pub))
	if consume, err = run("bench", "js", "consume", "--msgs", msgs, "--size", sizeArg, "--batch", "500", "--acks", "explicit"); err != nil {
		return pub, 0, err
	}
	e.progressf("ceiling: JetStream durable consume %s msgs/s", num(consume))
	return pub, consume, nil
}

// benchIngest stores n events of the observer's mix (attempts, retries,
// calls, breaker transitions over four services), then runs the observer
// with every rule on and no sink, and times its consumer from its first
// delivery to its ack floor reaching the last event.
func (e *env) benchIngest(ctx context.Context, n int) (float64, error) {
	pub, err := e.connect(ctx, config.RoleCaller, "bench-ingest")
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	if err := publishMix(ctx, pub, "ingest", n, time.Now().Add(-time.Hour), 10*time.Millisecond); err != nil {
		return 0, err
	}
	last, err := lastSeq(ctx, e.admin, events.StreamEvents)
	if err != nil {
		return 0, err
	}
	e.progressf("ingest: %d events stored; starting the observer", n)
	obs, err := e.startObserver(ctx, "observer-ingest", nil)
	if err != nil {
		return 0, err
	}
	defer obs.Stop(10 * time.Second)
	rate, err := e.timeConsumer(ctx, events.StreamEvents, config.Default().Observer.Consumer, 0, last, n, obs)
	if err == nil {
		e.progressf("ingest: %s events/s", num(rate))
	}
	return rate, err
}

// publishMix publishes n events of the mix, the i-th at t0 + i*step, with
// asynchronous publishes, and waits for their acks.
func publishMix(ctx context.Context, pub *bus.Conn, prefix string, n int, t0 time.Time, step time.Duration) error {
	for i := range n {
		ev := ot.Mix(prefix, i, t0.Add(time.Duration(i)*step))
		data, err := events.Encode(ev)
		if err != nil {
			return err
		}
		if err := publishAsync(ctx, pub, &nats.Msg{Subject: ev.Subject(), Data: data}, ev.Head().ID); err != nil {
			return err
		}
	}
	return waitComplete(ctx, pub.PublishAsyncComplete())
}

// benchLogSink runs the observer with one jsonl log sink (from now), then
// publishes n attempt events and times from the first publish to the
// sink's consumer having acknowledged the last.
func (e *env) benchLogSink(ctx context.Context, n int) (float64, error) {
	sink := map[string]any{
		"name": "bench", "plugin": "jsonl", "kind": "log", "batch_size": 500,
		"subjects": []string{events.AttemptAll},
		"config":   map[string]any{"path": filepath.Join(e.dir, "bench.jsonl")},
	}
	obs, err := e.startObserver(ctx, "observer-logsink", sink)
	if err != nil {
		return 0, err
	}
	defer obs.Stop(10 * time.Second)
	first, err := lastSeq(ctx, e.admin, events.StreamEvents)
	if err != nil {
		return 0, err
	}
	pub, err := e.connect(ctx, config.RoleCaller, "bench-logsink")
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	payload := attemptPayload()
	tmpl, err := events.DecodeAs[*events.Attempt](payload)
	if err != nil {
		return 0, err
	}
	began := time.Now()
	for i := range n {
		ev := *tmpl
		ev.ID = fmt.Sprintf("logsink-%d", i)
		data, err := events.Encode(&ev)
		if err != nil {
			return 0, err
		}
		if err := publishAsync(ctx, pub, &nats.Msg{Subject: ev.Subject(), Data: data}, ev.ID); err != nil {
			return 0, err
		}
	}
	if err := waitComplete(ctx, pub.PublishAsyncComplete()); err != nil {
		return 0, err
	}
	e.progressf("log sink: %d events published in %s", n, time.Since(began).Round(time.Millisecond))
	last, err := lastSeq(ctx, e.admin, events.StreamEvents)
	if err != nil {
		return 0, err
	}
	if last-first != uint64(n) {
		return 0, fmt.Errorf("EVENTS stored %d of %d events", last-first, n)
	}
	if err := e.waitAcked(ctx, events.StreamEvents, "sink-bench", last, obs); err != nil {
		return 0, err
	}
	rate := perSecond(float64(n), time.Since(began))
	e.progressf("log sink: %s events/s", num(rate))
	return rate, nil
}

// startObserver runs the observer (no HTTP port, every rule on) with the
// sink given, if any, and waits for its consumers.
func (e *env) startObserver(ctx context.Context, name string, sink map[string]any) (*Proc, error) {
	cfg := e.baseConfig()
	cfg["observer"] = map[string]any{
		"http":       map[string]any{"addr": "127.0.0.1:0"},
		"plugin_dir": filepath.Join(e.bin, "plugins"),
	}
	if sink != nil {
		cfg["sinks"] = []any{sink}
	}
	path, err := e.writeConfig(name+".yaml", cfg)
	if err != nil {
		return nil, err
	}
	obs, err := e.spawn(name, "observer", "run", "--config", path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.admin.ConsumerInfo(ctx, events.StreamEvents, config.Default().Observer.Consumer)
		if err == nil && sink != nil {
			_, err = e.admin.ConsumerInfo(ctx, events.StreamEvents, "sink-"+sink["name"].(string))
		}
		if err == nil {
			return obs, nil
		}
		select {
		case <-obs.Done():
			return nil, fmt.Errorf("observer exited at start: %v (see %s)", obs.Err(), e.logPath(name))
		default:
		}
		if time.Now().After(deadline) {
			obs.Stop(5 * time.Second)
			return nil, fmt.Errorf("observer not consuming after 30s (see %s)", e.logPath(name))
		}
		if err := sleepUntil(ctx, time.Now().Add(20*time.Millisecond)); err != nil {
			return nil, err
		}
	}
}

// timeConsumer polls durable until its ack floor reaches last and returns
// n divided by the time from its first delivery (seen by polling) to then.
func (e *env) timeConsumer(ctx context.Context, stream, durable string, _ uint64, last uint64, n int, obs *Proc) (float64, error) {
	var began time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for {
		info, err := e.admin.ConsumerInfo(ctx, stream, durable)
		if err != nil {
			return 0, err
		}
		if began.IsZero() && info.Delivered.Stream > 0 {
			began = time.Now()
		}
		if info.AckFloor.Stream >= last {
			return perSecond(float64(n), time.Since(began)), nil
		}
		if err := e.pollWait(ctx, deadline, obs); err != nil {
			return 0, err
		}
	}
}

// waitAcked polls durable until its ack floor reaches last.
func (e *env) waitAcked(ctx context.Context, stream, durable string, last uint64, obs *Proc) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		info, err := e.admin.ConsumerInfo(ctx, stream, durable)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream >= last {
			return nil
		}
		if err := e.pollWait(ctx, deadline, obs); err != nil {
			return err
		}
	}
}

func (e *env) pollWait(ctx context.Context, deadline time.Time, obs *Proc) error {
	select {
	case <-obs.Done():
		return fmt.Errorf("observer exited: %v", obs.Err())
	default:
	}
	if time.Now().After(deadline) {
		return errors.New("not done after 5 minutes")
	}
	return sleepUntil(ctx, time.Now().Add(5*time.Millisecond))
}

// publishAsync publishes msg without waiting for its ack; when too many
// are outstanding (a server slowed down by a busy machine) it waits for
// them and tries again rather than failing the figure.
func publishAsync(ctx context.Context, pub *bus.Conn, msg *nats.Msg, id string) error {
	for {
		_, err := pub.PublishAsync(msg, id)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return err
		}
		if err := waitComplete(ctx, pub.PublishAsyncComplete()); err != nil {
			return err
		}
	}
}

func waitComplete(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-time.After(2 * time.Minute):
		return errors.New("publishes not acknowledged in 2 minutes")
	case <-ctx.Done():
		return ctx.Err()
	}
}

const demoRow = "demo ready, bin/demo start -> every process"

// benchDemo starts bin/demo --fast on free ports in a run dir of its own
// and returns how long it took to say every process is ready; then it
// interrupts the demo, which stops its children.
func benchDemo(ctx context.Context, set Setup) (time.Duration, error) {
	root, err := stack.RepoRoot()
	if err != nil {
		return 0, err
	}
	bin, err := filepath.Abs(set.BinDir)
	if err != nil {
		return 0, err
	}
	runDir, err := os.MkdirTemp("", "bench-demo-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(runDir)
	args := []string{"--bin", bin, "--fast", "--run-dir", runDir, "--timeout", "1m"}
	for _, flag := range []string{"--nats-port", "--http-port", "--sim-port", "--smtp-port", "--media-port"} {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		args = append(args, flag, strconv.Itoa(port))
	}
	cmd := exec.Command(filepath.Join(bin, "demo"), args...)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	started := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Started: ") {
				started <- time.Since(began)
			}
		}
	}()
	var took time.Duration
	select {
	case took = <-started:
	case <-time.After(time.Minute):
		err = errors.New("no \"Started:\" line within a minute")
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 5))
	}
	return took, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
