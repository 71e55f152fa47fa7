// Command dispatcher runs call campaigns: it validates a contact file,
// publishes one call request per contact, follows the outcomes with a
// progress bar, re-queues contacts that were busy or skipped, and prints a
// summary. See usage below, or run `dispatcher --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/dispatcher/contacts"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `dispatcher runs call campaigns: it checks a contact file, publishes one call
request per contact, follows the outcomes and prints a summary.

Usage:
  dispatcher run --contacts FILE [--campaign NAME] [--dry-run] [--no-follow]
                 [--timeout D] [--output text|json] [--progress auto|bar|lines|off]
                 [--format csv|jsonl] [--config FILE] [--set key=value]...
  dispatcher status [--campaign NAME] [--output text|json] [--config FILE] [--set key=value]...
  dispatcher help

Examples:
  # Check a contact file without calling anyone: every rejected row with its line
  dispatcher run --contacts contacts.csv --dry-run

  # National numbers written without their +country code
  dispatcher run --contacts leads.csv --dry-run --set dispatcher.default_region=IN

  # Run the campaign "spring" and follow it to the end, for at most two hours
  dispatcher run --contacts contacts.csv --campaign spring --timeout 2h

  # Publish and leave; the same command later reads the outcomes and re-queues
  dispatcher run --contacts contacts.jsonl --campaign spring --no-follow

  # Where a campaign stands, for a script
  dispatcher status --campaign spring --output json

Contact files are CSV with a header row naming a "phone" column, or JSON lines
(one object per line) with the same keys. Optional columns: "id" (or
"contact_id"), "name", "timezone" (IANA, such as America/New_York); any other
column becomes a script variable. Numbers are checked and turned into E.164;
invalid rows are reported with their line number and the rest go ahead;
duplicates are dropped.

A campaign's state lives in the bus (the dispatcher.state_bucket key-value
bucket): running it again never calls a contact twice. Completed, failed and
exhausted contacts are left alone, requests already queued are not sent again,
and contacts waiting for a retry or their calling window are picked up where
the last run left them. SIGINT or SIGTERM stops following; run again to resume.

Configuration: --config FILE (or $AGENT_CONFIG), AGENT_* environment variables
and --set key=value, as for every agent process (see config.example.yaml):
dispatcher.campaign, default_region, default_timezone, calling_window,
max_attempts, no_answer_retry_delay, skipped_retry_delay, state_bucket.

Exit status:
  0  the campaign finished (even if some contacts failed), the requests were
     published (--no-follow) or the file was checked (--dry-run)
  1  an error, or following stopped before the campaign finished (--timeout,
     SIGINT, SIGTERM): run again to resume
  2  bad usage or a bad configuration
`

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli{stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()}.main(ctx, os.Args[1:])
}

// cli is the command with its outside world, so tests can run it whole.
type cli struct {
	stdout, stderr io.Writer
	environ        []string
}

func (c cli) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return c.run(ctx, args[1:])
	case "status":
		return c.status(ctx, args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "dispatcher: unknown command %q (want run, status or help)\n", args[0])
	return exitUsage
}

func (c cli) run(ctx context.Context, args []string) int {
	fs := c.flagSet("run", "dispatcher run --contacts FILE [flags]")
	path := fs.String("contacts", "", "contacts `file`: CSV with a header row, or JSON lines (required)")
	fs.String("campaign", "", "campaign `name`: letters, digits, - and _ (default dispatcher.campaign)")
	format := fs.String("format", "", "contacts file `format`: csv or jsonl (default: by extension, then by content)")
	dryRun := fs.Bool("dry-run", false, "only check the contact file and print the report")
	noFollow := fs.Bool("no-follow", false, "publish what is due and return without following the outcomes")
	timeout := fs.Duration("timeout", 0, "stop following after this `duration` (default: until the campaign finishes)")
	output := fs.String("output", "text", "summary `format`: text or json")
	progressMode := fs.String("progress", "auto", "progress on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or off")
	cfg, code, ok := c.load(fs, args)
	if !ok {
		return code
	}
	if *path == "" {
		return c.usageError(fs, "--contacts FILE is required")
	}
	if *output != "text" && *output != "json" {
		return c.usageError(fs, fmt.Sprintf("--output %q: want text or json", *output))
	}
	mode, err := parseProgress(*progressMode)
	if err != nil {
		return c.usageError(fs, err.Error())
	}
	if *format != "" && *format != string(contacts.FormatCSV) && *format != string(contacts.FormatJSONLines) {
		return c.usageError(fs, fmt.Sprintf("--format %q: want csv or jsonl", *format))
	}
	if *timeout < 0 {
		return c.usageError(fs, "--timeout must not be negative")
	}

	list, err := contacts.ReadFile(*path, contacts.Options{
		DefaultRegion:   cfg.Dispatcher.DefaultRegion,
		DefaultTimezone: cfg.Dispatcher.DefaultTimezone,
		Format:          contacts.Format(*format),
	})
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
		return exitError
	}
	if *dryRun {
		if *output == "json" {
			err = list.WriteJSON(c.stdout)
		} else {
			err = list.WriteReport(c.stdout)
		}
		if err != nil {
			return exitError
		}
		if len(list.Contacts) == 0 {
			fmt.Fprintln(c.stderr, "dispatcher: no valid contacts")
			return exitError
		}
		return exitOK
	}
	if err := list.WriteReport(c.stderr); err != nil {
		return exitError
	}
	if len(list.Contacts) == 0 {
		fmt.Fprintln(c.stderr, "dispatcher: no valid contacts: nothing to dispatch")
		return exitError
	}

	log := slog.New(cfg.Log.Handler(c.stderr))
	conn, err := c.connect(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
		return exitError
	}
	defer conn.Close()

	set := dispatcher.SettingsFrom(cfg.Dispatcher)
	set.Progress, set.ProgressMode, set.Log = c.stderr, mode, log
	d, err := dispatcher.New(ctx, conn, set)
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
		return exitError
	}
	rctx := ctx
	if *timeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	var sum *dispatcher.Summary
	if *noFollow {
		sum, err = d.Publish(rctx, list.Contacts)
	} else {
		sum, err = d.Run(rctx, list.Contacts)
	}
	if sum != nil {
		if werr := c.writeSummary(sum, *output); werr != nil {
			return exitError
		}
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, dispatcher.ErrUnfinished) && ctx.Err() != nil:
		fmt.Fprintln(c.stderr, "dispatcher: stopped following; the campaign's state is saved: run the same command again to resume")
	case errors.Is(err, dispatcher.ErrUnfinished):
		fmt.Fprintf(c.stderr, "dispatcher: not finished after %s: run the same command again to resume\n", *timeout)
	default:
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
	}
	return exitError
}

func (c cli) status(ctx context.Context, args []string) int {
	fs := c.flagSet("status", "dispatcher status [--campaign NAME] [flags]")
	fs.String("campaign", "", "campaign `name` (default dispatcher.campaign)")
	output := fs.String("output", "text", "summary `format`: text or json")
	cfg, code, ok := c.load(fs, args)
	if !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return c.usageError(fs, fmt.Sprintf("--output %q: want text or json", *output))
	}
	log := slog.New(cfg.Log.Handler(c.stderr))
	conn, err := c.connect(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
		return exitError
	}
	defer conn.Close()
	// Open, never create: asking about a campaign must not change anything.
	kv, err := conn.JS.KeyValue(ctx, cfg.Dispatcher.StateBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		fmt.Fprintf(c.stderr, "dispatcher: no campaign has run yet (no state bucket %q)\n", cfg.Dispatcher.StateBucket)
		return exitError
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: state bucket %s: %v\n", cfg.Dispatcher.StateBucket, err)
		return exitError
	}
	sum, err := dispatcher.Summarize(ctx, kv, cfg.Dispatcher.Campaign)
	if err != nil {
		fmt.Fprintf(c.stderr, "dispatcher: %v\n", err)
		return exitError
	}
	if err := c.writeSummary(sum, *output); err != nil {
		return exitError
	}
	return exitOK
}

func (c cli) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("dispatcher "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nRun `dispatcher help` for examples.\n")
	}
	return fs
}

// load parses the flags and loads the configuration (defaults, file,
// environment, --campaign, --set). ok is false when the command should exit
// with code: 0 after --help, 2 on a bad flag or configuration.
func (c cli) load(fs *flag.FlagSet, args []string) (cfg config.Config, code int, ok bool) {
	out := &watchedWriter{w: fs.Output()}
	fs.SetOutput(out)
	cfg, err := config.Load(config.LoadOptions{
		Args:     args,
		Environ:  c.environ,
		FlagSet:  fs,
		FlagKeys: map[string]string{"campaign": "dispatcher.campaign"},
	})
	fs.SetOutput(out.w)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, exitOK, false
	case err != nil && out.wrote:
		return cfg, exitUsage, false // the flag package has said what is wrong
	case err != nil:
		fmt.Fprintf(c.stderr, "dispatcher: bad configuration:\n%v\n", err)
		return cfg, exitUsage, false
	}
	if fs.NArg() > 0 {
		return cfg, c.usageError(fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0))), false
	}
	return cfg, exitOK, true
}

// watchedWriter notes whether anything was written through it.
type watchedWriter struct {
	w     io.Writer
	wrote bool
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.w.Write(p)
}

func (c cli) usageError(fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(c.stderr, "dispatcher: %s\n", msg)
	fs.Usage()
	return exitUsage
}

// connect joins the bus as the dispatcher role and waits for the streams,
// which an operator (or the demo) provisions: this role may not create them.
func (c cli) connect(ctx context.Context, cfg config.Config, log *slog.Logger) (*bus.Conn, error) {
	host, _ := os.Hostname()
	source := fmt.Sprintf("dispatcher-%s-%d", host, os.Getpid())
	conn, err := bus.Connect(ctx, cfg.NATS, config.RoleDispatcher, source, log)
	if err != nil {
		return nil, err
	}
	wait := cfg.NATS.ConnectTimeout
	if wait <= 0 {
		wait = 5 * time.Second
	}
	if err := conn.WaitStreams(ctx, wait, events.StreamCalls, events.StreamEvents); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c cli) writeSummary(sum *dispatcher.Summary, output string) error {
	if output == "json" {
		return sum.WriteJSON(c.stdout)
	}
	return sum.WriteText(c.stdout)
}

func parseProgress(s string) (dispatcher.ProgressMode, error) {
	switch s {
	case "auto":
		return dispatcher.ProgressAuto, nil
	case "bar":
		return dispatcher.ProgressBar, nil
	case "lines":
		return dispatcher.ProgressLines, nil
	case "off":
		return dispatcher.ProgressOff, nil
	}
	return 0, fmt.Errorf("--progress %q: want auto, bar, lines or off", s)
}
