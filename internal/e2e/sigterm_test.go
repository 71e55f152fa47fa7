//go:build linux

package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// TestCallerSIGTERM stops a caller with SIGTERM while its call is in a
// backoff. It stops taking work at once; a call that can finish within
// caller.shutdown_grace is finished by it, and one that cannot is handed back
// and finished by the other caller. Either way the call ends exactly once and
// the stopped caller exits 0.
func TestCallerSIGTERM(t *testing.T) {
	tests := []struct {
		name  string
		grace string
		// finisher is who must end the call: the stopped caller or the other.
		finisher string
	}{
		{"hands back past the grace", "200ms", "survivor"},
		{"finishes within the grace", "20s", "victim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, callers, req, first := backoffStart(t, "sigterm", map[string]any{
				"caller.ack_wait":       "30s", // a takeover must not wait for the ack wait
				"caller.shutdown_grace": tt.grace,
			})
			victim := callers[first.Source]
			if err := syscall.Kill(victim.Pid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := victim.wait(t, 25*time.Second); code != 0 {
				t.Fatalf("%s exited %d after SIGTERM, want 0", first.Source, code)
			}

			waitFor(t, 20*time.Second, "a terminal event for "+req.CallID, func() bool {
				return len(e.terminals()[req.CallID]) > 0
			})
			waitFor(t, 10*time.Second, "the request acknowledged", func() bool { return e.streamMsgs(events.StreamCalls) == 0 })
			terms := e.terminals()[req.CallID]
			if len(terms) != 1 || terms[0].Outcome != events.CallCompleted {
				t.Fatalf("terminal events for %s: %+v, want exactly one completed", req.CallID, terms)
			}
			if got := who(terms[0].Source, first.Source); got != tt.finisher {
				t.Errorf("the call was ended by the %s (%s), want the %s", got, terms[0].Source, tt.finisher)
			}
			for _, svc := range []string{config.ServiceTelephony, config.ServiceCRM} {
				if n := e.sim.SideEffects(svc, req.CallID); n != 1 {
					t.Errorf("%s side effects for %s: %d, want exactly 1", svc, req.CallID, n)
				}
			}
		})
	}
}
