package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/dnc"
)

// setState is `dispatcher pause|resume|cancel --campaign NAME`: it writes
// the campaign's control record, which every caller reads right before it
// dials and every dispatcher following the campaign watches.
func (c command) setState(ctx context.Context, verb string, state control.State, args []string) int {
	fs := c.FlagSet(verb, "dispatcher "+verb+" --campaign NAME [flags]")
	fs.String("campaign", "", "campaign `name` (default dispatcher.campaign)")
	cfg, code, ok := c.Load(fs, args, map[string]string{"campaign": "dispatcher.campaign"})
	if !ok {
		return code
	}
	if cfg.Dispatcher.Campaign == "" {
		return c.UsageError(fs, "--campaign NAME is required")
	}
	conn, store, err := c.openControl(ctx, cfg)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()
	now := time.Now()
	ctl, err := store.SetState(ctx, cfg.Dispatcher.Campaign, conn.Source, now, state)
	if errors.Is(err, control.ErrFinal) {
		return c.Failf("campaign %s is cancelled: it cannot be resumed or paused", cfg.Dispatcher.Campaign)
	}
	if err != nil {
		return c.Failf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "campaign %s: %s\n", cfg.Dispatcher.Campaign, ctl.Effective())
	if state != control.Cancelled {
		return cli.ExitOK
	}
	// Contacts with no request out end cancelled now; the callers end those
	// queued, and a dispatcher following the campaign the stored re-queues.
	kv, err := conn.KeyValue(ctx, cfg.Dispatcher.StateBucket, 0)
	if err != nil {
		return c.Failf("%v", err)
	}
	n, err := dispatcher.CancelWaiting(ctx, kv, cfg.Dispatcher.Campaign, now)
	if err != nil {
		return c.Failf("cancel waiting contacts: %v", err)
	}
	fmt.Fprintf(c.Stdout, "%d waiting contacts cancelled; queued ones end cancelled as callers take them\n", n)
	return cli.ExitOK
}

// pace is `dispatcher pace --campaign NAME --max-calls-per-second N
// --max-concurrent-calls N`: the campaign's pacing, fleet-wide, applied by
// callers right before they dial. 0 removes a limit; a flag left out keeps it.
func (c command) pace(ctx context.Context, args []string) int {
	fs := c.FlagSet("pace", "dispatcher pace --campaign NAME [--max-calls-per-second N] [--max-concurrent-calls N]")
	fs.String("campaign", "", "campaign `name` (default dispatcher.campaign)")
	rate := fs.Int("max-calls-per-second", -1, "dials started per second across the fleet, 0 for no limit")
	conc := fs.Int("max-concurrent-calls", -1, "calls ringing or in progress at once across the fleet, 0 for no limit")
	cfg, code, ok := c.Load(fs, args, map[string]string{"campaign": "dispatcher.campaign"})
	if !ok {
		return code
	}
	if cfg.Dispatcher.Campaign == "" {
		return c.UsageError(fs, "--campaign NAME is required")
	}
	if *rate < 0 && *conc < 0 {
		return c.UsageError(fs, "give --max-calls-per-second, --max-concurrent-calls or both")
	}
	conn, store, err := c.openControl(ctx, cfg)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()
	ctl, err := store.Update(ctx, cfg.Dispatcher.Campaign, conn.Source, time.Now(), func(ctl *control.Control) error {
		if *rate >= 0 {
			ctl.MaxCallsPerSecond = *rate
		}
		if *conc >= 0 {
			ctl.MaxConcurrentCalls = *conc
		}
		return nil
	})
	if err != nil {
		return c.Failf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "campaign %s: %s\n", cfg.Dispatcher.Campaign, ctl)
	return cli.ExitOK
}

// dnc is `dispatcher dnc add|remove|list`.
func (c command) dnc(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.Notef("dnc: want add, remove or list")
		return cli.ExitUsage
	}
	verb := args[0]
	fs := c.FlagSet("dnc "+verb, "dispatcher dnc add|remove NUMBER... [--comment TEXT] | dnc list")
	comment := fs.String("comment", "", "why the number may not be called (dnc add)")
	// The numbers come first, before any flag (none starts with '-').
	rest := args[1:]
	var numbers []string
	for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		numbers, rest = append(numbers, rest[0]), rest[1:]
	}
	cfg, code, ok := c.Load(fs, rest, nil)
	if !ok {
		return code
	}
	switch verb {
	case "add", "remove":
		if len(numbers) == 0 {
			return c.UsageError(fs, "give at least one phone number")
		}
	case "list":
		if len(numbers) > 0 {
			return c.UsageError(fs, "dnc list takes no numbers")
		}
	default:
		return c.UsageError(fs, fmt.Sprintf("dnc %q: want add, remove or list", verb))
	}
	// Normalised as contact files are read, so that a number written
	// nationally matches the E.164 one a call request holds.
	var e164s []string
	for _, n := range numbers {
		e, err := contacts.Normalize(n, contacts.Options{DefaultRegion: cfg.Dispatcher.DefaultRegion})
		if err != nil {
			return c.Failf("%s: %v", events.MaskPhone(n), err)
		}
		e164s = append(e164s, e)
	}
	conn, err := connect(ctx, cfg, c.Logger(cfg.Log, "dispatcher"))
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()
	list, err := dnc.Open(ctx, conn)
	if err != nil {
		return c.Failf("%v", err)
	}
	switch verb {
	case "add":
		for _, n := range e164s {
			e, err := list.Add(ctx, n, *comment, conn.Source, time.Now())
			if err != nil {
				return c.Failf("%v", err)
			}
			fmt.Fprintf(c.Stdout, "added %s\n", e.Contact)
		}
	case "remove":
		for _, n := range e164s {
			err := list.Remove(ctx, n)
			if errors.Is(err, dnc.ErrNotListed) {
				return c.Failf("%s is not on the do-not-call list", events.MaskPhone(n))
			}
			if err != nil {
				return c.Failf("%v", err)
			}
			fmt.Fprintf(c.Stdout, "removed %s\n", events.MaskPhone(n))
		}
	case "list":
		entries, err := list.Entries(ctx)
		if err != nil {
			return c.Failf("%v", err)
		}
		tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CONTACT\tADDED\tBY\tCOMMENT")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Contact, e.AddedAt.UTC().Format(time.DateTime+" MST"), orDash(e.By), orDash(e.Comment))
		}
		if err := tw.Flush(); err != nil {
			return cli.ExitError
		}
		fmt.Fprintf(c.Stdout, "%d numbers\n", len(entries))
	}
	return cli.ExitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// openControl connects as the dispatcher and opens the campaign_control
// bucket; the caller closes the connection.
func (c command) openControl(ctx context.Context, cfg config.Config) (*bus.Conn, *control.Store, error) {
	conn, err := connect(ctx, cfg, c.Logger(cfg.Log, "dispatcher"))
	if err != nil {
		return nil, nil, err
	}
	store, err := control.Open(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, store, nil
}
