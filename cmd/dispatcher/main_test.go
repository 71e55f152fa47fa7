package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/natstest"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := run(ctx, cli.Command{Name: "dispatcher", Stdout: &out, Stderr: &errOut}, args)
	return result{code, out.String(), errOut.String()}
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsageAndDryRun(t *testing.T) {
	good := writeFile(t, "c.csv", "phone,name\n+14155550100,A\n555-0100,B\n+14155550100,C\n(415) 555-0101,D\n")
	empty := writeFile(t, "e.csv", "")
	headerOnly := writeFile(t, "h.csv", "phone,name\n")
	noPhone := writeFile(t, "n.csv", "name\nA\n")
	binary := writeFile(t, "b.csv", "phone\n\x00\x01")
	allBad := writeFile(t, "bad.jsonl", `{"phone":"x"}`+"\n")
	// issue 9: an unterminated quote on line 5 swallowed lines 6-11.
	brokenQuote := writeFile(t, "q.csv", "phone,name\n+14155550100,Ann\nabc,Bo\n+1555,Cy\n+14155550103,\"Dan\n"+
		"+14155550104,Eve\nnope,Fay\n\n+14155550106,Gil\n+14155550100,Dup\n+14155550107,\"Hal\"\n")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		notInOuput []string
	}{
		{name: "no arguments", args: nil, code: 2, stderr: []string{"Usage:"}},
		{name: "help", args: []string{"--help"}, code: 0, stdout: []string{"Examples:", "dispatcher run --contacts contacts.csv --dry-run", "Exit status:"}},
		{name: "help command", args: []string{"help"}, code: 0, stdout: []string{"dispatcher status --campaign spring --output json"}},
		{name: "run help", args: []string{"run", "--help"}, code: 0, stderr: []string{"-contacts file", "-dry-run", "-no-follow", "-timeout"}},
		{name: "unknown command", args: []string{"launch"}, code: 2, stderr: []string{`unknown command "launch"`}},
		{name: "unknown flag", args: []string{"run", "--bogus"}, code: 2, stderr: []string{"flag provided but not defined: -bogus"}},
		{name: "missing contacts", args: []string{"run"}, code: 2, stderr: []string{"--contacts FILE is required"}},
		{name: "stray argument", args: []string{"run", "--contacts", good, "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{name: "bad output", args: []string{"run", "--contacts", good, "--output", "yaml"}, code: 2, stderr: []string{`--output "yaml"`}},
		{name: "bad progress", args: []string{"status", "--output", "xml"}, code: 2, stderr: []string{`--output "xml"`}},
		{name: "bad campaign", args: []string{"run", "--contacts", good, "--campaign", "a.b"}, code: 2, stderr: []string{"dispatcher.campaign", "--campaign"}},
		{name: "bad setting", args: []string{"run", "--contacts", good, "--set", "dispatcher.calling_window=9-5"}, code: 2, stderr: []string{"dispatcher.calling_window"}},
		{
			name:       "dry run reports rows by line",
			args:       []string{"run", "--contacts", good, "--dry-run"},
			code:       0,
			stdout:     []string{"5 lines: 1 header, 0 blank, 4 rows: 2 valid, 1 rejected, 1 duplicates", "line 3: phone: local number: add its area code", "line 4: duplicate of line 2"},
			notInOuput: []string{"4155550100"},
		},
		{
			name:   "dry run without a default region",
			args:   []string{"run", "--contacts", good, "--dry-run", "--set", "dispatcher.default_region="},
			code:   2, // the configuration requires a region code
			stderr: []string{"dispatcher.default_region"},
		},
		{
			name: "dry run accounts for every line after a broken quote",
			args: []string{"run", "--contacts", brokenQuote, "--dry-run"},
			code: 0,
			stdout: []string{
				"11 lines: 1 header, 1 blank, 9 rows: 4 valid, 4 rejected, 1 duplicates",
				"line 5: bad CSV: the quote opened on line 5 is not closed",
				"lines 5-11 would have been one row; row skipped, reading resumed at line 6",
				"line 10: duplicate of line 2",
			},
		},
		{name: "dry run as JSON counts lines", args: []string{"run", "--contacts", brokenQuote, "--dry-run", "--output", "json"}, code: 0, stdout: []string{`"lines": 11`, `"header_lines": 1`, `"blank_lines": 1`, `"rows": 9`, `"valid": 4`}},
		{name: "dry run as JSON", args: []string{"run", "--contacts", good, "--dry-run", "--output", "json"}, code: 0, stdout: []string{`"valid": 2`, `"line": 3`}, notInOuput: []string{"4155550100"}},
		{name: "empty file", args: []string{"run", "--contacts", empty, "--dry-run"}, code: 1, stderr: []string{"contacts file is empty"}},
		{name: "header only", args: []string{"run", "--contacts", headerOnly}, code: 1, stderr: []string{"header but no contact rows"}},
		{name: "no phone column", args: []string{"run", "--contacts", noPhone}, code: 1, stderr: []string{"no phone column"}},
		{name: "binary", args: []string{"run", "--contacts", binary}, code: 1, stderr: []string{"not text: NUL byte"}},
		{name: "missing file", args: []string{"run", "--contacts", filepath.Join(t.TempDir(), "nope.csv")}, code: 1, stderr: []string{"no such file"}},
		{name: "nothing valid", args: []string{"run", "--contacts", allBad, "--dry-run"}, code: 1, stdout: []string{"line 1: phone: not a phone number"}, stderr: []string{"no valid contacts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tt.code, r.stdout, r.stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
			for _, s := range tt.notInOuput {
				if strings.Contains(r.stdout+r.stderr, s) {
					t.Errorf("output holds %q", s)
				}
			}
		})
	}
}

// completeCalls plays a caller that answers every call.
func completeCalls(t *testing.T, conn *bus.Conn) *int64 {
	t.Helper()
	var mu sync.Mutex
	var n int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = conn.Consume(ctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers"}, func(ctx context.Context, m *bus.Msg) error {
			req, err := events.DecodeRequest(m.Data)
			if err != nil {
				return err
			}
			mu.Lock()
			n++
			mu.Unlock()
			return conn.Emit(ctx, &events.Call{CallRef: req.Ref(), Outcome: events.CallCompleted, CallStatus: "completed", Attempt: req.Attempt})
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &n
}

func TestRunAndStatus(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t) // creates the streams, as an operator would
	file := writeFile(t, "c.csv", "phone,id\n+14155550100,a\n+14155550101,b\n")
	common := []string{"--campaign", "cli", "--set", "nats.url=" + srv.URL(), "--set", "dispatcher.calling_window=00:00-24:00"}

	// Publish and leave: nobody follows, the contacts stay queued.
	r := runCLI(t, append([]string{"run", "--contacts", file, "--no-follow", "--progress", "off"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "0/2 contacts succeeded (0.0%)") || !strings.Contains(r.stdout, "queued") {
		t.Fatalf("run --no-follow: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 2 {
		t.Errorf("%d requests published, want 2", n)
	}

	// The calls are made while no dispatcher runs; the next run reads the
	// outcomes and finishes without publishing anything again.
	calls := completeCalls(t, srv.Conn(t))
	r = runCLI(t, append([]string{"run", "--contacts", file, "--progress", "lines", "--timeout", "15s"}, common...)...)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "2/2 contacts succeeded (100.0%)\n") {
		t.Fatalf("run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 2 || *calls != 2 {
		t.Errorf("%d requests published and %d calls made, want 2 and 2", n, *calls)
	}

	r = runCLI(t, append([]string{"status", "--output", "json"}, common...)...)
	var sum struct {
		Result   string `json:"result"`
		Finished bool   `json:"finished"`
		Contacts []struct {
			Contact string `json:"contact"`
			Status  string `json:"status"`
		} `json:"contacts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || r.code != 0 {
		t.Fatalf("status: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if sum.Result != "2/2 contacts succeeded (100.0%)" || !sum.Finished || sum.Contacts[0].Contact != events.MaskPhone("+14155550100") {
		t.Errorf("status = %+v", sum)
	}

	r = runCLI(t, "status", "--campaign", "nope", "--set", "nats.url="+srv.URL())
	if r.code != 1 || !strings.Contains(r.stderr, `unknown campaign: "nope"`) {
		t.Errorf("status of an unknown campaign: exit %d\n%s", r.code, r.stderr)
	}
}

func TestRunTimeout(t *testing.T) {
	srv := natstest.Start(t)
	srv.Conn(t)
	file := writeFile(t, "c.csv", "phone\n+14155550100\n")
	r := runCLI(t, "run", "--contacts", file, "--campaign", "slow", "--timeout", "300ms", "--progress", "off",
		"--set", "nats.url="+srv.URL(), "--set", "dispatcher.calling_window=00:00-24:00")
	if r.code != 1 || !strings.Contains(r.stderr, "not finished after 300ms") || !strings.Contains(r.stdout, "0/1 contacts succeeded (0.0%)") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestNoServer(t *testing.T) {
	file := writeFile(t, "c.csv", "phone\n+14155550100\n")
	r := runCLI(t, "run", "--contacts", file, "--set", "nats.url=nats://127.0.0.1:1", "--set", "nats.connect_timeout=300ms")
	if r.code != 1 || !strings.Contains(r.stderr, "connect to nats") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}
