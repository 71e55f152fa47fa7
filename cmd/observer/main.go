// Command observer watches the call agent's event stream: it derives each
// service's status and the alerts a person must see, delivers alerts and log
// records to the sink plugins, and serves /healthz, /readyz, /status and
// /metrics. `observer replay` re-derives a past window for a post-mortem.
// See the usage in cli.go, or run `observer --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli{stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()}.main(ctx, os.Args[1:])
}
