package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestUsage covers what the command says before it starts anything: the
// runs themselves are what `make load` is for.
func TestUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no command", nil, exitUsage, "", "Usage:"},
		{"help", []string{"help"}, exitOK, "alert-latency", ""},
		{"--help", []string{"--help"}, exitOK, "Exit status", ""},
		{"unknown command", []string{"soak"}, exitUsage, "", `unknown command "soak"`},
		{"calls --help", []string{"calls", "--help"}, exitOK, "", "-contacts"},
		{"bad flag value", []string{"calls", "--contacts", "many"}, exitUsage, "", "invalid value"},
		{"too many contacts", []string{"calls", "--contacts", "100001"}, exitUsage, "", "want 1 to 100000"},
		{"no callers", []string{"calls", "--callers", "0"}, exitUsage, "", "--callers 0: want at least 1"},
		{"negative concurrency", []string{"calls", "--concurrency", "-4"}, exitUsage, "", "--concurrency -4"},
		{"no samples", []string{"alert-latency", "--samples", "0"}, exitUsage, "", "--samples 0"},
		{"unknown dispatch", []string{"calls", "--dispatch", "carrier-pigeon"}, exitUsage, "", `dispatch "carrier-pigeon"`},
		{"stray argument", []string{"calls", "now"}, exitUsage, "", `unexpected argument "now"`},
		{"bad rate", []string{"alert-latency", "--rate", "fast"}, exitUsage, "", `rate "fast"`},
		{"rate unit", []string{"alert-latency", "--rate", "5/d"}, exitUsage, "", `unit "d"`},
		{"one service", []string{"alert-latency", "--services", "1"}, exitUsage, "", "services: 1"},
		{"negative batch wait", []string{"alert-latency", "--batch-wait", "-1s"}, exitUsage, "", "must not be negative"},
		{"missing nats.conf", []string{"alert-latency", "--nats-conf", "/nonexistent/nats.conf"}, exitUsage, "", "--nats-conf"},
	}
	// A case that slipped past the checks fails at once instead of running
	// a load test.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(ctx, tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errb.String())
			}
		})
	}
}
