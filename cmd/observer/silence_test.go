package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/silence"
)

func TestSilenceCommands(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.Conn(t).KeyValue(ctx, silence.Bucket, 0); err != nil { // as provision makes it
		t.Fatal(err)
	}
	conf := []string{"--set", "nats.url=" + srv.URL()}
	cmd := func(args ...string) result { return runCLI(ctx, append(args, conf...)...) }

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"silence", "add", "--for", "1h", "--comment", "x"}, "needs --service, --rule or --severity"},
		{[]string{"silence", "add", "--service", "crm", "--comment", "x"}, "--for: a positive duration"},
		{[]string{"silence", "add", "--service", "crm", "--for", "1h"}, "needs a comment"},
		{[]string{"silence", "add", "--severity", "fatal", "--for", "1h", "--comment", "x"}, `unknown severity "fatal"`},
		{[]string{"silence", "expire"}, "the silence ID is required"},
		{[]string{"silence", "mute"}, `unknown silence command "mute"`},
	} {
		if r := cmd(bad.args...); r.code != cli.ExitUsage || !strings.Contains(r.stderr, bad.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", bad.args, r.code, r.stderr, bad.want)
		}
	}

	add := cmd("silence", "add", "--service", "elevenlabs", "--for", "1h", "--comment", "vendor incident INC-42", "--by", "dana")
	if add.code != cli.ExitOK {
		t.Fatalf("add exited %d: %s", add.code, add.stderr)
	}
	id := strings.TrimSpace(add.stdout)
	list := cmd("silence", "list")
	if list.code != cli.ExitOK || !strings.Contains(list.stdout, id) || !strings.Contains(list.stdout, "service=elevenlabs") ||
		!strings.Contains(list.stdout, "active") || !strings.Contains(list.stdout, "INC-42") {
		t.Fatalf("list exited %d:\n%s%s", list.code, list.stdout, list.stderr)
	}
	if r := cmd("silence", "expire", id); r.code != cli.ExitOK || !strings.Contains(r.stderr, "expired") {
		t.Fatalf("expire exited %d: %s", r.code, r.stderr)
	}
	if r := cmd("silence", "list"); strings.Contains(r.stdout, id) {
		t.Errorf("an expired silence is listed without --all:\n%s", r.stdout)
	}
	all := cmd("silence", "list", "--all", "--output", "json")
	var got []silence.Silence
	if err := json.Unmarshal([]byte(all.stdout), &got); err != nil {
		t.Fatalf("list --all --output json: %v\n%s", err, all.stdout)
	}
	if len(got) != 1 || got[0].ID != id || got[0].CreatedBy != "dana" || got[0].EndsAt.After(time.Now()) {
		t.Errorf("list --all: %+v, want the one expired silence", got)
	}
	if r := cmd("silence", "expire", "0000000000000000"); r.code != cli.ExitError || !strings.Contains(r.stderr, "no such silence") {
		t.Errorf("expire of an unknown id: exit %d, %s", r.code, r.stderr)
	}
}
