// Command webhook is the webhook sink plugin: it POSTs alerts or events as
// signed JSON, in the agent's own shape or Alertmanager's. The observer
// loads it; run by hand it only says so.
package main

import (
	"github.com/callagent/agent/plugins/webhook/internal/webhook"
	"github.com/callagent/agent/sink"
)

func main() { sink.Serve(&webhook.Sink{}) }
