package dispatcher

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/natstest"
)

// Publishing more contacts than one send window holds, by one dispatcher or
// by two at once: every contact is queued once, its request is on the stream
// once under its attempt's message id, in file order from one dispatcher, and
// its state records the stream's confirmation. Publishing again adds nothing.
func TestPublishManyWindows(t *testing.T) {
	const n = 2*sendWindow + 37
	var csv strings.Builder
	csv.WriteString("id,phone\n")
	for i := range n {
		fmt.Fprintf(&csv, "k%04d,+1415555%04d\n", i, i)
	}
	list := mustContacts(t, csv.String(), contacts.Options{})

	tests := []struct {
		name        string
		dispatchers int
	}{
		{"one dispatcher", 1},
		{"two dispatchers at once", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			conn := srv.Conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs := make(chan error, tc.dispatchers)
			for range tc.dispatchers {
				d := newDispatcher(t, srv.Conn(t), Settings{Campaign: "bulk"})
				go func() {
					_, err := d.Publish(ctx, list)
					errs <- err
				}()
			}
			for range tc.dispatchers {
				if err := <-errs; err != nil {
					t.Fatalf("Publish: %v", err)
				}
			}
			if got := natstest.LastSeq(t, conn, events.StreamCalls); got != n {
				t.Fatalf("CALLS holds %d requests, want %d", got, n)
			}

			stream, err := conn.Stream(ctx, events.StreamCalls)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for seq := uint64(1); seq <= n; seq++ {
				m, err := stream.GetMsg(ctx, seq)
				if err != nil {
					t.Fatalf("message %d: %v", seq, err)
				}
				req, err := events.DecodeRequest(m.Data)
				if err != nil {
					t.Fatalf("message %d: %v", seq, err)
				}
				if seen[req.ContactID] {
					t.Errorf("contact %s published twice", req.ContactID)
				}
				seen[req.ContactID] = true
				if id := m.Header.Get(jetstream.MsgIDHeader); id != MsgID("bulk", req.ContactID, 1) || req.Attempt != 1 {
					t.Errorf("message %d: msg id %q, attempt %d", seq, id, req.Attempt)
				}
				if want := list[seq-1].ID; tc.dispatchers == 1 && req.ContactID != want {
					t.Fatalf("message %d is contact %s, want %s: not in file order", seq, req.ContactID, want)
				}
			}

			d := newDispatcher(t, conn, Settings{Campaign: "bulk"})
			st, err := d.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Total != n || st.InFlight != n {
				t.Errorf("status: %d contacts, %d in flight; want %d, %d", st.Total, st.InFlight, n, n)
			}
			for _, c := range st.Contacts {
				if c.Status != StatusQueued || c.Attempts != 1 || len(c.History) != 1 || c.History[0].PublishedAt == nil {
					t.Fatalf("contact %s = %+v", c.ContactID, c)
				}
			}

			if _, err := d.Publish(ctx, list); err != nil {
				t.Fatalf("Publish again: %v", err)
			}
			if got := natstest.LastSeq(t, conn, events.StreamCalls); got != n {
				t.Errorf("publishing again stored %d more requests", got-n)
			}
		})
	}
}

// Outcomes are handled concurrently, so an attempt's start can be read after
// its end: the state is then the one reading them in order gives.
func TestPolicyStartedAfterOutcome(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	p := policy{maxAttempts: 3, noAnswerDelay: time.Hour}
	callID := CallID("c", "x", 1)
	queued := func() *ContactState {
		return &ContactState{Campaign: "c", ContactID: "x", Status: StatusQueued, Attempts: 1, LastCallID: callID,
			History: []Attempt{{Attempt: 1, CallID: callID, QueuedAt: now}}}
	}
	ev := func(outcome, callStatus string) *events.Call {
		e := &events.Call{CallRef: events.CallRef{CallID: callID, Campaign: "c", ContactID: "x"}, Outcome: outcome, Attempt: 1, CallStatus: callStatus}
		e.Time = now
		return e
	}
	tests := []struct {
		name       string
		callStatus string
		status     Status
	}{
		{"answered", "completed", StatusCompleted},
		{"busy", "busy", StatusPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inOrder, reversed := queued(), queued()
			started, ended := ev(events.CallStarted, ""), ev(events.CallCompleted, tc.callStatus)
			if !p.apply(inOrder, started, now) || !p.apply(inOrder, ended, now) {
				t.Fatal("in order: an event changed nothing")
			}
			if !p.apply(reversed, ended, now) || !p.apply(reversed, started, now) {
				t.Fatal("reversed: an event changed nothing")
			}
			if p.apply(reversed, started, now) {
				t.Error("a second started event changed the state")
			}
			if reversed.Status != tc.status || inOrder.Status != tc.status {
				t.Errorf("status in order %s, reversed %s; want %s", inOrder.Status, reversed.Status, tc.status)
			}
			if a := reversed.last(); a.StartedAt == nil || !a.done() {
				t.Errorf("reversed attempt = %+v", a)
			}
		})
	}
}
