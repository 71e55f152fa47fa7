//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

// TestNATSRestartedMidCampaign stops the NATS server in the middle of a
// campaign and starts it again on the same port and store, as an operator
// restarting it would, while the dispatcher and two callers run. They
// reconnect by themselves; every contact still ends with exactly one
// terminal outcome and nothing is lost.
func TestNATSRestartedMidCampaign(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
name: healthy-ringing
services:
  telephony:
    rings: 1
`)
	s := e.settings()
	s.set("caller.ack_wait", "5s")
	cfg := e.write("agent", s)
	callers := []*proc{e.startCaller(cfg, "caller-a"), e.startCaller(cfg, "caller-b")}
	done := e.outcomes()
	contacts, ids := e.contactsFile(20)
	d := e.runDispatcher(cfg, contacts, "restart")

	waitFor(t, 60*time.Second, "5 outcomes", func() bool { return done.count() >= 5 })
	_, running := done.busiest([]string{"caller-a", "caller-b"})
	before := done.count()
	start := time.Now()
	e.nats.Stop()
	// Down until every process has noticed, and a while longer: calls in
	// flight meanwhile cannot publish their events or save their progress.
	waitFor(t, 20*time.Second, "every process disconnected", func() bool {
		for _, p := range append(callers, d) {
			if !contains(p, "nats disconnected") {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second)
	rctx, rcancel := timeout(5 * time.Second)
	defer rcancel()
	if err := e.nats.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("NATS down for %s after %d outcomes, %d calls in flight", time.Since(start).Round(time.Millisecond), before, running)

	sum := e.summary(d, 100*time.Second)
	byStatus := e.checkCampaign(sum, ids)
	redelivered, yielded := 0, 0
	for _, c := range callers {
		redelivered += strings.Count(c.Log(), "delivery=2")
		yielded += strings.Count(c.Log(), "saved by another caller")
	}
	t.Logf("campaign: %s; %v; %d log lines of second deliveries, %d calls left to a concurrent delivery",
		sumLine(sum), byStatus, redelivered, yielded)
	if sum.Succeeded != len(ids) {
		t.Errorf("%s, want all: the scenario is healthy", sumLine(sum))
	}
	for _, c := range callers {
		if c.Exited() {
			t.Errorf("%s exited across the restart: %v", c.Name, c.State())
		}
	}
	for _, text := range []string{"nats disconnected", "nats reconnected"} {
		for _, p := range append(callers, d) {
			if !contains(p, text) {
				t.Errorf("%s did not log %q", p.Name, text)
			}
		}
	}
	if e.streamMsgs(events.StreamCalls) != 0 {
		t.Errorf("CALLS still holds %d requests", e.streamMsgs(events.StreamCalls))
	}
}
