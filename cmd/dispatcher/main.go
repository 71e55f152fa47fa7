// Command dispatcher runs call campaigns: it validates a contact file,
// publishes one call request per contact, follows the outcomes with a
// progress bar, re-queues contacts that were busy or skipped, and prints a
// summary. See usage below, or run `dispatcher --help`.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/dnc"
)

const usage = `dispatcher runs call campaigns: it checks a contact file, publishes one call
request per contact, follows the outcomes and prints a summary.

Usage:
  dispatcher run --contacts FILE [--campaign NAME] [--dry-run] [--no-follow]
                 [--timeout D] [--output text|json] [--progress auto|bar|lines|off]
                 [--format csv|jsonl] [--config FILE] [--set key=value]...
  dispatcher status [--campaign NAME] [--output text|json] [--config FILE] [--set key=value]...
  dispatcher pause|resume|cancel --campaign NAME [--config FILE] [--set key=value]...
  dispatcher pace --campaign NAME [--max-calls-per-second N] [--max-concurrent-calls N]
  dispatcher dnc add NUMBER... [--comment TEXT] | dnc remove NUMBER... | dnc list
  dispatcher provision [--config FILE] [--set key=value]...
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

  # Stop dialling for a while: queued requests wait, calls in progress finish
  dispatcher pause --campaign spring
  dispatcher resume --campaign spring

  # End it: every contact not yet rung ends "cancelled" (final)
  dispatcher cancel --campaign spring

  # At most 5 dials a second and 20 calls at once, across every caller
  dispatcher pace --campaign spring --max-calls-per-second 5 --max-concurrent-calls 20

  # Never ring this number again, in any campaign; its contacts end "suppressed"
  dispatcher dnc add +14155552671 --comment "asked on 2026-11-30"

  # Create or update every stream and key-value bucket on a NATS server, as
  # the admin role (nats.roles.admin); safe to run again
  dispatcher provision

Contact files are CSV with a header row naming a "phone" column, or JSON lines
(one object per line) with the same keys. Optional columns: "id" (or
"contact_id"), "name", "timezone" (IANA, such as America/New_York); any other
column becomes a script variable. Numbers are checked and turned into E.164;
invalid rows are reported with their line number and the rest go ahead;
duplicates are dropped.

A campaign's state lives in the bus (the dispatcher.state_bucket key-value
bucket): running it again never calls a contact twice. Completed, failed and
exhausted contacts are left alone, requests already queued are not sent again,
and contacts waiting for their calling window are picked up where the last run
left them. A busy, unanswered or skipped contact's next attempt is stored in
the CALLS stream as a message schedule that fires when due, whether or not a
dispatcher runs. SIGINT or SIGTERM stops following; run again to resume and
read the outcomes missed meanwhile.

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

func main() { os.Exit(cli.Run("dispatcher", run)) }

// run is the whole command, so tests can run it on buffers.
func run(ctx context.Context, c cli.Command, args []string) int { return command{c}.main(ctx, args) }

type command struct{ cli.Command }

func (c command) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.Stderr, usage)
		return cli.ExitUsage
	}
	switch args[0] {
	case "run":
		return c.run(ctx, args[1:])
	case "status":
		return c.status(ctx, args[1:])
	case "provision":
		return c.provision(ctx, args[1:])
	case "pause":
		return c.setState(ctx, "pause", control.Paused, args[1:])
	case "resume":
		return c.setState(ctx, "resume", control.Running, args[1:])
	case "cancel":
		return c.setState(ctx, "cancel", control.Cancelled, args[1:])
	case "pace":
		return c.pace(ctx, args[1:])
	case "dnc":
		return c.dnc(ctx, args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.Stdout, usage)
		return cli.ExitOK
	}
	c.Notef("unknown command %q (want run, status, pause, resume, cancel, pace, dnc, provision or help)", args[0])
	return cli.ExitUsage
}

func (c command) run(ctx context.Context, args []string) int {
	fs := c.FlagSet("run", "dispatcher run --contacts FILE [flags]")
	path := fs.String("contacts", "", "contacts `file`: CSV with a header row, or JSON lines (required)")
	fs.String("campaign", "", "campaign `name`: letters, digits, - and _ (default dispatcher.campaign)")
	format := fs.String("format", "", "contacts file `format`: csv or jsonl (default: by extension, then by content)")
	dryRun := fs.Bool("dry-run", false, "only check the contact file and print the report")
	noFollow := fs.Bool("no-follow", false, "publish what is due and return without following the outcomes")
	timeout := fs.Duration("timeout", 0, "stop following after this `duration` (default: until the campaign finishes)")
	output := fs.String("output", "text", "summary `format`: text or json")
	progressMode := fs.String("progress", "auto", "progress on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or off")
	cfg, code, ok := c.Load(fs, args, map[string]string{"campaign": "dispatcher.campaign"})
	if !ok {
		return code
	}
	if *path == "" {
		return c.UsageError(fs, "--contacts FILE is required")
	}
	if *output != "text" && *output != "json" {
		return c.UsageError(fs, fmt.Sprintf("--output %q: want text or json", *output))
	}
	mode, err := parseProgress(*progressMode)
	if err != nil {
		return c.UsageError(fs, err.Error())
	}
	if *format != "" && *format != string(contacts.FormatCSV) && *format != string(contacts.FormatJSONLines) {
		return c.UsageError(fs, fmt.Sprintf("--format %q: want csv or jsonl", *format))
	}
	if *timeout < 0 {
		return c.UsageError(fs, "--timeout must not be negative")
	}

	list, err := contacts.ReadFile(*path, contacts.Options{
		DefaultRegion:   cfg.Dispatcher.DefaultRegion,
		DefaultTimezone: cfg.Dispatcher.DefaultTimezone,
		Format:          contacts.Format(*format),
	})
	if err != nil {
		return c.Failf("%v", err)
	}
	if *dryRun {
		if *output == "json" {
			err = list.WriteJSON(c.Stdout)
		} else {
			err = list.WriteReport(c.Stdout)
		}
		if err != nil {
			return cli.ExitError
		}
		if len(list.Contacts) == 0 {
			return c.Failf("no valid contacts")
		}
		report := c.Stdout
		if *output == "json" {
			report = c.Stderr // the JSON on stdout stays one document
		}
		c.reportDoNotCall(ctx, cfg, list.Contacts, report)
		return cli.ExitOK
	}
	if err := list.WriteReport(c.Stderr); err != nil {
		return cli.ExitError
	}
	if len(list.Contacts) == 0 {
		return c.Failf("no valid contacts: nothing to dispatch")
	}

	log := c.Logger(cfg.Log, "dispatcher")
	conn, err := connect(ctx, cfg, log)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()

	if err := defaultPacing(ctx, conn, cfg.Dispatcher, time.Now()); err != nil {
		return c.Failf("%v", err)
	}
	set := dispatcher.SettingsFrom(cfg.Dispatcher)
	set.Progress, set.ProgressMode, set.Log = c.Stderr, mode, log
	d, err := dispatcher.New(ctx, conn, set)
	if err != nil {
		return c.Failf("%v", err)
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
			return cli.ExitError
		}
	}
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, dispatcher.ErrUnfinished) && ctx.Err() != nil:
		return c.Failf("stopped following; the campaign's state is saved: run the same command again to resume")
	case errors.Is(err, dispatcher.ErrUnfinished):
		return c.Failf("not finished after %s: run the same command again to resume", *timeout)
	}
	return c.Failf("%v", err)
}

func (c command) status(ctx context.Context, args []string) int {
	fs := c.FlagSet("status", "dispatcher status [--campaign NAME] [flags]")
	fs.String("campaign", "", "campaign `name` (default dispatcher.campaign)")
	output := fs.String("output", "text", "summary `format`: text or json")
	cfg, code, ok := c.Load(fs, args, map[string]string{"campaign": "dispatcher.campaign"})
	if !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return c.UsageError(fs, fmt.Sprintf("--output %q: want text or json", *output))
	}
	conn, err := connect(ctx, cfg, c.Logger(cfg.Log, "dispatcher"))
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()
	// Open, never create: asking about a campaign must not change anything.
	kv, err := conn.OpenKeyValue(ctx, cfg.Dispatcher.StateBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return c.Failf("no campaign has run yet (no state bucket %q)", cfg.Dispatcher.StateBucket)
	}
	if err != nil {
		return c.Failf("state bucket %s: %v", cfg.Dispatcher.StateBucket, err)
	}
	sum, err := dispatcher.Summarize(ctx, kv, cfg.Dispatcher.Campaign)
	if err != nil {
		return c.Failf("%v", err)
	}
	// Paused or cancelled, and the pacing, when anyone ever set them.
	if store, err := control.OpenExisting(ctx, conn); err == nil {
		if ctl, err := store.Get(ctx, cfg.Dispatcher.Campaign); err == nil {
			sum.Control = &ctl
		}
	}
	if err := c.writeSummary(sum, *output); err != nil {
		return cli.ExitError
	}
	return cli.ExitOK
}

// provision creates or updates, as the admin role, every stream and bucket
// the product needs (bus.Provision), and prints one line per object.
func (c command) provision(ctx context.Context, args []string) int {
	fs := c.FlagSet("provision", "dispatcher provision [flags]")
	cfg, code, ok := c.Load(fs, args, nil)
	if !ok {
		return code
	}
	log := c.Logger(cfg.Log, "dispatcher")
	conn, err := bus.Connect(ctx, cfg.NATS, config.RoleAdmin, cli.Source("provision"), log)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()
	done, err := conn.Provision(ctx, cfg)
	for _, p := range done {
		fmt.Fprintln(c.Stdout, p)
	}
	if err != nil {
		return c.Failf("provision as %q: %v", config.RoleAdmin, err)
	}
	return cli.ExitOK
}

// connect joins the bus as the dispatcher role once CALLS and EVENTS exist.
func connect(ctx context.Context, cfg config.Config, log *slog.Logger) (*bus.Conn, error) {
	return cli.Connect(ctx, cfg.NATS, config.RoleDispatcher, cli.Source(config.RoleDispatcher), log, events.StreamCalls, events.StreamEvents)
}

func (c command) writeSummary(sum *dispatcher.Summary, output string) error {
	if output == "json" {
		return sum.WriteJSON(c.Stdout)
	}
	return sum.WriteText(c.Stdout)
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

// reportDoNotCall lists, for a dry run, the contacts whose number is on the
// do-not-call list: a run would end them suppressed without ringing them
// (the callers check right before every dial, so a number listed later is
// never rung either). A dry run checks the file offline too: when NATS is
// out of reach it says the list was not checked, and still succeeds.
func (c command) reportDoNotCall(ctx context.Context, cfg config.Config, list []contacts.Contact, w io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg.NATS.ConnectTimeout = min(cmp.Or(cfg.NATS.ConnectTimeout, 3*time.Second), 3*time.Second)
	conn, err := bus.Connect(ctx, cfg.NATS, config.RoleDispatcher, cli.Source(config.RoleDispatcher), slog.New(slog.DiscardHandler))
	var l *dnc.List
	if err == nil {
		defer conn.Close()
		l, err = dnc.OpenExisting(ctx, conn)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			fmt.Fprintf(w, "do-not-call: 0 of %d contacts listed (no list provisioned)\n", len(list))
			return
		}
	}
	if err != nil {
		fmt.Fprintf(w, "do-not-call list not checked: %v\n", err)
		return
	}
	var lines []string
	for _, ct := range list {
		listed, err := l.Contains(ctx, ct.Phone)
		if err != nil {
			fmt.Fprintf(w, "do-not-call list not checked: %v\n", err)
			return
		}
		if listed {
			lines = append(lines, fmt.Sprintf("  suppressed line %d: %s (%s) is on the do-not-call list: it would not be rung\n", ct.Line, ct.ID, ct.Masked()))
		}
	}
	fmt.Fprintf(w, "do-not-call: %d of %d contacts listed\n%s", len(lines), len(list), strings.Join(lines, ""))
}

// defaultPacing gives a campaign the configured pacing
// (dispatcher.max_calls_per_second, max_concurrent_calls) when it has no
// control record yet: what an operator set since, with `pace` or otherwise,
// is theirs and a later run leaves it alone.
func defaultPacing(ctx context.Context, conn *bus.Conn, d config.Dispatcher, now time.Time) error {
	if d.MaxCallsPerSecond == 0 && d.MaxConcurrentCalls == 0 {
		return nil
	}
	store, err := control.Open(ctx, conn)
	if err != nil {
		return err
	}
	_, err = store.Update(ctx, d.Campaign, cli.Source(config.RoleDispatcher), now, func(c *control.Control) error {
		if c.UpdatedAt.IsZero() { // never written
			c.MaxCallsPerSecond, c.MaxConcurrentCalls = d.MaxCallsPerSecond, d.MaxConcurrentCalls
		}
		return nil
	})
	return err
}
