// Command loadtest is the load harness: it stands up the whole system on
// this host (embedded NATS, the simulator, the real binaries), drives a
// bounded amount of work through it, stops by itself and prints figures. See
// the usage below, or run `loadtest help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/callagent/agent/internal/loadtest"
	"github.com/callagent/agent/internal/stack"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `loadtest runs the call agent under load on this host and prints figures. It
starts an embedded NATS server (free port, temporary store, nats.conf's roles),
the simulator playing a zero-latency healthy scenario, and the real binaries as
child processes; it stops by itself and removes what it made.

Usage:
  loadtest calls [--contacts N] [--callers N] [--concurrency N] [--fleet-max N]
                 [--dispatch follow|no-follow|direct] [--caller-profile-dir DIR]
                 [--timeout D] [common flags]
  loadtest alert-latency [--samples N] [--rate R] [--services N]
                 [--batch-size N] [--batch-wait D] [--timeout D] [common flags]
  loadtest bench [--messages N] [--calls N] [--alerts N] [--realistic-calls N]
                 [--replay-events N] [--rows LIST] [common flags]
  loadtest cluster [--contacts N] [--callers N] [--concurrency N] [--timeout D]
                 [common flags]
  loadtest help

calls: generates N contacts, queues one call request each, and runs them
through N caller processes (llm -> tts -> telephony -> crm against the
simulator). It waits until every contact has a terminal call event in EVENTS,
then prints the terminal outcomes, duplicates and missing contacts (both must
be 0), wall time, calls/s, events/s (EVENTS messages stored per second), each
caller's peak resident memory (VmHWM) and every process's CPU time.
By default the harness queues the requests itself (--dispatch direct), as the
dispatcher would (same call ids, message ids and subject), so that the callers
are what is measured on their own: the dispatcher also keeps campaign state
for every contact, and on two shared cores it competes with the callers for
CPU. Give --dispatch follow to run the real dispatcher end to end instead.

alert-latency: runs the observer with the webhook sink plugin (group_wait 0s,
so an alert goes at once), publishes paced breaker opens (each closed half a
period later, cycling service names, so every open is a new alert), and
measures each open's publish -> webhook receipt time at the simulator's
receiver. Prints p50, p90, p99 and max, and the observer's share (publish ->
alert stored in ALERTS).

bench: runs, one after the other, the raw JetStream ceilings on the
harness's server (go tool nats bench js pub async, then js consume on a
durable with explicit acks; N messages the size of an attempt event) and
the project's figures: observer ingest with every rule on (N stored events),
a log sink through the real jsonl plugin (N events published to EVENTS until
written and acknowledged), breaker open -> webhook latency (paced, the
product's alert-sink defaults), calls end to end (2 callers, zero-latency
simulator), demo start, realistic latency (1 caller with 1,000 calls in
flight, 1 s per provider request, 60 s calls; throughput against Little's
law in-flight / mean call latency, and the caller's peak RSS) and replay
(observer replay over a window of N events published just before). Prints
one table: each figure, its ceiling, the ratio and the goal. --rows picks
figures (ingest, logsink, alerts, calls, demo, realistic, replay). What
"make bench" runs.

cluster: the calls mode three times with the same callers, in one run: on
one node (the embedded server), on a 3-node cluster of nats-server processes
(every stream and bucket at R3), and on the cluster again while the node
leading CALLS is killed with SIGKILL (then restarted) and then the node leading
EVENTS. Prints calls/s on one node and on the cluster, and each node loss's
stall: the longest time with no contact ending around it.

Common flags:
  --bin DIR        prebuilt binaries (caller, dispatcher, observer,
                   plugins/webhook); default: go build into the work dir
  --nats-conf FILE nats-server configuration with the roles (default: the
                   repository's nats.conf; roles log in with the development
                   passwords "<role>-dev-password"); "none" runs without auth
  --work-dir DIR   keep the store, config and process logs there
  --keep           keep the temporary work dir
  --log-level L    the children's log level (default info)
  --cpu-profile F  write the harness's CPU profile (it runs the NATS server
                   and the simulator) to F, for go tool pprof

Examples:
  loadtest calls --contacts 10000 --callers 2
  loadtest calls --contacts 10000 --callers 2 --dispatch follow
  loadtest calls --contacts 2000 --callers 4 --concurrency 16
  loadtest alert-latency --samples 200 --rate 5/s
  loadtest alert-latency --samples 200 --batch-size 1
  loadtest bench --messages 200000
  loadtest bench --rows realistic,replay

Exit status:
  0  the run completed: every contact ended exactly once (calls), every alert
     arrived exactly once (alert-latency)
  1  something was missing or duplicated, the run timed out, or an error
  2  bad usage
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "calls":
		return calls(ctx, args[1:], stdout, stderr)
	case "alert-latency":
		return alertLatency(ctx, args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "cluster":
		return cluster(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "loadtest: unknown command %q (want calls, alert-latency, bench, cluster or help)\n", args[0])
	return exitUsage
}

// common holds the flags both modes take.
type common struct {
	bin, natsConf, workDir, logLevel, cpuProfile string
	keep                                         bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.bin, "bin", "", "`dir` of prebuilt binaries (default: go build into the work dir)")
	fs.StringVar(&c.natsConf, "nats-conf", "", "nats-server config `file` with the roles (default: the repository's nats.conf; \"none\": no auth)")
	fs.StringVar(&c.workDir, "work-dir", "", "keep the store, config and logs in this `dir` (default: a temporary one)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary work dir")
	fs.StringVar(&c.logLevel, "log-level", "info", "the children's log `level`: debug, info, warn, error")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write this process's CPU profile (the NATS server and the simulator run in it) to `file`")
}

// profile starts the CPU profile when asked; stop ends it.
func (c *common) profile() (stop func(), err error) {
	if c.cpuProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(c.cpuProfile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func (c *common) setup(stderr io.Writer) (loadtest.Setup, error) {
	conf := c.natsConf
	switch conf {
	case "none":
		conf = ""
	case "":
		root, err := stack.RepoRoot()
		if err != nil {
			return loadtest.Setup{}, fmt.Errorf("--nats-conf: %w (give a file, or none)", err)
		}
		conf = filepath.Join(root, "nats.conf")
	}
	if conf != "" {
		if _, err := os.Stat(conf); err != nil {
			return loadtest.Setup{}, fmt.Errorf("--nats-conf: %w", err)
		}
	}
	return loadtest.Setup{
		BinDir: c.bin, NATSConf: conf, WorkDir: c.workDir, Keep: c.keep,
		LogLevel: c.logLevel, Progress: stderr,
	}, nil
}

func flagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadtest "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\nRun `loadtest help` for what each mode measures.\n")
	}
	return fs
}

// parse parses args; ok is false when the command should exit with code.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "loadtest: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage, false
	}
	return exitOK, true
}

// atLeastOne checks that the named integer flags are 1 or more.
func atLeastOne(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if n, err := strconv.Atoi(fs.Lookup(name).Value.String()); err == nil && n < 1 {
			return fmt.Errorf("--%s %d: want at least 1", name, n)
		}
	}
	return nil
}

func usageError(fs *flag.FlagSet, err error) int {
	fmt.Fprintf(fs.Output(), "loadtest: %v\n", err)
	fs.Usage()
	return exitUsage
}

func calls(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flagSet("calls", "loadtest calls [--contacts N] [--callers N] [--concurrency N] [flags]", stderr)
	var o loadtest.CallsOptions
	var c common
	fs.IntVar(&o.Contacts, "contacts", 10000, fmt.Sprintf("contacts to generate and call (at most %d)", loadtest.MaxContacts))
	fs.IntVar(&o.Callers, "callers", 2, "caller processes sharing the queue")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "calls each caller runs at once (caller.concurrency)")
	fs.IntVar(&o.FleetMaxInFlight, "fleet-max", 0, "caller.fleet_max_in_flight (default callers x concurrency)")
	fs.StringVar(&o.Dispatch, "dispatch", loadtest.DispatchDirect, "how requests are queued: direct (the harness publishes them), follow (dispatcher run, following the outcomes) or no-follow (dispatcher run --no-follow)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&o.CallerProfileDir, "caller-profile-dir", "", "have each caller write its CPU profile to `dir`/caller-N.prof (go tool pprof)")
	c.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if o.CallerProfileDir != "" {
		abs, err := filepath.Abs(o.CallerProfileDir)
		if err != nil {
			return usageError(fs, err)
		}
		o.CallerProfileDir = abs
	}
	// The library reads 0 as "the default": here a 0 is the user's.
	if err := atLeastOne(fs, "contacts", "callers", "concurrency"); err != nil {
		return usageError(fs, err)
	}
	if err := o.Check(); err != nil {
		return usageError(fs, err)
	}
	return c.run(fs, stdout, stderr, func(set loadtest.Setup) (report, error) {
		o.Setup = set
		return loadtest.RunCalls(ctx, o)
	})
}

func alertLatency(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flagSet("alert-latency", "loadtest alert-latency [--samples N] [--rate R] [flags]", stderr)
	var o loadtest.AlertOptions
	var c common
	rate := fs.String("rate", "5/s", "breaker opens per `unit`: 5/s, 300/m, or a number per second")
	fs.IntVar(&o.Samples, "samples", 200, "breaker opens to measure")
	fs.IntVar(&o.Services, "services", 10, "service names the opens cycle through")
	fs.IntVar(&o.BatchSize, "batch-size", 0, "the webhook sink's batch_size (default: the product's alert-sink default)")
	fs.DurationVar(&o.BatchWait, "batch-wait", 0, "the webhook sink's batch_wait (default: the product's alert-sink default)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "wait at most this long for the last alert after the last open")
	c.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	r, err := loadtest.ParseRate(*rate)
	if err != nil {
		return usageError(fs, err)
	}
	o.Rate = r
	if err := atLeastOne(fs, "samples", "services"); err != nil {
		return usageError(fs, err)
	}
	if err := o.Check(); err != nil {
		return usageError(fs, err)
	}
	return c.run(fs, stdout, stderr, func(set loadtest.Setup) (report, error) {
		o.Setup = set
		return loadtest.RunAlertLatency(ctx, o)
	})
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flagSet("bench", "loadtest bench [--messages N] [--calls N] [--alerts N] [flags]", stderr)
	var o loadtest.BenchOptions
	var c common
	fs.IntVar(&o.Messages, "messages", 100000, "messages per throughput figure (ceilings, ingest, log sink)")
	fs.IntVar(&o.Calls, "calls", 5000, "calls of the end-to-end figure")
	fs.IntVar(&o.AlertSamples, "alerts", 100, "paced breaker opens of the alert-latency figure (5/s)")
	fs.IntVar(&o.RealisticCalls, "realistic-calls", 2000, fmt.Sprintf("calls of the realistic-latency figure (%d in flight, about a minute each)", loadtest.RealisticInFlight))
	fs.IntVar(&o.ReplayEvents, "replay-events", 1000000, "events in the replay figure's window")
	rows := fs.String("rows", "", "comma-separated `figures` to run, of "+strings.Join(loadtest.BenchRows, ",")+" (default all)")
	c.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if err := atLeastOne(fs, "messages", "calls", "alerts", "realistic-calls", "replay-events"); err != nil {
		return usageError(fs, err)
	}
	if *rows != "" {
		o.Rows = strings.Split(*rows, ",")
		if err := loadtest.CheckRows(o.Rows); err != nil {
			return usageError(fs, fmt.Errorf("--rows: %w", err))
		}
	}
	return c.run(fs, stdout, stderr, func(set loadtest.Setup) (report, error) {
		o.Setup = set
		return loadtest.RunBench(ctx, o)
	})
}

func cluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flagSet("cluster", "loadtest cluster [--contacts N] [--callers N] [--concurrency N] [flags]", stderr)
	var o loadtest.CallsOptions
	var c common
	fs.IntVar(&o.Contacts, "contacts", 2000, "contacts per run")
	fs.IntVar(&o.Callers, "callers", 3, "caller processes sharing the queue")
	fs.IntVar(&o.Concurrency, "concurrency", 8, "calls each caller runs at once")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "give up on one run after this long")
	c.register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if err := atLeastOne(fs, "contacts", "callers", "concurrency"); err != nil {
		return usageError(fs, err)
	}
	if err := o.Check(); err != nil {
		return usageError(fs, err)
	}
	return c.run(fs, stdout, stderr, func(set loadtest.Setup) (report, error) {
		var r clusterReport
		for _, run := range []struct {
			name          string
			cluster, kill bool
		}{{"one node", false, false}, {"3-node cluster", true, false}, {"3-node cluster, leaders killed", true, true}} {
			ro := o
			ro.Setup = set
			ro.Cluster, ro.KillLeaders = run.cluster, run.kill
			if set.WorkDir != "" {
				ro.WorkDir = filepath.Join(set.WorkDir, strings.ReplaceAll(strings.ReplaceAll(run.name, " ", "-"), ",", ""))
			}
			fmt.Fprintf(stderr, "loadtest: run: %s\n", run.name)
			rep, err := loadtest.RunCalls(ctx, ro)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", run.name, err)
			}
			r.names = append(r.names, run.name)
			r.runs = append(r.runs, rep)
		}
		return &r, nil
	})
}

// clusterReport is the three runs of the cluster mode.
type clusterReport struct {
	names []string
	runs  []*loadtest.CallsReport
}

func (r *clusterReport) WriteText(w io.Writer) error {
	for i, rep := range r.runs {
		if _, err := fmt.Fprintf(w, "== %s\n", r.names[i]); err != nil {
			return err
		}
		if err := rep.WriteText(w); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "== summary\n  calls/s one node %.1f, 3-node cluster %.1f (%d callers x %d)\n",
		r.runs[0].CallsPerSecond(), r.runs[1].CallsPerSecond(), r.runs[0].Options.Callers, r.runs[0].Options.Concurrency)
	for _, k := range r.runs[2].Kills {
		if err == nil {
			_, err = fmt.Fprintf(w, "  node loss: %s (leading %s) killed at %s, stall %s\n", k.Node, k.Stream, k.At.Round(time.Millisecond), k.Stall.Round(time.Millisecond))
		}
	}
	return err
}

func (r *clusterReport) OK() bool {
	for _, rep := range r.runs {
		if !rep.OK() {
			return false
		}
	}
	return len(r.runs[2].Kills) == 2
}

// report is what every mode prints and judges.
type report interface {
	WriteText(w io.Writer) error
	OK() bool
}

// run sets up from the common flags (a bad one is a usage error of fs), runs
// one mode under the optional CPU profile, prints its report and turns its
// verdict into the exit code.
func (c *common) run(fs *flag.FlagSet, stdout, stderr io.Writer, mode func(loadtest.Setup) (report, error)) int {
	set, err := c.setup(stderr)
	if err != nil {
		return usageError(fs, err)
	}
	stopProfile, err := c.profile()
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: --cpu-profile: %v\n", err)
		return exitFail
	}
	rep, err := mode(set)
	stopProfile()
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return exitFail
	}
	if err := rep.WriteText(stdout); err != nil || !rep.OK() {
		return exitFail
	}
	return exitOK
}
