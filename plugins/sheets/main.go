// Command sheets is the Google Sheets log sink plugin: it appends one row
// per event, batched and paced under the API's write quota. The observer
// loads it; run by hand it only says so.
package main

import (
	"github.com/callagent/agent/plugins/sheets/internal/sheets"
	"github.com/callagent/agent/sink"
)

func main() { sink.Serve(&sheets.Sink{}) }
