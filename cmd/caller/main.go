// Command caller is a call worker: any number of them share the call queue and
// run each call through llm -> tts -> telephony -> crm with retries, timeouts
// and a circuit breaker per service shared across the fleet.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/pprof"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/provider/crm"
	"github.com/callagent/agent/internal/provider/elevenlabs"
	"github.com/callagent/agent/internal/provider/llm"
	"github.com/callagent/agent/internal/provider/telephony"
)

const usage = `usage: caller [--config FILE] [--set key=value ...] [--name NAME] [--concurrency N]
              [--cpu-profile FILE]

Takes call requests from the CALLS work queue and runs each call. Start as many
as you like; they share one durable consumer, and caller.fleet_max_in_flight
caps the calls in flight across all of them. SIGTERM stops taking work and
gives in-flight calls caller.shutdown_grace to finish before handing them back.

Examples:
  caller --config config.yaml
  AGENT_CALLER__CONCURRENCY=8 caller --config config.yaml --name caller-2
`

func main() { os.Exit(cli.Run("caller", run)) }

func run(ctx context.Context, c cli.Command, args []string) int {
	fs := flag.NewFlagSet("caller", flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.String("name", "", "instance name on events (default host-pid)")
	fs.Int("concurrency", 0, "calls this caller runs at once")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the whole run to `file` (go tool pprof), for load tests")
	cfg, code, ok := c.Load(fs, args, map[string]string{"name": "caller.name", "concurrency": "caller.concurrency"})
	if !ok {
		return code
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			c.Notef("--cpu-profile: %v", err)
			return cli.ExitUsage
		}
		defer stop()
	}
	if err := cfg.RequireServices(); err != nil {
		c.Notef("%v", err)
		return cli.ExitUsage
	}
	log := c.Logger(cfg.Log, "caller")
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("caller stopped", "err", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

// startCPUProfile profiles the process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	source := cfg.Caller.Name
	if source == "" {
		source = cli.Source(config.RoleCaller)
	}
	svc, err := clients(cfg)
	if err != nil {
		return err
	}
	conn, err := cli.Connect(ctx, cfg.NATS, config.RoleCaller, source, log, events.StreamCalls, events.StreamEvents)
	if err != nil {
		return err
	}
	defer conn.Close()
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
	hc := httpClient(cfg.Caller.Concurrency)
	l, err := llm.New(cfg.Services[config.ServiceLLM], llm.WithHTTPClient(hc))
	if err != nil {
		return caller.Services{}, fmt.Errorf("llm: %w", err)
	}
	t, err := elevenlabs.New(cfg.Services[config.ServiceElevenLabs], elevenlabs.WithHTTPClient(hc))
	if err != nil {
		return caller.Services{}, fmt.Errorf("elevenlabs: %w", err)
	}
	topts := []telephony.Option{telephony.WithHTTPClient(hc)}
	if m := cfg.Media; m.PublicURL != "" {
		// Each call plays its own audio, served by cmd/media.
		urls := media.URLs{Base: m.PublicURL, Key: m.SigningKey, TTL: m.URLTTL}
		topts = append(topts, telephony.WithTwiML(urls.TwiML))
	}
	p, err := telephony.New(cfg.Services[config.ServiceTelephony], topts...)
	if err != nil {
		return caller.Services{}, fmt.Errorf("telephony: %w", err)
	}
	r, err := crm.New(cfg.Services[config.ServiceCRM], crm.WithHTTPClient(hc))
	if err != nil {
		return caller.Services{}, fmt.Errorf("crm: %w", err)
	}
	return caller.Services{LLM: l, TTS: t, Telephony: p, CRM: r}, nil
}

// httpClient is the four clients' HTTP client. Its pool keeps as many idle
// connections per host as there are calls in flight (plus the health
// probes): http.DefaultTransport keeps two, so a caller running more calls
// than that opened a new connection (a TLS handshake, against the real
// APIs) for about one request in four and left the closed ones in TIME_WAIT.
func httpClient(concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(concurrency, 1) + len(config.Services)
	t.MaxIdleConns = 0 // no limit across hosts: the per-host one bounds it
	return &http.Client{Transport: t}
}
