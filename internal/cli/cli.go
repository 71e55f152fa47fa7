// Package cli is the plumbing every agent command shares: exit codes, the
// signal context, flag sets with the house usage, configuration loading that
// turns --help and bad flags into exit codes, the logger, the source name on
// the bus and joining it. Each command keeps its own help text and logic.
package cli

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

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// Exit codes every command returns.
const (
	ExitOK    = 0 // done, or stopped on purpose (SIGINT, SIGTERM, --help)
	ExitError = 1 // an error, or stopped before the work was done
	ExitUsage = 2 // bad usage or a bad configuration
)

// Command is one command with its outside world, so tests can run it whole
// on buffers and a hermetic environment.
type Command struct {
	// Name starts every message ("dispatcher: ...") and names flag sets.
	Name           string
	Stdout, Stderr io.Writer
	// Environ is the environment as os.Environ returns it; nil reads none.
	Environ []string
}

// Run calls main with a context that SIGINT or SIGTERM cancels, the command
// as this process sees it and the arguments after the program name, and
// returns main's exit code for os.Exit.
func Run(name string, main func(ctx context.Context, c Command, args []string) int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return main(ctx, Command{Name: name, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()}, os.Args[1:])
}

// Notef prints "name: message" on Stderr.
func (c Command) Notef(format string, a ...any) {
	fmt.Fprintf(c.Stderr, "%s: %s\n", c.Name, fmt.Sprintf(format, a...))
}

// Failf prints "name: message" on Stderr and returns ExitError.
func (c Command) Failf(format string, a ...any) int {
	c.Notef(format, a...)
	return ExitError
}

// UsageError prints msg and the subcommand's usage on Stderr and returns
// ExitUsage.
func (c Command) UsageError(fs *flag.FlagSet, msg string) int {
	c.Notef("%s", msg)
	fs.Usage()
	return ExitUsage
}

// FlagSet returns a flag set for the subcommand sub that reports errors on
// Stderr and whose usage is the synopsis, the flags and a pointer to
// `name help` for examples.
func (c Command) FlagSet(sub, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(c.Name+" "+sub, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nRun `%s help` for examples.\n", c.Name)
	}
	return fs
}

// Parse parses args with fs (whose output should be Stderr). ok is false when
// the command should exit with code: ExitOK after --help, ExitUsage on a bad
// flag, which the flag package has already reported.
func (c Command) Parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return ExitOK, false
	case err != nil:
		return ExitUsage, false
	}
	return ExitOK, true
}

// Load parses the flags and loads the configuration (defaults, file,
// environment, the flags bound by keys, --set: see config.Load). ok is false
// when the command should exit with code: ExitOK after --help, ExitUsage on a
// bad flag, a bad configuration or a stray argument, each reported on Stderr.
func (c Command) Load(fs *flag.FlagSet, args []string, keys map[string]string) (cfg config.Config, code int, ok bool) {
	out := &watchedWriter{w: fs.Output()}
	fs.SetOutput(out)
	cfg, err := config.Load(config.LoadOptions{Args: args, Environ: c.Environ, FlagSet: fs, FlagKeys: keys})
	fs.SetOutput(out.w)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, ExitOK, false
	case err != nil && out.wrote:
		return cfg, ExitUsage, false // the flag package has said what is wrong
	case err != nil:
		c.Notef("bad configuration:\n%v", err)
		return cfg, ExitUsage, false
	}
	if fs.NArg() > 0 {
		return cfg, c.UsageError(fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0))), false
	}
	return cfg, ExitOK, true
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

// Logger returns the logger l describes, writing to Stderr, with every
// record marked with the process it comes from.
func (c Command) Logger(l config.Log, process string) *slog.Logger {
	return slog.New(l.Handler(c.Stderr)).With("process", process)
}

// Source is the name a process of this role goes by on the bus and in
// events when none is configured: role-host-pid, unique on a fleet.
func Source(role string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%s-%d", role, host, os.Getpid())
}

// Connect joins the bus as role under the name source and waits (at most
// nats.connect_timeout) for the streams, which an operator or the demo
// provisions: the agent's roles may not create them.
func Connect(ctx context.Context, cfg config.NATS, role, source string, log *slog.Logger, streams ...string) (*bus.Conn, error) {
	conn, err := bus.Connect(ctx, cfg, role, source, log)
	if err != nil {
		return nil, err
	}
	wait := cfg.ConnectTimeout
	if wait <= 0 {
		wait = 5 * time.Second
	}
	if err := conn.WaitStreams(ctx, wait, streams...); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
