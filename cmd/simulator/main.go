// Command simulator runs the fault simulator: fake ElevenLabs, LLM, CRM and
// telephony APIs, the demo's Telegram, webhook, Sheets and SMTP receivers, and
// an admin API to switch scenarios while it runs.
//
//	simulator --http 127.0.0.1:8900 --smtp 127.0.0.1:2525 --scenario scenarios/seed.yaml
//
// SIGHUP reloads the scenario file; SIGINT or SIGTERM stops it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/simulator"
)

func main() { os.Exit(cli.Run("simulator", run)) }

// run serves until ctx is done and returns the exit code.
func run(ctx context.Context, c cli.Command, args []string) int {
	stdout, stderr := c.Stdout, c.Stderr
	fs := flag.NewFlagSet("simulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:8900", "HTTP listen address (providers, receivers, admin)")
	smtpAddr := fs.String("smtp", "127.0.0.1:2525", `SMTP listen address ("" disables the SMTP receiver)`)
	scenarioPath := fs.String("scenario", "scenarios/seed.yaml", `scenario file, YAML or JSON ("" plays a healthy scenario)`)
	certOut := fs.String("smtp-cert", "", "write the SMTP STARTTLS certificate (PEM) to this file, for clients to trust")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	if code, ok := c.Parse(fs, args); !ok {
		return code
	}

	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		c.Notef("%v", err)
		return cli.ExitUsage
	}
	sc, err := loadScenario(*scenarioPath)
	if err != nil {
		log.Error("bad scenario", "err", err)
		return 1
	}

	sim := simulator.New(sc, log)
	if err := sim.Start(ctx, *httpAddr, *smtpAddr); err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer sim.Close()
	if *certOut != "" && sim.SMTPCertPEM() != nil {
		if err := os.WriteFile(*certOut, sim.SMTPCertPEM(), 0o644); err != nil {
			log.Error("write smtp certificate", "err", err)
			return 1
		}
	}

	fmt.Fprintf(stdout, "simulator playing scenario %q\n", sc.Name)
	for _, name := range append(append([]string{}, simulator.Providers...), simulator.Receivers...) {
		if name != simulator.ServiceSMTP {
			fmt.Fprintf(stdout, "  %-11s %s/%s\n", name, sim.URL(), name)
		}
	}
	if addr := sim.SMTPAddr(); addr != "" {
		fmt.Fprintf(stdout, "  %-11s %s\n", "smtp", addr)
	}
	fmt.Fprintf(stdout, "  %-11s %s/admin/\n", "admin", sim.URL())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			return 0
		case <-hup:
			// A game day edits the file and sends SIGHUP; a bad edit keeps
			// the scenario that is playing.
			next, err := loadScenario(*scenarioPath)
			if err != nil {
				log.Error("reload scenario", "err", err)
				continue
			}
			sim.SetScenario(next)
		}
	}
}

func loadScenario(path string) (simulator.Scenario, error) {
	if path == "" {
		return simulator.Scenario{Name: "healthy"}, nil
	}
	return simulator.LoadScenario(path)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}
