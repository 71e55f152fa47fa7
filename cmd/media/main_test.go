package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/cli/clitest"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/natstest"
)

// TestRun starts the command against a server with nats.conf's users: as the
// media role it serves the audio a caller stored, with signed URLs only.
func TestRun(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	callerConn := srv.Connect(t, config.NATS{User: "caller", Password: "caller-dev-password"}, "caller")
	st, err := media.Create(ctx, callerConn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	audio := bytes.Repeat([]byte{0xFF, 0xFB, 0x90, 0x64}, 600)
	if err := st.Put(ctx, "call-1", audio); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr clitest.Buffer
	env := []string{"AGENT_NATS__ROLES__MEDIA__USER=media", "AGENT_NATS__ROLES__MEDIA__PASSWORD=media-dev-password",
		"AGENT_MEDIA__SIGNING_KEY=run-test-key"}
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, cli.Command{Name: "media", Stdout: &stdout, Stderr: &stderr, Environ: env},
			[]string{"--set", "nats.url=" + srv.URL(), "--addr", "127.0.0.1:0"})
	}()
	listening := regexp.MustCompile(`media listening on (http://127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for listening.FindStringSubmatch(stdout.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no listen address printed; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	urls := media.URLs{Base: listening.FindStringSubmatch(stdout.String())[1], Key: "run-test-key", TTL: time.Hour}

	get := func(u string) (int, string, []byte) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), body
	}
	status, ctype, body := get(urls.TwiML("call-1"))
	play, err := media.ParsePlay(body)
	if status != http.StatusOK || ctype != "text/xml; charset=utf-8" || err != nil {
		t.Fatalf("twiml: %d %q %s", status, ctype, body)
	}
	if status, ctype, body := get(play); status != http.StatusOK || ctype != media.ContentType || !bytes.Equal(body, audio) {
		t.Fatalf("audio: %d %q, %d bytes", status, ctype, len(body))
	}
	if status, _, _ := get(urls.Audio("call-2")); status != http.StatusNotFound {
		t.Errorf("unknown call: %d, want 404", status)
	}
	if status, _, _ := get(urls.Base + "/audio/call-1"); status != http.StatusForbidden {
		t.Errorf("unsigned audio URL: %d, want 403", status)
	}

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d, stderr %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}
