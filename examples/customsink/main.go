// Command customsink is an example of a new alert channel written against
// the plugin SDK: it appends one line per alert to a file. Build it and name
// it in the configuration; the observer loads it with no rebuild:
//
//	go build -o bin/plugins/alertfile ./examples/customsink
//
//	sinks:
//	  - name: alertfile
//	    plugin: alertfile
//	    kind: alert
//	    config: {path: var/alerts.txt}
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
)

type fileSink struct{ path string }

func (s *fileSink) Configure(_ context.Context, config []byte) error {
	var c struct{ Path string }
	if err := json.Unmarshal(config, &c); err != nil || c.Path == "" {
		return fmt.Errorf("%w: want {\"path\": \"file\"}", sink.ErrConfig)
	}
	s.path = c.Path
	return nil
}

func (s *fileSink) Deliver(_ context.Context, batch []sink.Record) ([]sink.Result, error) {
	f, err := os.OpenFile(s.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err // the whole batch is retried
	}
	defer f.Close()
	results := make([]sink.Result, len(batch))
	for i, rec := range batch {
		results[i] = sink.Result{ID: rec.ID, Status: sink.Delivered}
		ev, err := events.Decode(rec.Data)
		a, ok := ev.(*events.Alert)
		if err != nil || !ok {
			results[i].Status, results[i].Reason = sink.Permanent, "not an alert"
			continue
		}
		_, err = fmt.Fprintf(f, "%s %s %s: %s\n", a.StartsAt.Format(time.RFC3339), a.Severity, a.Status, a.Summary)
		if err != nil {
			results[i].Status, results[i].Reason = sink.Retryable, err.Error()
		}
	}
	return results, f.Sync() // an error here retries the batch
}

func (s *fileSink) Health(context.Context) error { return nil }

func main() { sink.Serve(&fileSink{}) }
