package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dnc"
	"github.com/callagent/agent/internal/natstest"
)

// TestControlCommands drives pause, resume, pace, cancel and the do-not-call
// list through the command line, as an operator would, against a real server.
func TestControlCommands(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	file := writeFile(t, "c.csv", "phone,id\n+14155550100,a\n+14155550101,b\n")
	nats := []string{"--set", "nats.url=" + srv.URL()}
	common := append([]string{"--campaign", "ops", "--set", "dispatcher.calling_window=00:00-24:00"}, nats...)
	ctx := context.Background()
	ctl, err := control.Open(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	state := func() control.Control {
		t.Helper()
		c, err := ctl.Get(ctx, "ops")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	steps := []struct {
		args []string
		code int
		out  string
		want control.State
	}{
		{[]string{"pause"}, 0, "campaign ops: paused", control.Paused},
		{[]string{"resume"}, 0, "campaign ops: running", control.Running},
		{[]string{"pace", "--max-calls-per-second", "5", "--max-concurrent-calls", "20"}, 0, "max_calls_per_second 5; max_concurrent_calls 20", control.Running},
		{[]string{"pace"}, 2, "", control.Running},
	}
	for _, s := range steps {
		r := runCLI(t, append(s.args, common...)...)
		if r.code != s.code || !strings.Contains(r.stdout, s.out) {
			t.Fatalf("%v: exit %d\n%s\n%s", s.args, r.code, r.stdout, r.stderr)
		}
		if got := state().Effective(); got != s.want {
			t.Fatalf("%v: state %s, want %s", s.args, got, s.want)
		}
	}
	if c := state(); c.MaxCallsPerSecond != 5 || c.MaxConcurrentCalls != 20 {
		t.Fatalf("pacing %+v", c)
	}

	// Publish with nobody calling: both contacts queued, then one waiting
	// only in the state (as if re-queued), which cancel ends at once.
	if r := runCLI(t, append([]string{"run", "--contacts", file, "--no-follow", "--progress", "off"}, common...)...); r.code != 0 {
		t.Fatalf("run: %d\n%s", r.code, r.stderr)
	}
	r := runCLI(t, append([]string{"cancel"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "campaign ops: cancelled") {
		t.Fatalf("cancel: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, append([]string{"resume"}, common...)...); r.code != 1 || !strings.Contains(r.stderr, "cannot be resumed") {
		t.Fatalf("resume after cancel: exit %d\n%s", r.code, r.stderr)
	}
	r = runCLI(t, append([]string{"status"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "control: cancelled; max_calls_per_second 5; max_concurrent_calls 20") {
		t.Fatalf("status: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// The do-not-call list: national numbers normalised, stored hashed,
	// listed masked.
	r = runCLI(t, append([]string{"dnc", "add", "(415) 555-0102", "+14155550103", "--comment", "asked", "--set", "dispatcher.default_region=US"}, nats...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "added "+events.MaskPhone("+14155550102")) {
		t.Fatalf("dnc add: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	list, err := dnc.Open(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{"+14155550102": true, "+14155550103": true, "+14155550104": false} {
		if got, err := list.Contains(ctx, n); err != nil || got != want {
			t.Errorf("contains %s: %v %v, want %v", events.MaskPhone(n), got, err, want)
		}
	}
	r = runCLI(t, append([]string{"dnc", "list"}, nats...)...)
	if r.code != 0 || strings.Contains(r.stdout, "+14155550102") || !strings.Contains(r.stdout, events.MaskPhone("+14155550103")) || !strings.Contains(r.stdout, "2 numbers") {
		t.Fatalf("dnc list: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, append([]string{"dnc", "remove", "+14155550103"}, nats...)...); r.code != 0 {
		t.Fatalf("dnc remove: exit %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, append([]string{"dnc", "remove", "+14155550103"}, nats...)...); r.code != 1 || !strings.Contains(r.stderr, "not on the do-not-call list") {
		t.Fatalf("dnc remove twice: exit %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, append([]string{"dnc", "add", "not-a-number"}, nats...)...); r.code != 1 {
		t.Fatalf("dnc add garbage: exit %d\n%s", r.code, r.stderr)
	}
}

// A dry run reports the contacts on the do-not-call list (that a run would
// end suppressed), and still checks the file when NATS is out of reach.
func TestDryRunReportsDoNotCall(t *testing.T) {
	srv := natstest.Start(t)
	list, err := dnc.Open(context.Background(), srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := list.Add(context.Background(), "+14155550101", "asked", "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "c.csv", "phone,id\n+14155550100,a\n(415) 555-0101,b\n")
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"listed", srv.URL(), []string{"do-not-call: 1 of 2 contacts listed", "suppressed line 3: b (" + events.MaskPhone("+14155550101") + ")"}},
		{"offline", "nats://127.0.0.1:1", []string{"do-not-call list not checked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "run", "--contacts", file, "--dry-run", "--set", "nats.url="+tc.url, "--set", "dispatcher.default_region=US")
			if r.code != 0 || !containsAll(r.stdout, tc.want...) || strings.Contains(r.stdout, "4155550101") {
				t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// The configured pacing is what a campaign starts with; an operator's pace
// afterwards is kept by later runs.
func TestRunAppliesDefaultPacing(t *testing.T) {
	srv := natstest.Start(t)
	ctl, err := control.Open(context.Background(), srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "c.csv", "phone,id\n+14155550100,a\n")
	run := func() {
		t.Helper()
		r := runCLI(t, "run", "--contacts", file, "--no-follow", "--campaign", "paced", "--set", "nats.url="+srv.URL(),
			"--set", "dispatcher.calling_window=00:00-24:00",
			"--set", "dispatcher.max_calls_per_second=2", "--set", "dispatcher.max_concurrent_calls=3")
		if r.code != 0 {
			t.Fatalf("run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	}
	pacing := func() [2]int {
		t.Helper()
		c, err := ctl.Get(context.Background(), "paced")
		if err != nil {
			t.Fatal(err)
		}
		return [2]int{c.MaxCallsPerSecond, c.MaxConcurrentCalls}
	}
	run()
	if got := pacing(); got != [2]int{2, 3} {
		t.Fatalf("pacing after the first run %v, want the configured [2 3]", got)
	}
	if r := runCLI(t, "pace", "--campaign", "paced", "--max-concurrent-calls", "7", "--set", "nats.url="+srv.URL()); r.code != 0 {
		t.Fatalf("pace: exit %d\n%s", r.code, r.stderr)
	}
	run()
	if got := pacing(); got != [2]int{2, 7} {
		t.Fatalf("pacing after pace and another run %v, want the operator's [2 7]", got)
	}
}
