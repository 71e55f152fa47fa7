// Command testplugin is the sink plugin the SDK's own tests load: a no-op
// sink whose answers are set by its configuration, so the tests can drive
// every path through the real process boundary.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/callagent/agent/sink"
)

type config struct {
	// Reject makes Configure fail with ErrConfig and this text.
	Reject string `json:"reject"`
	// Status answers every record: delivered (default), retryable, permanent.
	Status       string `json:"status"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	// Omit leaves the last record of each batch without a result.
	Omit bool `json:"omit"`
	// Log is logged at warn level on every Deliver.
	Log string `json:"log"`
	// Panic panics in Deliver.
	Panic bool `json:"panic"`
	// Unhealthy makes Health fail with this text.
	Unhealthy string `json:"unhealthy"`
	// HangOnce names a file: the first process configured with it creates
	// the file and from then on never answers Deliver or Health, though it
	// stays alive; a process started later finds the file and answers.
	HangOnce string `json:"hang_once"`
}

type testSink struct {
	cfg  config
	hung bool
}

func (s *testSink) Configure(_ context.Context, raw []byte) error {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%w: %w", sink.ErrConfig, err)
	}
	if c.Reject != "" {
		return fmt.Errorf("%w: %s", sink.ErrConfig, c.Reject)
	}
	s.cfg = c
	if c.HangOnce != "" && !s.hung {
		f, err := os.OpenFile(c.HangOnce, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			s.hung = true
			f.Close()
		}
	}
	return nil
}

// hang blocks for good, ignoring ctx, as a sink stuck in a call does.
func (s *testSink) hang() {
	if s.hung {
		select {}
	}
}

func (s *testSink) Deliver(_ context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.hang()
	if s.cfg.Panic {
		panic("test panic")
	}
	if s.cfg.Log != "" {
		slog.Warn(s.cfg.Log, "records", len(batch))
	}
	status := map[string]sink.Status{"": sink.Delivered, "delivered": sink.Delivered,
		"retryable": sink.Retryable, "permanent": sink.Permanent}[s.cfg.Status]
	out := sink.Each(batch, status, s.cfg.Status, time.Duration(s.cfg.RetryAfterMs)*time.Millisecond)
	if s.cfg.Omit && len(out) > 0 {
		out = out[:len(out)-1]
	}
	return out, nil
}

func (s *testSink) Health(context.Context) error {
	s.hang()
	if s.cfg.Unhealthy != "" {
		return fmt.Errorf("%s", s.cfg.Unhealthy)
	}
	return nil
}

func main() { sink.Serve(&testSink{}) }
