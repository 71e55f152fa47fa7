package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/replay"
	"github.com/callagent/agent/internal/observer/report"
)

const usage = `observer watches the call agent's events: it derives each service's status
and the alerts a person must see, delivers them to the sink plugins, and serves
/healthz, /readyz, /status and /metrics. observer replay re-derives a past
window for a post-mortem.

Usage:
  observer [run] [--http ADDR] [--consumer NAME] [--config FILE] [--set key=value]...
  observer replay [--since D | --from TIME [--to TIME]] [--format text|markdown|json]
                  [--deliver SINK] [--limit N] [--config FILE] [--set key=value]...
  observer silence add|list|expire ...   (observer silence help)
  observer help

Examples:
  # Run the observer with the shared configuration file
  observer --config config.yaml

  # Alert sooner while testing: no grouping, down after one minute
  observer --config config.yaml --set observer.rules.group_wait=0s --set observer.rules.down_for=1m

  # What happened in the last two hours, for the incident channel
  observer replay --config config.yaml --since 2h --format markdown

  # A fixed window, as JSON for a script
  observer replay --config config.yaml --from 2026-03-14T09:00:00Z --to 2026-03-14T10:00:00Z --format json

  # Send the alerts of a window that were missed to one sink (here "telegram")
  observer replay --config config.yaml --since 30m --deliver telegram

  # Mute ElevenLabs' alerts for an hour during a vendor incident
  observer silence add --service elevenlabs --for 1h --comment "vendor incident INC-42"

  # The live view: the status page in a browser, or the JSON
  open http://127.0.0.1:8080/
  curl -s 127.0.0.1:8080/status | jq .services

observer run consumes the EVENTS stream on the durable consumer observer.consumer
and keeps its state in the key-value buckets "service_status" and "alert_state",
so a restart (even after kill -9) loses no alert and sends none twice. SIGINT or
SIGTERM drains: the event in hand is finished, the state saved, the sinks
stopped.

For high availability run two or more observers with the same
observer.consumer: the one holding the lease in the key-value bucket
"observer_lease" is active (derives and delivers), the others stand by and
one takes over when the active one has not renewed it for observer.lease.ttl
(at once when it stops cleanly). /readyz says which is active.

observer replay reads the window with an ephemeral consumer, so it does not
disturb the live one, runs the same rules on the events' own time and prints a
report: per service when the impact began and ended, the time to detect (first
failure to first alert) and to recover, the calls affected, the alerts fired,
and a timeline. It publishes nothing; --deliver SINK hands the derived alerts
to that one sink.

Configuration: --config FILE (or $AGENT_CONFIG), AGENT_* environment variables
and --set key=value, as for every agent process (see config.example.yaml):
observer.http.addr, observer.consumer, observer.plugin_dir, observer.lease.ttl,
observer.rules.{down_for, error_rate, retry_rate, rate_window,
rate_min_requests, latency, repeat_interval, group_wait}, sinks.

Exit status:
  0  stopped by SIGINT or SIGTERM, or the report was printed
  1  an error (the bus unreachable, a sink that would not start, ...)
  2  bad usage or a bad configuration
`

// run is the whole command, so tests can run it on buffers.
func run(ctx context.Context, c cli.Command, args []string) int {
	return command{Command: c}.main(ctx, args)
}

type command struct {
	cli.Command
	// now is the wall clock; nil means time.Now.
	now func() time.Time
}

func (c command) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		return c.run(ctx, nil)
	}
	switch args[0] {
	case "run":
		return c.run(ctx, args[1:])
	case "replay":
		return c.replay(ctx, args[1:])
	case "silence":
		return c.silence(ctx, args[1:])
	case "help", "-h", "-help", "--help":
		fmt.Fprint(c.Stdout, usage)
		return cli.ExitOK
	}
	if len(args[0]) > 0 && args[0][0] == '-' {
		return c.run(ctx, args)
	}
	c.Notef("unknown command %q (want run, replay, silence or help)", args[0])
	return cli.ExitUsage
}

func (c command) run(ctx context.Context, args []string) int {
	fs := c.FlagSet("run", "observer [run] [flags]")
	fs.String("http", "", "listen `address` of /healthz, /readyz, /status and /metrics (default observer.http.addr)")
	fs.String("consumer", "", "durable consumer `name` on EVENTS (default observer.consumer)")
	cfg, code, ok := c.Load(fs, args, map[string]string{"http": "observer.http.addr", "consumer": "observer.consumer"})
	if !ok {
		return code
	}
	log := c.Logger(cfg.Log, "observer")
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("observer stopped", "err", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

func (c command) replay(ctx context.Context, args []string) int {
	fs := c.FlagSet("replay", "observer replay [--since D | --from TIME [--to TIME]] [flags]")
	since := fs.Duration("since", 0, "replay the last `duration`, such as 2h (default 1h when --from is not given)")
	from := fs.String("from", "", "window start, RFC 3339 `time` such as 2026-03-14T09:00:00Z")
	to := fs.String("to", "", "window end, RFC 3339 `time` (default now)")
	format := fs.String("format", report.FormatText, "report `format`: text, markdown or json")
	deliver := fs.String("deliver", "", "deliver the derived alerts to this `sink` (a sinks[].name); default: deliver nothing")
	limit := fs.Int("limit", report.DefaultTimelineLimit, "at most this many timeline `entries` (-1: all)")
	cfg, code, ok := c.Load(fs, args, nil)
	if !ok {
		return code
	}
	if *format != report.FormatText && *format != report.FormatMarkdown && *format != report.FormatJSON {
		return c.UsageError(fs, fmt.Sprintf("--format %q: want text, markdown or json", *format))
	}
	start, end, err := window(c.clock(), *since, *from, *to)
	if err != nil {
		return c.UsageError(fs, err.Error())
	}
	if *limit == 0 {
		return c.UsageError(fs, "--limit must not be 0")
	}
	if *deliver != "" && !hasSink(cfg.Sinks, *deliver) {
		return c.UsageError(fs, fmt.Sprintf("--deliver %q: unknown sink (configured: %s)", *deliver, sinkNames(cfg.Sinks)))
	}
	log := c.Logger(cfg.Log, "observer-replay")
	conn, err := connect(ctx, cfg, log, events.StreamEvents)
	if err != nil {
		return c.Failf("%v", err)
	}
	defer conn.Close()

	opts := replay.Options{From: start, To: end, Rules: cfg.Observer.Rules, TimelineLimit: *limit, Log: log}
	if *deliver != "" {
		// Without a connection the manager cannot publish receipts: replay
		// publishes nothing on the bus.
		dm, err := delivery.New(nil, cfg.Sinks, cfg.Observer.PluginDir, log, nil)
		if err != nil {
			return c.Failf("%v", err)
		}
		defer dm.Close()
		opts.DeliverTo, opts.Deliverer = *deliver, dm
	}
	res, err := replay.Run(ctx, conn, opts)
	if res != nil {
		if werr := res.Report.Write(c.Stdout, *format); werr != nil {
			return c.Failf("%v", werr)
		}
		if res.Skipped > 0 {
			c.Notef("%d malformed events left out", res.Skipped)
		}
	}
	if err != nil {
		return c.Failf("%v", err)
	}
	if *deliver != "" {
		c.Notef("%d alerts handed to sink %s", len(res.Alerts), *deliver)
	}
	return cli.ExitOK
}

func hasSink(sinks []config.Sink, name string) bool {
	for _, s := range sinks {
		if s.Name == name {
			return true
		}
	}
	return false
}

func sinkNames(sinks []config.Sink) string {
	if len(sinks) == 0 {
		return "none"
	}
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

func (c command) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// window turns --since or --from/--to into the replay window.
func window(now time.Time, since time.Duration, from, to string) (time.Time, time.Time, error) {
	if since < 0 {
		return time.Time{}, time.Time{}, errors.New("--since must not be negative")
	}
	if since != 0 && (from != "" || to != "") {
		return time.Time{}, time.Time{}, errors.New("give --since or --from/--to, not both")
	}
	end := now.UTC()
	if to != "" {
		t, err := time.Parse(time.RFC3339, to)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--to %q: want an RFC 3339 time such as 2026-03-14T09:00:00Z", to)
		}
		end = t.UTC()
	}
	if from == "" {
		if to != "" {
			return time.Time{}, time.Time{}, errors.New("--to needs --from")
		}
		if since == 0 {
			since = time.Hour
		}
		return end.Add(-since), end, nil
	}
	start, err := time.Parse(time.RFC3339, from)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("--from %q: want an RFC 3339 time such as 2026-03-14T09:00:00Z", from)
	}
	if !start.Before(end) {
		return time.Time{}, time.Time{}, fmt.Errorf("--from %s is not before --to %s", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return start.UTC(), end, nil
}

// connect joins the bus as the observer role once the streams exist.
func connect(ctx context.Context, cfg config.Config, log *slog.Logger, streams ...string) (*bus.Conn, error) {
	return cli.Connect(ctx, cfg.NATS, config.RoleObserver, cli.Source(config.RoleObserver), log, streams...)
}
