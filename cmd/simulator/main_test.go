package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/cli/clitest"
)

func TestRun(t *testing.T) {
	cert := filepath.Join(t.TempDir(), "smtp.pem")
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr clitest.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, cli.Command{Name: "simulator", Stdout: &stdout, Stderr: &stderr}, []string{"--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0",
			"--scenario", "../../scenarios/seed.yaml", "--smtp-cert", cert})
	}()

	admin := regexp.MustCompile(`admin\s+(http://127\.0\.0\.1:\d+)/admin/`)
	deadline := time.Now().Add(5 * time.Second)
	for admin.FindStringSubmatch(stdout.String()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no admin URL printed; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := admin.FindStringSubmatch(stdout.String())[1]
	for _, want := range []string{`scenario "seed"`, base + "/elevenlabs", base + "/telephony", "smtp "} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	resp, err := http.Get(base + "/admin/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if pem, err := os.ReadFile(cert); err != nil || !bytes.Contains(pem, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("certificate file: %v", err)
	}

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d, stderr %s", c, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestRunErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: bad\nservices:\n  fax: {}\n"), 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"bad log level", []string{"--log-level", "loud"}, 2, "--log-level"},
		{"unknown service", []string{"--scenario", bad}, 1, "services.fax"},
		{"missing file", []string{"--scenario", "/nonexistent.yaml"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr clitest.Buffer
			if c := run(t.Context(), cli.Command{Name: "simulator", Stdout: &stdout, Stderr: &stderr}, tt.args); c != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("code %d stderr %q, want %d and %q", c, stderr.String(), tt.code, tt.want)
			}
		})
	}
}
