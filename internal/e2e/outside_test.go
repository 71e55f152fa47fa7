//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/stack"
)

// TestSeedAgainstOutsideProviders runs the seed scenario (ElevenLabs busy
// for the first four text-to-speech requests) with every process started
// separately, as the README starts them: `dispatcher provision`, the media
// server, the observer, two callers and `dispatcher run`, under nats.conf's
// roles, against the provider fake of outside_fake_test.go, not the
// simulator. It ends 2/3: contact 1 uses up its retries and fails with an
// alert, contacts 2 and 3 are rung once each, hear the audio the TTS made,
// and get one CRM record each although HubSpot's search answers carry no
// total.
func TestSeedAgainstOutsideProviders(t *testing.T) {
	t.Parallel()
	// The simulator newEnv starts serves nothing here: every base URL points
	// at the fake, and the end checks the simulator saw no request.
	e := newEnv(t, "name: unused\n")
	fake := newOutside(t, 4)
	ports, err := stack.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	media := fmt.Sprintf("127.0.0.1:%d", ports[0])

	s := e.settings()
	for _, name := range config.Services {
		s.set("services."+name+".base_url", fake.URL(name))
	}
	// The seed policy, scaled: one try and three retries, doubling.
	s.set("services.elevenlabs.retry.max_retries", 3)
	s.set("services.elevenlabs.retry.initial_delay", "200ms")
	s.set("services.telephony.options", map[string]any{
		"account_sid": "AC00000000000000000000000000000000",
		"from_number": "+15005550006",
	})
	s.set("media.http.addr", media)
	s.set("media.public_url", "http://"+media)
	// As in the demo: one call at a time across both callers, so contact 1
	// meets the four 503s and contacts 2 and 3 the recovered service.
	s.set("caller.concurrency", 1)
	s.set("caller.fleet_max_in_flight", 1)
	cfg := e.write("outside", s)

	provision := e.start("provision", "dispatcher", "provision", "--config", cfg)
	if code := provision.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("dispatcher provision exited %d:\n%s", code, provision.Tail(20))
	}
	if out := provision.stdout.String(); !strings.Contains(out, "call_audio") {
		t.Errorf("dispatcher provision did not report call_audio:\n%s", out)
	}
	e.start("media", "media", "--config", cfg).waitLog(t, "media started", 20*time.Second)
	e.startObserver(cfg, "observer")
	e.startCaller(cfg, "caller-a")
	e.startCaller(cfg, "caller-b")

	contacts, ids := e.contactsFile(3)
	sum := e.summary(e.runDispatcher(cfg, contacts, "outside"), 90*time.Second)
	if !sum.Finished || sum.Succeeded != 2 {
		t.Errorf("campaign: finished %v, %d/%d succeeded, want 2/3", sum.Finished, sum.Succeeded, sum.Total)
	}
	want := map[string]dispatcher.Status{ids[0]: dispatcher.StatusFailed, ids[1]: dispatcher.StatusCompleted, ids[2]: dispatcher.StatusCompleted}
	phones := map[string]string{} // call id -> number rung
	completed := map[string]string{}
	for i, c := range sum.Contacts {
		if c.Status != want[c.ContactID] {
			t.Errorf("contact %s is %s (%s), want %s", c.ContactID, c.Status, c.LastReason, want[c.ContactID])
		}
		if len(c.History) != 1 {
			t.Errorf("contact %s has %d attempts, want 1", c.ContactID, len(c.History))
			continue
		}
		phones[c.History[0].CallID] = fmt.Sprintf("+1415555%04d", 100+i)
		if c.Status == dispatcher.StatusCompleted {
			completed[c.History[0].CallID] = c.ContactID
		}
	}
	if r := sum.Contacts[0].LastReason; !strings.Contains(r, "retries_exhausted") && !strings.Contains(r, "retries exhausted") {
		t.Errorf("contact 1's reason %q, want retries exhausted", r)
	}

	// One terminal event per call, saying what the summary says.
	terms := e.terminals()
	for callID := range phones {
		if n := len(terms[callID]); n != 1 {
			t.Errorf("call %s has %d terminal events, want 1", callID, n)
		}
	}
	for callID := range completed {
		if ev := terms[callID]; len(ev) == 1 && (ev[0].Outcome != events.CallCompleted || ev[0].AudioBytes == 0) {
			t.Errorf("call %s ended %s with %d audio bytes, want completed with its audio", callID, ev[0].Outcome, ev[0].AudioBytes)
		}
	}

	// What the providers saw: contact 1 was never rung and has no record;
	// each completed call was placed once, played the TTS audio and has one
	// record.
	got := fake.counts()
	if got.llm != 3 || got.tts != 6 {
		t.Errorf("provider requests: %d completions, %d text-to-speech; want 3 and 6 (4 refused + 2)", got.llm, got.tts)
	}
	rung := map[string]int{}
	for _, c := range got.calls {
		rung[c.to]++
		if !c.played {
			t.Errorf("call %s to %s did not play the TTS audio: %s", c.sid, c.to, c.why)
		}
	}
	for callID, phone := range phones {
		wantRung, wantRecords := 0, 0
		if _, ok := completed[callID]; ok {
			wantRung, wantRecords = 1, 1
		}
		if rung[phone] != wantRung || got.creates[callID] != wantRecords {
			t.Errorf("call %s: rung %d times, %d CRM records; want %d and %d", callID, rung[phone], got.creates[callID], wantRung, wantRecords)
		}
	}
	if len(got.calls) != 2 {
		t.Errorf("%d calls placed, want 2", len(got.calls))
	}

	// The observer raised the ElevenLabs alert.
	waitFor(t, 20*time.Second, "an elevenlabs alert on ALERTS", func() bool {
		for _, m := range e.read(events.StreamAlerts, events.AlertAll) {
			if a, err := events.DecodeAs[*events.Alert](m.Data); err == nil && a.Service == config.ServiceElevenLabs && a.Status == events.AlertFiring {
				return true
			}
		}
		return false
	})
	for _, svc := range config.Services {
		if n := total(e.sim.Requests(svc)); n != 0 {
			t.Errorf("the simulator got %d %s requests; every one should have gone to the outside fake", n, svc)
		}
	}
}

// total sums a per-status request count.
func total(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
