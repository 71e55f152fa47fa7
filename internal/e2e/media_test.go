//go:build linux

package e2e

import (
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// TestCallerKilledAfterAudioStored kills, with SIGKILL, a caller waiting out
// a telephony retry: the call's audio is already in the call_audio bucket,
// so the caller taking the request over renders nothing again (one LLM
// completion, one TTS request) and places the call once.
func TestCallerKilledAfterAudioStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
name: telephony-503-twice
services:
  telephony:
    faults:
      - {match: "POST ", kind: status, status: 503, count: 2}
`)
	s := e.settings()
	s.set("services.telephony.retry.initial_delay", "1500ms")
	s.set("services.telephony.retry.max_delay", "3s")
	s.set("caller.concurrency", 1)
	s.set("caller.ack_wait", "3s")
	cfg := e.write("callers", s)

	retries := e.subscribe(events.RetryAll)
	callers := map[string]*proc{
		"caller-a": e.startCaller(cfg, "caller-a"),
		"caller-b": e.startCaller(cfg, "caller-b"),
	}
	req := request("audio", "c1", 1, "+14155550101")
	e.dispatch(req)
	var first *events.Retry
	select {
	case ev := <-retries:
		first = ev.(*events.Retry)
	case <-time.After(20 * time.Second):
		t.Fatal("no retry event")
	}
	if first.CallID != req.CallID || first.Service != config.ServiceTelephony || callers[first.Source] == nil {
		t.Fatalf("first retry %+v, want telephony for %s by a caller", first, req.CallID)
	}
	callers[first.Source].kill9(t)

	waitFor(t, 30*time.Second, "a terminal event for "+req.CallID, func() bool {
		return len(e.terminals()[req.CallID]) > 0
	})
	terms := e.terminals()[req.CallID]
	if len(terms) != 1 || terms[0].Outcome != events.CallCompleted || terms[0].Source == first.Source || terms[0].AudioBytes == 0 {
		t.Fatalf("terminal events %+v, want one completed by the survivor, with its audio stored", terms)
	}
	for _, svc := range []string{config.ServiceLLM, config.ServiceElevenLabs, config.ServiceTelephony, config.ServiceCRM} {
		if n := e.sim.SideEffects(svc, req.CallID); n != 1 {
			t.Errorf("%s side effects for %s: %d, want exactly 1", svc, req.CallID, n)
		}
	}
}
