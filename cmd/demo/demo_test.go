package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/cli/clitest"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// repoRoot is where the demo runs from, as `make demo` runs it: nats.conf,
// scenarios/ and demo/ are found relative to it.
const repoRoot = "../.."

// TestDemoFast builds every binary, runs `demo --fast` as a real process on
// free ports, and checks what it prints: the trace of each contact, the
// dispatcher's result line, every receiver holding the alert and the
// post-mortem's key figures.
func TestDemoFast(t *testing.T) {
	bin := buildAll(t)
	run := filepath.Join(t.TempDir(), "run")
	ports := freePorts(t, 5)
	args := []string{"--fast", "--bin", bin, "--run-dir", run,
		"--nats-port", ports[0], "--http-port", ports[1], "--sim-port", ports[2], "--smtp-port", ports[3], "--media-port", ports[4]}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "demo"), args...)
	cmd.Dir = repoRoot
	// On timeout the demo is asked to stop, so it stops its children.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}

	wantLines := []string{
		// The live trace, one complete line per step (stdout is not a terminal).
		`Contact 1 \(\+1415\*\*\*\*101\): elevenlabs 503 -> retry \(50ms\)$`,
		`Contact 1 \(\+1415\*\*\*\*101\): elevenlabs 503 -> retry \(100ms\)$`,
		`Contact 1 \(\+1415\*\*\*\*101\): elevenlabs 503 -> retry \(200ms\)$`,
		`Contact 1 \(\+1415\*\*\*\*101\): elevenlabs 503 -> failed \(retries exhausted\)$`,
		`ALERT \(warning\): elevenlabs: a call failed with retries exhausted \[seed-1-1\]$`,
		// The result: the whole story of each contact and the dispatcher's line.
		`^Contact 1 \(\+1415\*\*\*\*101\): elevenlabs 503 -> retry \(50ms\) -> retry \(100ms\) -> retry \(200ms\) -> failed \(retries exhausted\) -> alert -> next contact$`,
		// Their audio, stored by the caller, fetched whole by the provider
		// from the media server.
		`^Contact 2 \(\+1415\*\*\*\*102\): service recovered \(elevenlabs\) -> success \(audio [0-9]+\.[0-9] KiB stored, fetched by the provider\)$`,
		`^Contact 3 \(\+1415\*\*\*\*103\): success \(audio [0-9]+\.[0-9] KiB stored, fetched by the provider\)$`,
		`^2/3 contacts succeeded \(66\.7%\)$`,
		// Every receiver got it.
		`^Alert: elevenlabs: a call failed with retries exhausted \(warning\)$`,
		`^  email +[1-9][0-9]* messages? to oncall@example\.com over STARTTLS: '\[callagent\] .*retries exhaust`,
		`^  telegram +[1-9][0-9]* messages? to chat -1001234567890: '.*WARNING: elevenlabs: a call failed with retries exhausted`,
		`^  webhook +[1-9][0-9]* POSTs? to /webhook/demo, (every )?signature verified$`,
		`^  sheets +[1-9][0-9]* rows appended to spreadsheet demo, events!A:F`,
		// Where to look.
		`^  status +http://127\.0\.0\.1:` + ports[1] + `/status`,
		`^  tail +go tool nats sub 'agent\.>' --server nats://127\.0\.0\.1:` + ports[0] + ` --user tail --password tail-dev-password$`,
		`^  replay +.*observer replay --config .*config\.yaml --since 15m --format text$`,
		// The post-mortem, run by the demo.
		`^  Post-mortem$`,
		`Calls: 3 calls: 2 completed, 1 failed, 0 skipped \(2/3 succeeded\)$`,
		`Alerts: 1 fired, 1 resolved$`,
		// elevenlabs: 1 call affected, 4 of 6 attempts failed, 3 retries, 1 alert.
		`^ +elevenlabs +\S+ \S+ +\S+ \S+ +\S+ +\S+ +1 +4/6 +3 +1 +up$`,
		`^Demo finished as expected: 2/3 contacts succeeded \(66\.7%\)\.$`,
		`^Stopped everything cleanly\.$`,
	}
	for _, re := range wantLines {
		if !regexp.MustCompile("(?m)" + re).MatchString(out) {
			t.Errorf("stdout has no line matching %s", re)
		}
	}
	// The order tells the story: the failure, then the alert, then the
	// queue moving on.
	order := []string{"Contact 1 (+1415****101): call started", "failed (retries exhausted)", "Contact 2 (+1415****102): call started",
		"Contact 3 (+1415****103): success", "Result", "What each receiver", "Where to look", "Post-mortem"}
	last := -1
	for _, s := range order {
		i := strings.Index(out, s)
		if i <= last {
			t.Errorf("%q is not after %q in stdout", s, order[max(0, indexOf(order, s)-1)])
		}
		last = i
	}
	if t.Failed() {
		t.Logf("stdout:\n%s", out)
	}

	// No full phone number anywhere a person reads, and the events made it
	// to the JSON-lines log in the seeds' log schema.
	jsonl, err := os.ReadFile(filepath.Join(run, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"stdout": out, "events.jsonl": string(jsonl)} {
		if strings.Contains(text, "+14155550101") || strings.Contains(text, "4155550102") {
			t.Errorf("%s holds a full phone number", name)
		}
	}
	retries := 0
	sc := bufio.NewScanner(bytes.NewReader(jsonl))
	for sc.Scan() {
		var rec events.LogRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("events.jsonl line %q: %v", sc.Text(), err)
		}
		if rec.Type == events.TypeRetry && rec.Service == "elevenlabs" {
			retries++
		}
	}
	if retries != 3 {
		t.Errorf("events.jsonl has %d elevenlabs retries, want 3", retries)
	}
	for _, f := range []string{"config.yaml", "logs/simulator.log", "logs/observer.log", "logs/caller-1.log", "logs/caller-2.log", "logs/dispatcher.log"} {
		if _, err := os.Stat(filepath.Join(run, f)); err != nil {
			t.Errorf("run directory: %v", err)
		}
	}
	// Everything was stopped: every port is free again.
	for _, p := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:"+p)
		if err != nil {
			t.Errorf("port %s still in use after the demo: %v", p, err)
			continue
		}
		ln.Close()
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// fakeBin makes a bin directory whose programs are shell scripts: script
// is what the simulator does, the others exit at once.
func fakeBin(t *testing.T, simulator string) string {
	t.Helper()
	bin := t.TempDir()
	for _, name := range []string{"simulator", "media", "observer", "caller", "dispatcher"} {
		body := "#!/bin/sh\nexit 1\n"
		if name == "simulator" {
			body = "#!/bin/sh\n" + simulator + "\n"
		}
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// TestStartErrors checks that what stops the demo before the campaign is
// reported with what to do about it: a taken port names the flag that moves
// it, a missing file the flag that names it, a process that dies its log.
func TestStartErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	tests := []struct {
		name      string
		simulator string
		set       map[string]string
		want      []string
	}{
		{"timeout", "exec sleep 30", map[string]string{"--timeout": "1s"},
			[]string{"FAILED: not finished after --timeout 1s", "see the logs in"}},
		{"nats port taken", "", map[string]string{"--nats-port": busy}, []string{"port " + busy + " (the embedded NATS server) is taken", "--nats-port"}},
		{"observer port taken", "", map[string]string{"--http-port": busy}, []string{"port " + busy + " (the observer's status page) is taken", "--http-port"}},
		{"simulator port taken", "", map[string]string{"--sim-port": busy}, []string{"port " + busy + " (the simulator's HTTP APIs) is taken", "--sim-port"}},
		{"smtp port taken", "", map[string]string{"--smtp-port": busy}, []string{"port " + busy + " (the simulator's SMTP receiver) is taken", "--smtp-port"}},
		{"media port taken", "", map[string]string{"--media-port": busy}, []string{"port " + busy + " (the media server) is taken", "--media-port"}},
		{"same port twice", "", map[string]string{"--smtp-port": "sim"}, []string{"is given both to the simulator's HTTP APIs and to the simulator's SMTP receiver", "--smtp-port"}},
		{"missing scenario", "", map[string]string{"--scenario": "scenarios/nonexistent.yaml"}, []string{"--scenario scenarios/nonexistent.yaml: no such file", "repository root"}},
		{"simulator dies", "echo 'listen: address already in use' >&2; exit 3", nil,
			[]string{"FAILED: simulator stopped unexpectedly (exit status 3)", "simulator.log", "listen: address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			free := freePorts(t, 5)
			ports := map[string]string{"--nats-port": free[0], "--http-port": free[1], "--sim-port": free[2], "--smtp-port": free[3], "--media-port": free[4]}
			args := []string{"--bin", fakeBin(t, tt.simulator), "--run-dir", t.TempDir()}
			for f, p := range ports {
				switch v, ok := tt.set[f]; {
				case v == "sim":
					p = ports["--sim-port"]
				case ok:
					p = v
				}
				args = append(args, f, p)
			}
			for f, v := range tt.set {
				if _, port := ports[f]; !port {
					args = append(args, f, v)
				}
			}
			code, stdout, stderr := runDemo(t, args...)
			if code != cli.ExitError {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, cli.ExitError, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"help", []string{"--help"}, cli.ExitOK, "go tool nats-server -c nats.conf\n  bin/demo --nats-url nats://127.0.0.1:4222"},
		{"bad flag", []string{"--bogus"}, cli.ExitUsage, "flag provided but not defined: -bogus"},
		{"extra argument", []string{"now"}, cli.ExitUsage, `unexpected argument "now"`},
		{"bad port", []string{"--http-port", "70000"}, cli.ExitUsage, "--http-port 70000: want a port from 1 to 65535"},
		{"bad timeout", []string{"--timeout", "0s"}, cli.ExitUsage, "--timeout must be positive"},
		{"bad expect", []string{"--expect", "3/2"}, cli.ExitUsage, `--expect "3/2": want succeeded/total`},
		{"no binaries", []string{"--bin", "/nonexistent"}, cli.ExitError, "simulator not found in --bin /nonexistent: run make build first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runDemo(t, append(tt.args, "--run-dir", t.TempDir())...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, want %d; stderr should contain %q\nstdout: %s\nstderr: %s", code, tt.code, tt.stderr, stdout, stderr)
			}
		})
	}
}

func TestSigned(t *testing.T) {
	yes, no := true, false
	body := `{"version":"1","events":[]}`
	good := simulator.Received{Body: body, Headers: map[string]string{
		"X-Agent-Timestamp": "1773478800", "X-Agent-Signature": simulator.Sign("s3cret", "1773478800", []byte(body))}}
	tests := []struct {
		name string
		r    simulator.Received
		want bool
	}{
		{"our check passes", good, true},
		{"wrong secret", simulator.Received{Body: body, Headers: map[string]string{
			"X-Agent-Timestamp": "1773478800", "X-Agent-Signature": simulator.Sign("other", "1773478800", []byte(body))}}, false},
		{"body changed", simulator.Received{Body: body + " ", Headers: good.Headers}, false},
		{"unsigned", simulator.Received{Body: body}, false},
		{"the simulator verified it", simulator.Received{Verified: &yes}, true},
		{"the simulator refused it", simulator.Received{Verified: &no, Body: body, Headers: good.Headers}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := signed(tt.r, "s3cret"); got != tt.want {
				t.Errorf("signed() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseExpect(t *testing.T) {
	tests := []struct {
		in       string
		s, total int
		ok       bool
	}{
		{"2/3", 2, 3, true},
		{"0/1", 0, 1, true},
		{"3/3", 3, 3, true},
		{"3/2", 0, 0, false},
		{"2/3x", 0, 0, false},
		{"2", 0, 0, false},
		{"0/0", 0, 0, false},
		{"-1/3", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, total, err := parseExpect(tt.in)
			if (err == nil) != tt.ok || s != tt.s || total != tt.total {
				t.Errorf("parseExpect(%q) = %d, %d, %v", tt.in, s, total, err)
			}
		})
	}
}

// runDemo runs the demo in-process, from the repository root.
func runDemo(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(repoRoot)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut clitest.Buffer
	code = run(ctx, cli.Command{Name: "demo", Stdout: &out, Stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

// bins are every command and plugin, laid out as make build lays out ./bin,
// built once for the tests that need them. TestMain sets it before any test
// runs; it is not changed after.
var bins *stack.Binaries

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	// Absolute: a test may change the working directory.
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo test:", err)
		return 1
	}
	bins = &stack.Binaries{Root: root, Targets: []string{
		"demo", "simulator", "media", "observer", "caller", "dispatcher",
		"plugins/email", "plugins/telegram", "plugins/webhook", "plugins/sheets", "plugins/jsonl",
	}}
	defer bins.Close()
	return m.Run()
}

// buildAll returns the directory of the binaries, building them on first use.
func buildAll(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := bins.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// freePorts returns n distinct free ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports, err := stack.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, n)
	for i, p := range ports {
		out[i] = strconv.Itoa(p)
	}
	return out
}
