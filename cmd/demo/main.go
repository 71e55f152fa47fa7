// Command demo runs the seed scenario for real on one host: NATS (embedded or
// external), the fault simulator, the observer with every sink plugin, two
// callers and the dispatcher, each a separate process. It prints a trace of
// the campaign derived live from the events on agent.>, what each alert
// receiver got, where to look, and the post-mortem of observer replay.
// See usage below, or run `demo --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/internal/cli"
)

const usage = `demo runs the seed scenario end to end on this machine and explains it.

Usage:
  demo [--fast] [--keep] [--bin DIR] [--run-dir DIR] [--timeout D]
       [--nats-port N | --nats-url URL] [--http-port N] [--sim-port N] [--smtp-port N]

It starts, each as its own process from --bin: the fault simulator (ElevenLabs
answers 503 to the first four requests, then recovers), the observer with the
email, telegram, webhook, sheets and jsonl sinks pointed at the simulator's
receivers, two callers, and the dispatcher running demo/contacts.csv. NATS runs
inside the demo unless --nats-url names a server. It prints what happens to
each contact as the events arrive, the campaign's result, what each alert
receiver got, where to look, and the post-mortem of observer replay.

Expected result: contact 1 fails after retries of 5 s, 10 s and 20 s and
raises an alert; contacts 2 and 3 succeed: 2/3 contacts succeeded (66.7%).

Examples:
  make demo                    # build everything into bin/ and run this
  bin/demo --fast              # the same with 50/100/200 ms retry delays
  bin/demo --keep              # leave everything running to poke at it; Ctrl-C stops
  bin/demo --http-port 18080   # when 8080 is taken

  # Against an external server (start it first, in another terminal; its
  # store is ./var/nats, nats.conf's store_dir, which -sd cannot override)
  go tool nats-server -c nats.conf
  bin/demo --nats-url nats://127.0.0.1:4222

Everything of one run goes under --run-dir (default ./var/demo/<timestamp>):
config.yaml (the configuration every process reads), events.jsonl (the JSON
lines sink), logs/ (one log per process) and nats/ (the embedded server's
store).

Exit status:
  0  the campaign finished with the expected result and every alert receiver
     got the alert (or, with --keep, Ctrl-C after that)
  1  something failed: a port was taken, a process died, a timeout, another
     result; or Ctrl-C before the end
  2  bad usage

Flags:
`

func main() { os.Exit(cli.Run("demo", run)) }

// run parses the flags and runs the demo; it returns the exit code.
func run(ctx context.Context, c cli.Command, args []string) int {
	opts, code, ok := parseFlags(c, args)
	if !ok {
		return code
	}
	d := &demo{opts: opts, stdout: c.Stdout, stderr: c.Stderr, environ: c.Environ}
	return d.run(ctx)
}

// options are the demo's flags.
type options struct {
	fast      bool
	keep      bool
	bin       string
	runDir    string
	timeout   time.Duration
	natsPort  int
	natsURL   string
	httpPort  int
	simPort   int
	smtpPort  int
	mediaPort int
	natsConf  string
	scenario  string
	contacts  string
	template  string
	campaign  string
	expect    string
}

// parseFlags reads the flags. ok is false when the command should exit with
// code: after --help, or on bad usage, which it has reported.
func parseFlags(c cli.Command, args []string) (o options, code int, ok bool) {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.fast, "fast", false, "scale the retry delays down from 5/10/20 s to 50/100/200 ms")
	fs.BoolVar(&o.keep, "keep", false, "leave everything running after the summary until Ctrl-C")
	fs.StringVar(&o.bin, "bin", "./bin", "`directory` of the binaries (plugins in DIR/plugins), as make build leaves them")
	fs.StringVar(&o.runDir, "run-dir", "", "`directory` for this run's config, logs, events and NATS store (default ./var/demo/<timestamp>)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up when the run has not finished after this `duration`")
	fs.IntVar(&o.natsPort, "nats-port", 4222, "`port` of the embedded NATS server on 127.0.0.1")
	fs.StringVar(&o.natsURL, "nats-url", "", "use the NATS server at this `URL` (users of nats.conf) instead of an embedded one")
	fs.IntVar(&o.httpPort, "http-port", 8080, "`port` of the observer's /status, /healthz and /metrics on 127.0.0.1")
	fs.IntVar(&o.simPort, "sim-port", 8900, "`port` of the simulator's HTTP APIs and receivers on 127.0.0.1")
	fs.IntVar(&o.smtpPort, "smtp-port", 2525, "`port` of the simulator's SMTP receiver on 127.0.0.1")
	fs.IntVar(&o.mediaPort, "media-port", 8090, "`port` of the media server (each call's TwiML and audio) on 127.0.0.1")
	fs.StringVar(&o.natsConf, "nats-conf", "nats.conf", "nats-server configuration `file` of the embedded server")
	fs.StringVar(&o.scenario, "scenario", "scenarios/seed.yaml", "simulator scenario `file`")
	fs.StringVar(&o.contacts, "contacts", "demo/contacts.csv", "contacts `file` the dispatcher runs")
	fs.StringVar(&o.template, "config-template", "demo/config.yaml.tmpl", "configuration template `file`")
	fs.StringVar(&o.campaign, "campaign", "", "campaign `name` (default seed, or seed-<timestamp> with --nats-url so a rerun is a new campaign)")
	fs.StringVar(&o.expect, "expect", "2/3", "expected `result`, succeeded/total (\"\" accepts any finished campaign)")
	if code, ok := c.Parse(fs, args); !ok {
		return o, code, false
	}
	if fs.NArg() > 0 {
		return o, c.UsageError(fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0))), false
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"--nats-port", o.natsPort}, {"--http-port", o.httpPort}, {"--sim-port", o.simPort}, {"--smtp-port", o.smtpPort}, {"--media-port", o.mediaPort}} {
		if p.port < 1 || p.port > 65535 {
			return o, c.UsageError(fs, fmt.Sprintf("%s %d: want a port from 1 to 65535", p.flag, p.port)), false
		}
	}
	if o.timeout <= 0 {
		return o, c.UsageError(fs, "--timeout must be positive"), false
	}
	if o.expect != "" {
		if _, _, err := parseExpect(o.expect); err != nil {
			return o, c.UsageError(fs, err.Error()), false
		}
	}
	return o, cli.ExitOK, true
}

// parseExpect reads "2/3".
func parseExpect(s string) (succeeded, total int, err error) {
	a, b, found := strings.Cut(s, "/")
	succeeded, err1 := strconv.Atoi(a)
	total, err2 := strconv.Atoi(b)
	if !found || err1 != nil || err2 != nil || succeeded < 0 || total < succeeded || total == 0 {
		return 0, 0, errors.New("--expect " + strconv.Quote(s) + ": want succeeded/total such as 2/3")
	}
	return succeeded, total, nil
}
