// Command observer watches the call agent's event stream: it derives each
// service's status and the alerts a person must see, delivers alerts and log
// records to the sink plugins, and serves /healthz, /readyz, /status and
// /metrics. `observer replay` re-derives a past window for a post-mortem.
// See the usage in cli.go, or run `observer --help`.
package main

import (
	"os"

	"github.com/callagent/agent/internal/cli"
)

func main() { os.Exit(cli.Run("observer", run)) }
