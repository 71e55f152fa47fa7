//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
)

// garbage is what a broken or hostile publisher might put on a subject.
func garbage(subject string) map[string][]byte {
	return map[string][]byte{
		"empty":          {},
		"not json":       []byte("hello, callers"),
		"binary":         {0x00, 0xff, 0xfe, 0x01, 0x80},
		"truncated":      []byte(`{"id":"g1","type":"request","call_id":`),
		"array":          []byte(`[1,2,3]`),
		"deeply nested":  []byte(strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)),
		"too large":      []byte(`{"id":"big","type":"call","pad":"` + strings.Repeat("a", 100_000) + `"}`),
		"missing fields": []byte(`{"type":"request"}`),
		"wrong type":     []byte(`{"id":"g2","type":"alert","time":"2026-01-01T00:00:00Z","source":"evil","v":1}`),
		"bad values": []byte(`{"id":"g3","type":"request","time":"2026-01-01T00:00:00Z","source":"evil","v":1,` +
			`"call_id":"x-evil-1","campaign":"x","contact_id":"evil","phone":"12345","attempt":0,"outcome":"exploded"}`),
		"nulls":              []byte(`{"id":null,"type":null,"time":null,"call_id":null}`),
		"wrong version":      []byte(`{"id":"g4","type":"call","time":"2026-01-01T00:00:00Z","source":"evil","v":99,"call_id":"x-evil-1","outcome":"completed"}`),
		"subject " + subject: []byte(`"` + subject + `"`),
	}
}

// TestBadInputIsTerminated publishes garbage and malformed JSON on the
// call queue (agent.dispatch.x) and on agent.call.completed while a campaign
// runs. The callers, the observer and the dispatcher terminate each bad
// message with its reason and go on: none of them crashes or redelivers
// it, their consumers are left with nothing pending, and the campaign
// completes.
func TestBadInputIsTerminated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "name: ringing\nservices:\n  telephony:\n    rings: 1\n")
	s := e.settings()
	s.set("dispatcher.campaign", "x")
	cfg := e.write("agent", s)
	callers := []*proc{e.startCaller(cfg, "caller-a"), e.startCaller(cfg, "caller-b")}
	obs := e.startObserver(cfg, "observer")
	e.waitConsumer(events.StreamEvents, "observer")
	e.waitConsumer(events.StreamCalls, "callers")

	contacts, ids := e.contactsFile(5)
	d := e.runDispatcher(cfg, contacts, "x")
	e.waitConsumer(events.StreamEvents, dispatcher.Durable("x"))
	bad := 0
	for _, subject := range []string{events.DispatchSubject("x"), events.CallSubject(events.CallCompleted)} {
		for _, data := range garbage(subject) {
			e.publishRaw(subject, data)
			bad++
		}
	}

	sum := e.summary(d, 60*time.Second)
	byStatus := e.checkCampaign(sum, ids)
	if sum.Succeeded != len(ids) {
		t.Errorf("%s, want all", sumLine(sum))
	}
	// The observer still derives alerts after the garbage.
	alerts := e.subscribe(events.AlertAll)
	e.emit(attempt(config.ServiceCRM, "x-after-1", events.OutcomeFailure, events.CategoryPermanent, 401))
	select {
	case <-alerts:
	case <-time.After(20 * time.Second):
		t.Error("the observer derived no alert from a good event after the garbage")
	}

	waitFor(t, 20*time.Second, "the callers' and the observer's consumers settled", func() bool {
		return e.settled(events.StreamCalls, "callers") && e.settled(events.StreamEvents, "observer")
	})
	if n := e.streamMsgs(events.StreamCalls); n != 0 {
		t.Errorf("CALLS still holds %d messages: terminated requests must leave the work queue", n)
	}
	for _, p := range append(callers, obs) {
		if p.Exited() {
			t.Errorf("%s exited: %v", p.Name, p.State())
		}
	}
	terminated := 0
	for _, p := range append(callers, obs, d) {
		n := strings.Count(p.Log(), "message terminated")
		terminated += n
		if strings.Contains(p.Log(), "panic") {
			t.Errorf("%s logged a panic", p.Name)
		}
	}
	t.Logf("campaign %s; %v; %d bad messages published, %d terminations logged (callers, observer, dispatcher)",
		sumLine(sum), byStatus, bad, terminated)
	// Each bad request is terminated by one caller, each bad outcome by
	// both the observer and the dispatcher.
	if want := bad + bad/2; terminated != want {
		t.Errorf("%d terminations logged, want %d", terminated, want)
	}
}
