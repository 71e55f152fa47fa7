package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// TestLoadsWithoutRebuild builds only this example, as its author would,
// and loads it through the same host API the observer uses, with its
// checksum pinned as a configuration would pin it.
func TestLoadsWithoutRebuild(t *testing.T) {
	bin, err := sinktest.Build(t.TempDir(), ".", "alertfile")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	out := filepath.Join(t.TempDir(), "alerts.txt")
	spec := sinktest.Spec(t, bin, fmt.Sprintf(`{"path":%q}`, out))
	spec.SHA256 = hex.EncodeToString(sum[:])

	s := sink.NewSupervisor(spec, sink.Backoff{})
	defer s.Kill()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := sinktest.Alert("elevenlabs", "elevenlabs circuit breaker opened")
	a.StartsAt = time.Date(2025, 3, 14, 9, 27, 26, 0, time.UTC)
	batch := []sink.Record{
		sinktest.Record(t, a),
		sinktest.Record(t, &events.Health{Service: "llm", Outcome: events.OutcomeSuccess}),
	}
	res, err := s.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != sink.Delivered || res[1].Status != sink.Permanent {
		t.Errorf("results %v, want the alert delivered and the health event refused", res)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "2025-03-14T09:27:26Z critical firing: elevenlabs circuit breaker opened\n"
	if string(got) != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	if err := s.Configure(t.Context(), []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "path") {
		t.Errorf("configure without a path: %v", err)
	}
}
