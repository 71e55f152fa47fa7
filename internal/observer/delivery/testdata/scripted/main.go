// Command scripted is the sink plugin the delivery tests load. Its answers
// are scripted by its configuration and by files the test creates and
// removes, so a test can make a sink fail, stall, recover or be killed on
// cue, through the real process boundary. What it delivered it appends to a
// file, one record id per line, which survives its restarts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/sink"
)

type config struct {
	// Out receives one line per delivered record: its id.
	Out string `json:"out"`
	// Calls receives one line per Deliver call: the ids handed to it.
	Calls string `json:"calls"`
	// PidFile receives the process id at every start.
	PidFile string `json:"pid_file"`
	// Status answers every record: delivered (default), retryable or
	// permanent, with Reason and RetryAfterMs.
	Status       string `json:"status"`
	Reason       string `json:"reason"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	// DownFile: while it exists, every record is retryable ("channel down").
	DownFile string `json:"down_file"`
	// HoldFile: while it exists, Deliver waits before answering (a stuck
	// channel), until the file is gone or the host gives up.
	HoldFile string `json:"hold_file"`
	// HangOnce: when it exists, Deliver removes it, creates HangOnce+".hung"
	// and never answers, waiting to be killed.
	HangOnce string `json:"hang_once"`
}

type scripted struct{ cfg config }

func (s *scripted) Configure(_ context.Context, raw []byte) error {
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%w: %w", sink.ErrConfig, err)
	}
	if c.Out == "" {
		return fmt.Errorf("%w: out is required", sink.ErrConfig)
	}
	s.cfg = c
	if c.PidFile != "" {
		return os.WriteFile(c.PidFile, []byte(strconv.Itoa(os.Getpid())), 0o600)
	}
	return nil
}

func exists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

func appendLines(path string, lines []string) error {
	if path == "" || len(lines) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// One write, so a line is never torn by a kill.
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	return errors.Join(err, f.Close())
}

func (s *scripted) Deliver(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	if err := appendLines(s.cfg.Calls, []string{strings.Join(ids, " ")}); err != nil {
		return nil, err
	}
	if exists(s.cfg.HangOnce) {
		_ = os.Remove(s.cfg.HangOnce)
		_ = os.WriteFile(s.cfg.HangOnce+".hung", nil, 0o600)
		select {} // until killed
	}
	for exists(s.cfg.HoldFile) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if exists(s.cfg.DownFile) {
		return sink.Each(batch, sink.Retryable, "channel down", time.Duration(s.cfg.RetryAfterMs)*time.Millisecond), nil
	}
	switch s.cfg.Status {
	case "retryable":
		return sink.Each(batch, sink.Retryable, s.cfg.Reason, time.Duration(s.cfg.RetryAfterMs)*time.Millisecond), nil
	case "permanent":
		return sink.Each(batch, sink.Permanent, s.cfg.Reason, 0), nil
	}
	if err := appendLines(s.cfg.Out, ids); err != nil {
		return sink.Each(batch, sink.Retryable, err.Error(), 0), nil
	}
	return sink.Each(batch, sink.Delivered, "", 0), nil
}

func (s *scripted) Health(context.Context) error { return nil }

func main() { sink.Serve(&scripted{}) }
