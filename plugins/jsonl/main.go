// Command jsonl is the JSON-lines log sink plugin: it appends one line per
// event, in the seeds' log schema, to the file named by its "path" setting.
// The observer loads it; run by hand it only says so.
package main

import (
	"github.com/callagent/agent/plugins/jsonl/internal/jsonl"
	"github.com/callagent/agent/sink"
)

func main() { sink.Serve(&jsonl.Sink{}) }
