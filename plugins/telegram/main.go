// Command telegram is the Telegram alert sink plugin: it posts alerts to a
// chat through the Bot API. The observer loads it; run by hand it only says
// so.
package main

import (
	"github.com/callagent/agent/plugins/telegram/internal/telegram"
	"github.com/callagent/agent/sink"
)

func main() { sink.Serve(&telegram.Sink{}) }
