package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// Timings of the demo itself.
const (
	// startWait bounds how long a process may take to become ready.
	startWait = 20 * time.Second
	// alertWait bounds how long, after the campaign, the alerts may take to
	// reach every receiver.
	alertWait = 30 * time.Second
	// settle is how long the Sheets row count must stay the same to be
	// reported as final.
	settle = 1500 * time.Millisecond
	poll   = 100 * time.Millisecond
)

// Delays of the seed scenario's retry policy, real and --fast.
var (
	realDelay = 5 * time.Second
	fastDelay = 50 * time.Millisecond
)

// alertSinks are the sinks that carry alerts to people, and the simulator
// receiver each one delivers to.
var alertSinks = []struct{ sink, receiver string }{
	{"email", simulator.ServiceSMTP},
	{"telegram", simulator.ServiceTelegram},
	{"webhook", simulator.ServiceWebhook},
}

// demo is one run.
type demo struct {
	opts           options
	stdout, stderr io.Writer
	environ        []string

	runDir, logDir string
	cfgPath        string
	cfg            config.Config
	secrets        secrets
	log            *slog.Logger // to logs/demo.log
	logFile        *os.File
	started        time.Time
	simURL         string
	natsURL        string

	nats *stack.NATS
	// adminConn provisions the streams and watches the callers' consumer.
	adminConn *bus.Conn
	tail      *bus.Conn
	stack     *stack.Stack // the children, in start order
	tr        *tracer
	admin     *admin
}

// secrets are made up for each run and given to the processes in their
// environment only: never on a command line, in the config file or printed.
type secrets struct {
	apiKey        string
	telegramToken string
	webhookSecret string
	mediaKey      string
}

// fail is an error the demo reports as it is: it says what went wrong and
// where to look.
func fail(format string, args ...any) error { return fmt.Errorf(format, args...) }

// run plays the demo and stops everything it started; it returns the exit
// code. The whole run, until the summary, is bounded by --timeout.
func (d *demo) run(ctx context.Context) int {
	d.started = time.Now()
	err := d.prepare()
	if err != nil {
		fmt.Fprintf(d.stderr, "demo: %v\n", err)
		return cli.ExitError
	}
	defer d.shutdown()

	rctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	err = d.play(rctx)
	switch {
	case err == nil:
		if d.opts.keep {
			d.keep(ctx)
		}
		return cli.ExitOK
	case ctx.Err() != nil:
		d.failed("interrupted before the end")
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		d.failed(fmt.Sprintf("not finished after --timeout %s (%v); see the logs in %s", d.opts.timeout, err, d.rel(d.logDir)))
	default:
		d.failed(err.Error())
	}
	return cli.ExitError
}

// failed says on stderr why the demo failed, after ending the live trace.
func (d *demo) failed(why string) {
	if d.tr != nil {
		d.tr.silence()
	}
	fmt.Fprintf(d.stderr, "demo: FAILED: %s\n", why)
}

// prepare makes the run directory, checks the ports and writes the
// configuration; it starts nothing.
func (d *demo) prepare() error {
	d.runDir = d.opts.runDir
	if d.runDir == "" {
		d.runDir = filepath.Join("var", "demo", d.started.Format("20060102-150405"))
	}
	var err error
	if d.runDir, err = filepath.Abs(d.runDir); err != nil {
		return err
	}
	d.logDir = filepath.Join(d.runDir, "logs")
	if d.opts.bin, err = filepath.Abs(d.opts.bin); err != nil {
		return err
	}
	d.stack = &stack.Stack{Bin: d.opts.bin, LogDir: d.logDir}
	for _, name := range []string{"simulator", "media", "observer", "caller", "dispatcher"} {
		if _, err := os.Stat(filepath.Join(d.opts.bin, name)); err != nil {
			return fmt.Errorf("%s not found in --bin %s: run make build first, or point --bin at the binaries", name, d.opts.bin)
		}
	}
	for _, f := range []struct{ path, flag string }{
		{d.opts.natsConf, "--nats-conf"}, {d.opts.scenario, "--scenario"},
		{d.opts.contacts, "--contacts"}, {d.opts.template, "--config-template"},
	} {
		if f.flag == "--nats-conf" && d.opts.natsURL != "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s %s: %w (run the demo from the repository root, as make demo does)", f.flag, f.path, errors.Unwrap(err))
		}
	}
	if err := d.checkPorts(); err != nil {
		return err
	}
	if err := os.MkdirAll(d.logDir, 0o755); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if d.logFile, err = os.OpenFile(filepath.Join(d.logDir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return fmt.Errorf("demo log: %w", err)
	}
	d.log = slog.New(slog.NewTextHandler(d.logFile, nil)).With("process", "demo")

	d.secrets = secrets{apiKey: "sk_demo_" + token(12), telegramToken: "7000000001:" + token(16), webhookSecret: token(24), mediaKey: token(24)}
	d.simURL = fmt.Sprintf("http://127.0.0.1:%d", d.opts.simPort)
	d.natsURL = d.opts.natsURL
	if d.natsURL == "" {
		d.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", d.opts.natsPort)
	}
	if d.opts.campaign == "" {
		d.opts.campaign = "seed"
		if d.opts.natsURL != "" {
			// An external server keeps campaign state from earlier runs, and
			// a campaign never calls a contact twice: a rerun needs a new name.
			d.opts.campaign = "seed-" + d.started.Format("20060102-150405")
		}
	}
	return d.writeConfig()
}

// checkPorts fails early, naming the flag to change, when a port the demo
// listens on is taken.
func (d *demo) checkPorts() error {
	ports := []struct {
		port       int
		what, flag string
	}{
		{d.opts.natsPort, "the embedded NATS server", "--nats-port (or use --nats-url)"},
		{d.opts.httpPort, "the observer's status page", "--http-port"},
		{d.opts.simPort, "the simulator's HTTP APIs", "--sim-port"},
		{d.opts.smtpPort, "the simulator's SMTP receiver", "--smtp-port"},
		{d.opts.mediaPort, "the media server", "--media-port"},
	}
	seen := map[int]string{}
	for i, p := range ports {
		if i == 0 && d.opts.natsURL != "" {
			continue
		}
		if other, dup := seen[p.port]; dup {
			return fmt.Errorf("port %d is given both to %s and to %s: change %s", p.port, other, p.what, p.flag)
		}
		seen[p.port] = p.what
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
		if err != nil {
			return fmt.Errorf("port %d (%s) is taken: stop what uses it, or choose another port with %s", p.port, p.what, p.flag)
		}
		ln.Close()
	}
	return nil
}

// writeConfig fills the template into <run dir>/config.yaml and loads it the
// way every process will, so a mistake stops the demo before anything runs.
func (d *demo) writeConfig() error {
	tmpl, err := template.ParseFiles(d.opts.template)
	if err != nil {
		return fmt.Errorf("config template: %w", err)
	}
	retry, health, healthTimeout := realDelay, 5*time.Second, 2*time.Second
	if d.opts.fast {
		retry, health, healthTimeout = fastDelay, time.Second, 500*time.Millisecond
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"NATSURL":        d.natsURL,
		"SimURL":         d.simURL,
		"SMTPPort":       d.opts.smtpPort,
		"SMTPCert":       filepath.Join(d.runDir, "smtp-cert.pem"),
		"HTTPAddr":       fmt.Sprintf("127.0.0.1:%d", d.opts.httpPort),
		"MediaAddr":      fmt.Sprintf("127.0.0.1:%d", d.opts.mediaPort),
		"PluginDir":      filepath.Join(d.opts.bin, "plugins"),
		"EventsFile":     filepath.Join(d.runDir, "events.jsonl"),
		"Campaign":       d.opts.campaign,
		"RetryDelay":     retry.String(),
		"HealthInterval": health.String(),
		"HealthTimeout":  healthTimeout.String(),
		"Services":       config.Services,
	})
	if err != nil {
		return fmt.Errorf("config template %s: %w", d.opts.template, err)
	}
	d.cfgPath = filepath.Join(d.runDir, "config.yaml")
	if err := os.WriteFile(d.cfgPath, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	d.cfg, err = config.Load(config.LoadOptions{Args: []string{"--config", d.cfgPath}, Environ: d.env("observer")})
	if err != nil {
		return fmt.Errorf("generated configuration %s:\n%w", d.cfgPath, err)
	}
	return nil
}

// env is a child's environment: the demo's own, plus the secrets that
// child needs and no others.
func (d *demo) env(role string) []string {
	env := slices.Clone(d.environ)
	switch role {
	case "caller":
		for _, s := range config.Services {
			env = append(env, "AGENT_SERVICES__"+strings.ToUpper(s)+"__API_KEY="+d.secrets.apiKey)
		}
		env = append(env, "AGENT_MEDIA__SIGNING_KEY="+d.secrets.mediaKey)
	case "media":
		env = append(env, "AGENT_MEDIA__SIGNING_KEY="+d.secrets.mediaKey)
	case "observer":
		env = append(env,
			"AGENT_SINKS__TELEGRAM__CONFIG__TOKEN="+d.secrets.telegramToken,
			"AGENT_SINKS__WEBHOOK__CONFIG__SECRET="+d.secrets.webhookSecret)
	}
	return env
}

// play runs the scenario and prints it; it returns why the demo failed.
func (d *demo) play(ctx context.Context) error {
	speed := "real 5/10/20 s retry delays"
	if d.opts.fast {
		speed = "--fast: retry delays of 50/100/200 ms"
	}
	d.say(fmt.Sprintf("Call agent demo: the seed scenario (%s), %s", d.opts.scenario, speed))
	d.say("Run directory: " + d.rel(d.runDir))

	if err := d.startNATS(ctx); err != nil {
		return err
	}
	if err := d.startTail(ctx); err != nil {
		return err
	}
	if err := d.startServices(ctx); err != nil {
		return err
	}
	d.say(fmt.Sprintf("Campaign %q: the contacts of %s, one call at a time over caller-1 and caller-2", d.opts.campaign, d.opts.contacts))
	d.say("")
	d.say("Trace (live, from the events on agent.>):")

	var out bytes.Buffer
	disp, err := d.spawn(stack.Spec{
		Name: "dispatcher", Env: d.env("dispatcher"), Stdout: &out, StdoutToLog: true,
		Args: []string{"run", "--config", d.cfgPath, "--contacts", d.opts.contacts, "--campaign", d.opts.campaign,
			// A little longer than the demo waits, so the demo's own
			// deadline reports a timeout; the dispatcher's bounds an
			// orphan should the demo be killed.
			"--output", "json", "--progress", "lines", "--timeout", (d.remaining(ctx) + 15*time.Second).String()},
	})
	if err != nil {
		return err
	}
	if err := d.waitExit(ctx, disp); err != nil {
		return err
	}
	if disp.Err() != nil {
		return fail("the dispatcher %s; the end of %s:\n%s", disp.Describe(), d.rel(disp.LogPath()), indent(disp.Tail(10)))
	}
	var sum struct {
		dispatcher.Summary
		Result string `json:"result"`
	}
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		return fail("the dispatcher's summary is not the JSON expected (%v); see %s", err, d.rel(disp.LogPath()))
	}

	// The dispatcher follows the outcomes on its own consumer; the tail may
	// be a moment behind it.
	_ = d.until(ctx, 5*time.Second, func() bool {
		for _, c := range sum.Contacts {
			if c.LastCallID != "" && !d.tr.ended(c.LastCallID) {
				return false
			}
		}
		return true
	})
	alertErr := d.waitAlerts(ctx, sum.Failed+sum.Exhausted > 0)
	d.tr.silence()

	d.say("")
	d.say("Result (the trace of each contact; the last line is the dispatcher's summary):")
	for _, c := range sum.Contacts {
		line, ok := d.tr.finalLine(c.ContactID)
		if !ok {
			line = fmt.Sprintf("Contact %s (%s): %s", c.ContactID, c.Contact, c.Status)
		}
		if !matches(c.Status, line) {
			line += fmt.Sprintf("   [dispatcher: %s%s]", c.Status, paren(c.LastReason))
		}
		line += d.audioNote(ctx, c.LastCallID)
		d.say(line)
	}
	d.say(sum.Result)
	d.say("")

	receiversOK := d.reportReceivers(ctx)
	d.say("")
	d.whereToLook()
	d.say("")
	d.replay(ctx)
	d.say("")

	switch {
	case !sum.Finished:
		return fail("the campaign did not finish: %s", sum.Result)
	case d.opts.expect != "" && !expected(d.opts.expect, sum.Succeeded, sum.Total):
		return fail("expected %s contacts to succeed, got %s", d.opts.expect, sum.Result)
	case alertErr != nil:
		return alertErr
	case !receiversOK:
		return fail("a receiver did not get what it should have; see %s", d.rel(filepath.Join(d.logDir, "observer.log")))
	}
	d.say(fmt.Sprintf("Demo finished as expected: %s.", sum.Result))
	return nil
}

// matches reports whether the trace's line agrees with the dispatcher's
// status for the contact.
func matches(st dispatcher.Status, line string) bool {
	switch st {
	case dispatcher.StatusCompleted:
		return strings.Contains(line, "success")
	case dispatcher.StatusFailed:
		return strings.Contains(line, "failed")
	}
	return true
}

// expected reports whether the result is the --expect one.
func expected(want string, succeeded, total int) bool {
	s, t, err := parseExpect(want)
	return err == nil && s == succeeded && t == total
}

// say prints a line of the demo's own.
func (d *demo) say(s string) {
	if d.tr != nil {
		d.tr.println(s)
		return
	}
	fmt.Fprintln(d.stdout, s)
}

func (d *demo) binPath(name string) string { return filepath.Join(d.opts.bin, name) }

// remaining is how long ctx has left, for the dispatcher's own --timeout.
func (d *demo) remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl).Round(time.Second)
	}
	return d.opts.timeout
}

// rel shows a path relative to the working directory when it is inside it.
func (d *demo) rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	r, err := filepath.Rel(wd, path)
	if err != nil || strings.HasPrefix(r, "..") {
		return path
	}
	return r
}

// token returns n random bytes in hex.
func token(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
