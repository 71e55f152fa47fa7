// Command caller is a call worker: any number of them share the call queue and
// run each call through llm -> tts -> telephony -> crm with retries, timeouts
// and a circuit breaker per service shared across the fleet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/crm"
	"github.com/callagent/agent/internal/provider/elevenlabs"
	"github.com/callagent/agent/internal/provider/llm"
	"github.com/callagent/agent/internal/provider/telephony"
)

const usage = `usage: caller [--config FILE] [--set key=value ...] [--name NAME] [--concurrency N]

Takes call requests from the CALLS work queue and runs each call. Start as many
as you like; they share one durable consumer, and caller.fleet_max_in_flight
caps the calls in flight across all of them. SIGTERM stops taking work and
gives in-flight calls caller.shutdown_grace to finish before handing them back.

Examples:
  caller --config config.yaml
  AGENT_CALLER__CONCURRENCY=8 caller --config config.yaml --name caller-2
`

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("caller", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	fs.String("name", "", "instance name on events (default host-pid)")
	fs.Int("concurrency", 0, "calls this caller runs at once")
	cfg, err := config.Load(config.LoadOptions{
		Args: os.Args[1:], Environ: os.Environ(), FlagSet: fs,
		FlagKeys: map[string]string{"name": "caller.name", "concurrency": "caller.concurrency"},
	})
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "caller: %v\n", err)
		return 2
	}
	if err := cfg.RequireServices(); err != nil {
		fmt.Fprintf(os.Stderr, "caller: %v\n", err)
		return 2
	}
	log := slog.New(cfg.Log.Handler(os.Stderr)).With("process", "caller")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("caller stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	source := cfg.Caller.Name
	if source == "" {
		host, _ := os.Hostname()
		source = fmt.Sprintf("caller-%s-%d", host, os.Getpid())
	}
	svc, err := clients(cfg)
	if err != nil {
		return err
	}
	conn, err := bus.Connect(ctx, cfg.NATS, config.RoleCaller, source, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.WaitStreams(ctx, cfg.NATS.ConnectTimeout, "CALLS", "EVENTS"); err != nil {
		return err
	}
	c, err := caller.New(ctx, conn, cfg, svc, nil, log)
	if err != nil {
		return err
	}
	log.Info("caller started", "source", source, "concurrency", cfg.Caller.Concurrency, "fleet_max_in_flight", cfg.Caller.FleetMaxInFlight)
	err = c.Run(ctx)
	log.Info("caller stopped taking work")
	return err
}

func clients(cfg config.Config) (caller.Services, error) {
	l, err := llm.New(cfg.Services[config.ServiceLLM])
	if err != nil {
		return caller.Services{}, fmt.Errorf("llm: %w", err)
	}
	t, err := elevenlabs.New(cfg.Services[config.ServiceElevenLabs])
	if err != nil {
		return caller.Services{}, fmt.Errorf("elevenlabs: %w", err)
	}
	p, err := telephony.New(cfg.Services[config.ServiceTelephony])
	if err != nil {
		return caller.Services{}, fmt.Errorf("telephony: %w", err)
	}
	r, err := crm.New(cfg.Services[config.ServiceCRM])
	if err != nil {
		return caller.Services{}, fmt.Errorf("crm: %w", err)
	}
	return caller.Services{LLM: l, TTS: t, Telephony: p, CRM: r}, nil
}
