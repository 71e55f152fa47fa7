package delivery_test

import (
	"slices"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/natstest"
)

// With batch_wait 0 (the default) a sink batches adaptively, like Nagle's
// algorithm: an idle sink is handed a lone record at once, a batch of 1
// although batch_size allows 10; records that come while a delivery is in
// flight are read ahead meanwhile (the observer holds them, unacknowledged,
// before the plugin answers) and go together in the next batch.
func TestAdaptiveBatching(t *testing.T) {
	conn := natstest.Start(t).Conn(t)
	s := newScript(t)
	sc := fastSink("nagle", "scripted", s.config(nil))
	sc.BatchWait = 0 // the default: adaptive
	sc.Start = ""    // from now: only what this test publishes
	run(t, conn, nil, sc)

	// Idle: each record goes alone, as soon as it comes.
	first := alert(t, conn, events.SeverityCritical, "llm").ID
	waitFor(t, 10*time.Second, "the first alert delivered", func() bool { return len(s.delivered(t)) == 1 })
	second := alert(t, conn, events.SeverityCritical, "tts").ID
	waitFor(t, 10*time.Second, "the second alert delivered", func() bool { return len(s.delivered(t)) == 2 })

	// In flight: the plugin holds a third alert's delivery; ten more come
	// meanwhile.
	touch(t, s.hold)
	third := alert(t, conn, events.SeverityCritical, "telephony").ID
	waitFor(t, 10*time.Second, "the third alert handed to the plugin", func() bool { return len(s.batches(t)) == 3 })
	more := alerts(t, conn, 10)
	waitFor(t, 10*time.Second, "the ten read ahead while the third is in flight", func() bool {
		info, err := conn.ConsumerInfo(t.Context(), events.StreamAlerts, "sink-nagle")
		return err == nil && info.NumAckPending == 11 && info.NumPending == 0
	})
	remove(t, s.hold)
	waitFor(t, 10*time.Second, "every alert delivered", func() bool { return len(s.delivered(t)) == 13 })

	want := [][]string{{first}, {second}, {third}, more}
	if got := s.batches(t); !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Errorf("batches %v, want %v", got, want)
	}
}
