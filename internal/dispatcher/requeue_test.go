package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/natstest"
)

// A contact's pending re-queue is found and deleted by its subject, as the
// dispatcher role, with no dispatcher running: a purged one never fires, the
// others of the campaign do, and another campaign's are left alone.
func TestPurgeRequeues(t *testing.T) {
	cases := []struct {
		name   string
		purge  []string // contact ids; none purges the campaign
		purged []string
		fire   []string
	}{
		{name: "one contact", purge: []string{"b", "x"}, purged: []string{"b"}, fire: []string{"a", "c"}},
		{name: "whole campaign", purged: []string{"a", "b", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			admin := srv.Connect(t, config.NATS{User: "admin", Password: "admin-dev-password"}, "admin")
			if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
				t.Fatal(err)
			}
			conn := srv.Connect(t, config.NATS{User: "dispatcher", Password: "dispatcher-dev-password"}, "dispatcher-test")
			callerConn := srv.Connect(t, config.NATS{User: "caller", Password: "caller-dev-password"}, "caller-test")
			caller := &fakeCaller{conn: callerConn, script: func(req *events.CallRequest) reply {
				if req.Attempt == 1 {
					return reply{outcome: events.CallCompleted, callStatus: "busy"}
				}
				return reply{outcome: events.CallCompleted, callStatus: "completed"}
			}}
			cctx, stopCaller := context.WithCancel(ctx)
			callerDone := make(chan struct{})
			go func() {
				defer close(callerDone)
				_ = callerConn.Consume(cctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers", FilterSubjects: []string{events.DispatchAll}}, caller.handle)
			}()
			defer func() { stopCaller(); <-callerDone }()

			// A campaign whose name extends this one's: its schedule is not
			// under this campaign's filter.
			other := request("purge", "c9", 2)
			other.Campaign = "purge2"
			data, err := events.EncodeRequest(other)
			if err != nil {
				t.Fatal(err)
			}
			_, ajs := natstest.Raw(t, srv.URL(), "admin", "admin-dev-password")
			if _, err := ajs.PublishMsg(ctx, &nats.Msg{Subject: events.RequeueSubject("purge2", "c9"), Data: data},
				jetstream.WithScheduleAt(time.Now().Add(time.Hour)), jetstream.WithScheduleTarget(events.DispatchSubject("purge2"))); err != nil {
				t.Fatal(err)
			}

			const delay = 2 * time.Second
			list := mustContacts(t, "phone,id\n+14155550100,a\n+14155550101,b\n+14155550102,c\n", contacts.Options{})
			d := newDispatcher(t, conn, Settings{Campaign: "purge", MaxAttempts: 2, NoAnswerRetryDelay: delay})
			rctx, stop := context.WithCancel(ctx)
			ch := runAsync(rctx, d, list)
			eventually(t, 10*time.Second, "every contact waiting on a stored re-queue", func() bool {
				for _, id := range []string{"a", "b", "c"} {
					st := contactState(t, d, id)
					if st == nil || st.scheduled() == nil || st.scheduled().PublishedAt == nil {
						return false
					}
				}
				return true
			})
			stop()
			if r := waitRun(t, ch, 10*time.Second); !errors.Is(r.err, ErrUnfinished) {
				t.Fatalf("stopped run: %v", r.err)
			}

			pending, err := PendingRequeues(ctx, conn, "purge")
			if err != nil || !slices.Equal(pending, []string{"a", "b", "c"}) {
				t.Fatalf("PendingRequeues = %v, %v", pending, err)
			}
			purged, err := PurgeRequeues(ctx, conn, "purge", tc.purge...)
			if err != nil {
				t.Fatalf("PurgeRequeues as the dispatcher role: %v", err)
			}
			if !slices.Equal(purged, tc.purged) {
				t.Errorf("purged %v, want %v", purged, tc.purged)
			}
			if pending, err := PendingRequeues(ctx, conn, "purge"); err != nil || !slices.Equal(pending, tc.fire) {
				t.Errorf("pending after the purge = %v, %v; want %v", pending, err, tc.fire)
			}
			if again, err := PurgeRequeues(ctx, conn, "purge", tc.purged...); err != nil || len(again) != 0 {
				t.Errorf("purging again = %v, %v; want nothing", again, err)
			}

			for _, id := range tc.fire {
				eventually(t, 10*time.Second, "the re-queue of "+id+" called", func() bool {
					_, ok := caller.receivedAt(CallID("purge", id, 2))
					return ok
				})
			}
			// Past the time every schedule was due (they were stored within
			// a moment of each other), and a second for the server's timer.
			var due time.Time
			for _, id := range []string{"a", "b", "c"} {
				if at := *contactState(t, d, id).History[1].ScheduledAt; at.After(due) {
					due = at
				}
			}
			time.Sleep(time.Until(due.Add(2 * time.Second)))
			for _, id := range tc.purged {
				if _, ok := caller.receivedAt(CallID("purge", id, 2)); ok {
					t.Errorf("%s was called after its re-queue was purged", id)
				}
			}
			if n := caller.byContact(); len(n) != 3 || n["a"]+n["b"]+n["c"] != 3+len(tc.fire) {
				t.Errorf("calls = %v", n)
			}
			if left, err := PendingRequeues(ctx, conn, "purge2"); err != nil || !slices.Equal(left, []string{"c9"}) {
				t.Errorf("the other campaign's re-queues = %v, %v", left, err)
			}
			caller.assertNoRepeat(t)
		})
	}
}

func TestPurgeRequeuesChecksNames(t *testing.T) {
	for _, tc := range []struct{ campaign, id string }{{"a.b", ""}, {"ok", "x.y"}, {"ok", "*"}, {"", ""}} {
		var ids []string
		if tc.id != "" {
			ids = []string{tc.id}
		}
		if _, err := PurgeRequeues(context.Background(), nil, tc.campaign, ids...); err == nil {
			t.Errorf("PurgeRequeues(%q, %v) took a name that is not a token", tc.campaign, ids)
		}
	}
}

// request is the call request of one attempt, as the dispatcher writes it.
func request(campaign, contactID string, attempt int) *events.CallRequest {
	return &events.CallRequest{
		ID: MsgID(campaign, contactID, attempt), Time: time.Now().UTC(), Source: "test",
		CallID: CallID(campaign, contactID, attempt), Campaign: campaign, ContactID: contactID,
		Phone: fmt.Sprintf("+1415555%04d", 100+attempt), Attempt: attempt, MaxAttempts: 3,
	}
}

// firingStream is CALLS, except that right after the first Info it does what
// the server does when a schedule fires: publish the request and purge the
// schedule, in one step.
type firingStream struct {
	jetstream.Stream
	fire  func()
	calls int
}

func (s *firingStream) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	info, err := s.Stream.Info(ctx, opts...)
	if s.calls++; s.calls == 1 {
		s.fire()
	}
	return info, err
}

// A schedule that fires while the loss check reads CALLS is not a lost
// request: whichever it reads first, the schedule or the request, it finds
// one of them.
func TestReconcileWhileScheduleFires(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := newDispatcher(t, conn, Settings{Campaign: "race"})
	r, err := d.newRun(mustContacts(t, "phone,id\n+14155550100,x\n", contacts.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	calls, err := conn.Stream(ctx, events.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	if r.cons, err = conn.Consumer(ctx, bus.ConsumerSpec{Stream: events.StreamEvents, Durable: Durable("race"), FilterSubjects: outcomeSubjects()}); err != nil {
		t.Fatal(err)
	}

	// Attempt 2 was stored as a schedule and is overdue by more than the
	// duplicate window: only CALLS can tell whether its request is out.
	now := time.Now()
	due := now.Add(-r.dupWindow - time.Second)
	queued := due.Add(-time.Minute)
	st := &ContactState{Campaign: "race", ContactID: "x", Status: StatusPending, Attempts: 2, MaxAttempts: 3,
		NextAttemptAt: &due, LastCallID: CallID("race", "x", 2), CreatedAt: queued, UpdatedAt: queued,
		History: []Attempt{
			{Attempt: 1, CallID: CallID("race", "x", 1), QueuedAt: queued, Outcome: events.CallCompleted, CallStatus: "busy", EndedAt: &queued},
			{Attempt: 2, CallID: CallID("race", "x", 2), QueuedAt: queued, ScheduledAt: &due, PublishedAt: &queued},
		}}
	rev, err := r.store.create(ctx, Key("race", "x"), st)
	if err != nil {
		t.Fatal(err)
	}
	r.observe(st, rev)
	req := request("race", "x", 2)
	data, err := events.EncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	_, js := srv.Raw(t)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.RequeueSubject("race", "x"), Data: data},
		jetstream.WithScheduleAt(now.Add(time.Hour)), jetstream.WithScheduleTarget(events.DispatchSubject("race"))); err != nil {
		t.Fatal(err)
	}
	r.calls = &firingStream{Stream: calls, fire: func() {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.DispatchSubject("race"), Data: data}); err != nil {
			t.Error(err)
		}
		if err := calls.Purge(ctx, jetstream.WithPurgeSubject(events.RequeueSubject("race", "x"))); err != nil {
			t.Error(err)
		}
	}}

	if err := r.reconcile(ctx, now); err != nil {
		t.Fatal(err)
	}
	got := contactState(t, d, "x")
	if a := got.last(); got.Attempts != 2 || a.Outcome != "" {
		t.Errorf("a fired schedule was taken for a lost request: attempts %d, last %+v", got.Attempts, a)
	}
}
