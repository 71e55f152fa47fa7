package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/silence"
)

const silenceUsage = `observer silence mutes alerts for a while: they are still derived and recorded
on ALERTS (agent.alert.*), but not delivered to the sinks, and neither is the
resolution of an alert whose firing was muted, even if the silence has
expired since (Alertmanager's behaviour). Silences live in the key-value
bucket "silences", so they survive restarts and show on the status page.

Usage:
  observer silence add (--service S | --rule R | --severity SEV)... --for D --comment TEXT [--by NAME]
  observer silence list [--all] [--output text|json]
  observer silence expire ID

The silence commands connect as the operator role (nats.roles.operator), which
may read and write the silences bucket and nothing else.

Examples:
  observer silence add --service elevenlabs --for 1h --comment "vendor incident INC-42"
  observer silence add --rule error_rate --severity warning --for 30m --comment "load test"
  observer silence list
  observer silence expire 3f9a0c1d2e4b5a69
`

func (c command) silence(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.Notef("observer silence: want add, list or expire")
		fmt.Fprint(c.Stderr, silenceUsage)
		return cli.ExitUsage
	}
	switch args[0] {
	case "add":
		return c.silenceAdd(ctx, args[1:])
	case "list", "ls":
		return c.silenceList(ctx, args[1:])
	case "expire", "rm":
		return c.silenceExpire(ctx, args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.Stdout, silenceUsage)
		return cli.ExitOK
	}
	c.Notef("unknown silence command %q (want add, list or expire)", args[0])
	return cli.ExitUsage
}

func (c command) silenceStore(ctx context.Context, cfg config.Config) (*silence.Store, func(), error) {
	log := c.Logger(cfg.Log, "observer-silence")
	conn, err := cli.Connect(ctx, cfg.NATS, config.RoleOperator, cli.Source(config.RoleOperator), log)
	if err != nil {
		return nil, nil, err
	}
	st, err := silence.Open(ctx, conn, c.now)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return st, conn.Close, nil
}

func (c command) silenceAdd(ctx context.Context, args []string) int {
	fs := c.FlagSet("silence add", "observer silence add (--service S | --rule R | --severity SEV)... --for D --comment TEXT [flags]")
	var s silence.Silence
	fs.StringVar(&s.Matchers.Service, "service", "", "mute alerts about this `service` (llm, elevenlabs, telephony, crm)")
	fs.StringVar(&s.Matchers.Rule, "rule", "", "mute alerts of this `rule` (breaker_open, error_rate, ...)")
	fs.StringVar(&s.Matchers.Severity, "severity", "", "mute alerts of this `severity` (info, warning, critical)")
	dur := fs.Duration("for", 0, "how long the silence lasts, such as 1h (required)")
	fs.StringVar(&s.Comment, "comment", "", "why, for whoever reads the list (required)")
	fs.StringVar(&s.CreatedBy, "by", "", "who adds it (default $USER)")
	cfg, code, ok := c.Load(fs, args, nil)
	if !ok {
		return code
	}
	if *dur <= 0 {
		return c.UsageError(fs, "--for: a positive duration is required, such as 1h")
	}
	if s.CreatedBy == "" {
		s.CreatedBy = c.env("USER")
	}
	s.StartsAt = c.clock().UTC()
	s.EndsAt = s.StartsAt.Add(*dur)
	if err := s.Validate(); err != nil {
		return c.UsageError(fs, err.Error())
	}
	st, closeConn, err := c.silenceStore(ctx, cfg)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer closeConn()
	s, err = st.Add(ctx, s)
	if err != nil {
		return c.Failf("%v", err)
	}
	fmt.Fprintf(c.Stdout, "%s\n", s.ID)
	c.Notef("silence %s mutes %s until %s", s.ID, s.Matchers, s.EndsAt.Format(time.RFC3339))
	return cli.ExitOK
}

func (c command) silenceList(ctx context.Context, args []string) int {
	fs := c.FlagSet("silence list", "observer silence list [--all] [--output text|json]")
	all := fs.Bool("all", false, "also list expired silences")
	output := fs.String("output", "text", "`format`: text or json")
	cfg, code, ok := c.Load(fs, args, nil)
	if !ok {
		return code
	}
	if *output != "text" && *output != "json" {
		return c.UsageError(fs, fmt.Sprintf("--output %q: want text or json", *output))
	}
	st, closeConn, err := c.silenceStore(ctx, cfg)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer closeConn()
	list, err := st.List(ctx)
	if err != nil {
		return c.Failf("%v", err)
	}
	now := c.clock()
	shown := list[:0]
	for _, s := range list {
		if *all || s.EndsAt.After(now) {
			shown = append(shown, s)
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(append([]silence.Silence{}, shown...)); err != nil {
			return c.Failf("%v", err)
		}
		return cli.ExitOK
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMATCHERS\tSTATE\tENDS\tBY\tCOMMENT")
	for _, s := range shown {
		state := "active"
		switch {
		case !s.EndsAt.After(now):
			state = "expired"
		case s.StartsAt.After(now):
			state = "pending"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Matchers, state, s.EndsAt.Local().Format(time.RFC3339), s.CreatedBy, s.Comment)
	}
	if err := tw.Flush(); err != nil {
		return c.Failf("%v", err)
	}
	return cli.ExitOK
}

func (c command) silenceExpire(ctx context.Context, args []string) int {
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	fs := c.FlagSet("silence expire", "observer silence expire ID [flags]")
	cfg, code, ok := c.Load(fs, args, nil)
	if !ok {
		return code
	}
	if id == "" {
		return c.UsageError(fs, "the silence ID is required (observer silence list shows them)")
	}
	st, closeConn, err := c.silenceStore(ctx, cfg)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer closeConn()
	s, err := st.Expire(ctx, id)
	if errors.Is(err, silence.ErrNotFound) {
		return c.Failf("%v (observer silence list --all shows them)", err)
	}
	if err != nil {
		return c.Failf("%v", err)
	}
	c.Notef("silence %s (%s) expired at %s", s.ID, s.Matchers, s.EndsAt.Format(time.RFC3339))
	return cli.ExitOK
}

// env reads one variable from the command's environment (c.Environ, else
// none: tests stay independent of the machine).
func (c command) env(key string) string {
	for _, kv := range c.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
