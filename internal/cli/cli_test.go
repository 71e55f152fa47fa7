package cli_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		ok     bool
		stderr []string // each must be printed
	}{
		{name: "defaults", args: nil, code: cli.ExitOK, ok: true},
		{name: "bound flag", args: []string{"--concurrency", "7"}, code: cli.ExitOK, ok: true},
		{name: "help", args: []string{"--help"}, code: cli.ExitOK, stderr: []string{"Usage: demo go [flags]", "-concurrency", "Run `demo help` for examples."}},
		{name: "bad flag", args: []string{"--bogus"}, code: cli.ExitUsage, stderr: []string{"flag provided but not defined: -bogus"}},
		{name: "bad configuration", args: []string{"--set", "caller.concurrency=-1"}, code: cli.ExitUsage, stderr: []string{"demo: bad configuration:\n", "caller.concurrency"}},
		{name: "stray argument", args: []string{"extra"}, code: cli.ExitUsage, stderr: []string{`demo: unexpected argument "extra"`, "Usage: demo go [flags]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			c := cli.Command{Name: "demo", Stdout: &out, Stderr: &errOut}
			fs := c.FlagSet("go", "demo go [flags]")
			fs.Int("concurrency", 0, "calls at once")
			cfg, code, ok := c.Load(fs, tt.args, map[string]string{"concurrency": "caller.concurrency"})
			if code != tt.code || ok != tt.ok {
				t.Fatalf("Load = %d, %v; want %d, %v\nstderr:\n%s", code, ok, tt.code, tt.ok, errOut.String())
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
			if tt.stderr == nil && errOut.Len() > 0 {
				t.Errorf("stderr %q, want nothing", errOut.String())
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
			if tt.name == "bound flag" && cfg.Caller.Concurrency != 7 {
				t.Errorf("caller.concurrency = %d, want 7 from --concurrency", cfg.Caller.Concurrency)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		ok   bool
	}{
		{"flags", []string{"--level", "debug"}, cli.ExitOK, true},
		{"help", []string{"-h"}, cli.ExitOK, false},
		{"bad flag", []string{"--loud"}, cli.ExitUsage, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			c := cli.Command{Name: "demo", Stderr: &errOut}
			fs := c.FlagSet("", "demo")
			fs.String("level", "info", "log level")
			if code, ok := c.Parse(fs, tt.args); code != tt.code || ok != tt.ok {
				t.Errorf("Parse = %d, %v; want %d, %v (stderr %q)", code, ok, tt.code, tt.ok, errOut.String())
			}
		})
	}
}

func TestMessages(t *testing.T) {
	var errOut bytes.Buffer
	c := cli.Command{Name: "demo", Stderr: &errOut}
	c.Notef("%d left", 3)
	if code := c.Failf("gone: %v", os.ErrNotExist); code != cli.ExitError {
		t.Errorf("Failf = %d, want %d", code, cli.ExitError)
	}
	if want := "demo: 3 left\ndemo: gone: file does not exist\n"; errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

func TestLogger(t *testing.T) {
	var errOut bytes.Buffer
	c := cli.Command{Name: "demo", Stderr: &errOut}
	log := c.Logger(config.Log{Level: "warn", Format: "json"}, "demo-replay")
	log.Info("hidden")
	log.Warn("shown")
	if got := errOut.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown","process":"demo-replay"`) {
		t.Errorf("log %q: want only the warning, as JSON, with its process", got)
	}
}

func TestSource(t *testing.T) {
	host, _ := os.Hostname()
	if got, want := cli.Source("caller"), "caller-"+host+"-"+strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("Source = %q, want %q", got, want)
	}
}

func TestConnect(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// Before anyone provisions the streams, Connect gives up after
	// nats.connect_timeout.
	cfg := srv.NATS()
	cfg.ConnectTimeout = 200 * time.Millisecond
	if conn, err := cli.Connect(ctx, cfg, "", "early", nil, events.StreamCalls); err == nil {
		conn.Close()
		t.Fatal("Connect succeeded without the CALLS stream")
	}

	srv.Conn(t) // creates the streams, as an operator would
	conn, err := cli.Connect(ctx, srv.NATS(), "", "worker-1", nil, events.StreamCalls, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Source != "worker-1" {
		t.Errorf("source %q, want worker-1", conn.Source)
	}
}
