package dispatcher

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

// The seed scenario's shape: one contact fails for good, two succeed; a
// second run of the finished campaign calls nobody.
func TestRunCampaignAndRerun(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	caller := startCaller(t, srv, func(req *events.CallRequest) reply {
		if req.ContactID == "c1" {
			return reply{outcome: events.CallFailed, reason: "retries_exhausted", service: "elevenlabs"}
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	})
	list := mustContacts(t, "phone,id,name,plan\n+918881234882,c1,Asha,gold\n+14155550100,c2,Bob,\n+442079460000,c3,Cy,silver\n", contacts.Options{})

	var out syncBuffer
	d := newDispatcher(t, conn, Settings{Campaign: "seed", Progress: &out, ProgressMode: ProgressLines})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sum, err := d.Run(ctx, list)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := sum.Line(), "2/3 contacts succeeded (66.7%)"; got != want {
		t.Errorf("Line() = %q, want %q", got, want)
	}
	if !sum.Finished || sum.Failed != 1 || sum.Succeeded != 2 {
		t.Errorf("summary = %+v", sum)
	}
	want := map[string]Status{"c1": StatusFailed, "c2": StatusCompleted, "c3": StatusCompleted}
	for _, c := range sum.Contacts {
		if c.Status != want[c.ContactID] || c.Attempts != 1 || len(c.History) != 1 || c.History[0].PublishedAt == nil {
			t.Errorf("contact %s = %+v", c.ContactID, c)
		}
	}
	if c := sum.Contacts[0]; c.LastReason != "retries_exhausted (elevenlabs)" || c.Contact != events.MaskPhone("+918881234882") {
		t.Errorf("failed contact = %+v", c)
	}

	var text strings.Builder
	if err := sum.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"CONTACT", "retries_exhausted (elevenlabs)", "2/3 contacts succeeded (66.7%)\n", events.MaskPhone("+14155550100")} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("summary text lacks %q:\n%s", s, text.String())
		}
	}
	progress := out.String()
	if n := strings.Count(progress, "\n"); n != 3 || !strings.Contains(progress, "c1 "+events.MaskPhone("+918881234882")+" attempt 1/3: failed: retries_exhausted (elevenlabs)") {
		t.Errorf("progress lines (%d):\n%s", n, progress)
	}
	for _, full := range []string{"8881234882", "4155550100", "2079460000"} {
		if strings.Contains(text.String()+progress, full) {
			t.Errorf("output holds the full number %s", full)
		}
	}
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 3 {
		t.Errorf("published %d requests, want 3", n)
	}

	// Run the finished campaign again, as an operator would by mistake.
	d2 := newDispatcher(t, conn, Settings{Campaign: "seed"})
	sum2, err := d2.Run(ctx, list)
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if sum2.Line() != sum.Line() || !sum2.Finished {
		t.Errorf("second run summary = %s", sum2.Line())
	}
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 3 {
		t.Errorf("after the re-run %d requests were published, want still 3", n)
	}
	for id, n := range caller.byContact() {
		if n != 1 {
			t.Errorf("contact %s was called %d times", id, n)
		}
	}
	caller.assertNoRepeat(t)

	// Status reads the same from the bucket alone.
	st, err := d2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Line() != sum.Line() || len(st.Contacts) != 3 || st.Contacts[0].ContactID != "c1" {
		t.Errorf("status = %+v", st)
	}
}

func TestRequeue(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	caller := startCaller(t, srv, func(req *events.CallRequest) reply {
		switch {
		case req.ContactID == "skip" && req.Attempt == 1:
			return reply{outcome: events.CallSkipped, reason: events.CategoryCircuitOpen, service: "elevenlabs", retryIn: 400 * time.Millisecond}
		case req.ContactID == "busy":
			return reply{outcome: events.CallCompleted, callStatus: "busy"}
		case req.ContactID == "noanswer" && req.Attempt == 1:
			return reply{outcome: events.CallCompleted, callStatus: "no-answer"}
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	})
	list := mustContacts(t, "phone,id\n+14155550100,skip\n+14155550101,busy\n+14155550102,noanswer\n", contacts.Options{})
	d := newDispatcher(t, conn, Settings{
		Campaign:           "requeue",
		MaxAttempts:        3,
		NoAnswerRetryDelay: 150 * time.Millisecond,
		SkippedRetryDelay:  50 * time.Millisecond, // shorter than the breaker's own estimate: that one wins
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sum, err := d.Run(ctx, list)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := sum.Line(); got != "2/3 contacts succeeded (66.7%)" {
		t.Errorf("Line() = %q", got)
	}
	byID := map[string]ContactState{}
	for _, c := range sum.Contacts {
		byID[c.ContactID] = c
	}

	skip := byID["skip"]
	if skip.Status != StatusCompleted || skip.Attempts != 2 || skip.History[0].Outcome != events.CallSkipped {
		t.Errorf("skipped contact = %+v", skip)
	} else if skip.History[1].ScheduledAt == nil || skip.History[1].StartedAt == nil {
		t.Errorf("skipped contact's re-queue was not a stored schedule that ran: %+v", skip.History[1])
	} else if gap := skip.History[1].StartedAt.Sub(*skip.History[0].EndedAt); gap < 400*time.Millisecond {
		t.Errorf("skipped contact re-queued after %s, before the breaker's retry_in_ms (400ms)", gap)
	}

	busy := byID["busy"]
	if busy.Status != StatusExhausted || busy.Attempts != 3 || busy.LastReason != "busy" || len(busy.History) != 3 {
		t.Errorf("busy contact = %+v", busy)
	} else {
		for i := 1; i < 3; i++ {
			if a := busy.History[i]; a.ScheduledAt == nil || a.StartedAt == nil {
				t.Errorf("busy attempt %d was not a stored schedule that ran: %+v", i+1, a)
			} else if gap := a.StartedAt.Sub(*busy.History[i-1].EndedAt); gap < 150*time.Millisecond {
				t.Errorf("busy attempt %d re-queued after %s, before the no-answer delay", i+1, gap)
			}
		}
	}
	if na := byID["noanswer"]; na.Status != StatusCompleted || na.Attempts != 2 {
		t.Errorf("no-answer contact = %+v", na)
	}
	calls := caller.byContact()
	if calls["skip"] != 2 || calls["busy"] != 3 || calls["noanswer"] != 2 {
		t.Errorf("calls = %v", calls)
	}
	caller.assertNoRepeat(t)
	// 3 first attempts published, and 4 re-queues each stored once as a
	// schedule and published once by the stream.
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 3+2*4 {
		t.Errorf("CALLS stored %d messages, want %d", n, 3+2*4)
	}
}

func TestCallingWindowPostpones(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	caller := startCaller(t, srv, func(*events.CallRequest) reply {
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	})
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// 03:00 in New York is 13:30 in Kolkata: one contact may be called, the other not.
	clock := resiliencetest.NewClock(time.Date(2026, 3, 2, 3, 0, 0, 0, ny))
	list := mustContacts(t, "phone,id,timezone\n+12125550100,ny,America/New_York\n+918881234882,in,Asia/Kolkata\n", contacts.Options{})
	var out syncBuffer
	d := newDispatcher(t, conn, Settings{Campaign: "window", CallingWindow: "08:00-21:00", Clock: clock, Progress: &out, ProgressMode: ProgressLines})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := runAsync(ctx, d, list)

	eventually(t, 10*time.Second, "the Kolkata contact completed and the New York one postponed", func() bool {
		in, nyc := contactState(t, d, "in"), contactState(t, d, "ny")
		return in != nil && in.Status == StatusCompleted && nyc != nil && nyc.Status == StatusPostponed
	})
	nyc := contactState(t, d, "ny")
	if opens := time.Date(2026, 3, 2, 8, 0, 0, 0, ny); nyc.NextAttemptAt == nil || !nyc.NextAttemptAt.Equal(opens) || nyc.Attempts != 0 {
		t.Errorf("postponed contact = %+v, want next attempt at %s", nyc, opens)
	}
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 1 {
		t.Errorf("published %d requests outside the window, want 1", n)
	}

	clock.Advance(4*time.Hour + 59*time.Minute) // 07:59: still closed
	time.Sleep(100 * time.Millisecond)
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 1 {
		t.Errorf("published %d requests before the window opened, want 1", n)
	}
	clock.Advance(time.Minute)
	r := waitRun(t, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
	if r.sum.Line() != "2/2 contacts succeeded (100.0%)" {
		t.Errorf("Line() = %q", r.sum.Line())
	}
	if c := caller.byContact(); c["ny"] != 1 || c["in"] != 1 {
		t.Errorf("calls = %v", c)
	}
	if !strings.Contains(out.String(), "ny "+events.MaskPhone("+12125550100")+" postponed to 2026-03-02 13:00:00 UTC: outside calling window 08:00-21:00 America/New_York") {
		t.Errorf("progress:\n%s", out.String())
	}
}

// A dispatcher stopped mid-campaign leaves everything in the bucket and on
// the bus; the next one finishes the campaign without calling anyone twice.
func TestRestartResumes(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	gate := make(chan struct{})
	caller := startCaller(t, srv, func(req *events.CallRequest) reply {
		switch req.ContactID {
		case "fast":
			return reply{outcome: events.CallCompleted, callStatus: "completed"}
		case "skip":
			if req.Attempt == 1 {
				return reply{outcome: events.CallSkipped, reason: events.CategoryCircuitOpen, retryIn: 1500 * time.Millisecond}
			}
			return reply{outcome: events.CallCompleted, callStatus: "completed"}
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed", hold: gate}
	})
	list := mustContacts(t, "phone,id\n+14155550100,fast\n+14155550101,slow1\n+14155550102,slow2\n+14155550103,skip\n", contacts.Options{})

	d1 := newDispatcher(t, conn, Settings{Campaign: "restart"})
	ctx1, stop1 := context.WithCancel(context.Background())
	defer stop1()
	ch := runAsync(ctx1, d1, list)
	eventually(t, 10*time.Second, "fast completed, skip re-queued, slow ones in progress", func() bool {
		f, s, a, b := contactState(t, d1, "fast"), contactState(t, d1, "skip"), contactState(t, d1, "slow1"), contactState(t, d1, "slow2")
		return f != nil && f.Status == StatusCompleted && s != nil && s.Status == StatusSkipped &&
			a != nil && a.Status == StatusInProgress && b != nil && b.Status == StatusInProgress
	})
	stop1()
	r := waitRun(t, ch, 10*time.Second)
	if !errors.Is(r.err, ErrUnfinished) || r.sum == nil || r.sum.Finished {
		t.Fatalf("stopped run = %+v, %v; want ErrUnfinished", r.sum, r.err)
	}

	// The slow calls end while no dispatcher runs; their outcomes wait on EVENTS.
	close(gate)
	eventually(t, 5*time.Second, "the slow calls acknowledged", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := conn.Stream(ctx, events.StreamCalls)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})

	d2 := newDispatcher(t, conn, Settings{Campaign: "restart"})
	ctx2, stop2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer stop2()
	sum, err := d2.Run(ctx2, list)
	if err != nil {
		t.Fatalf("resumed Run: %v", err)
	}
	if sum.Line() != "4/4 contacts succeeded (100.0%)" {
		t.Errorf("Line() = %q", sum.Line())
	}
	if c := caller.byContact(); c["fast"] != 1 || c["slow1"] != 1 || c["slow2"] != 1 || c["skip"] != 2 {
		t.Errorf("calls = %v", c)
	}
	caller.assertNoRepeat(t)
	// 4 first attempts, and skip's re-queue stored as a schedule and fired.
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 4+2 {
		t.Errorf("CALLS stored %d messages, want %d", n, 4+2)
	}
}

// A re-queue is stored in JetStream, not in the dispatcher: stopped while
// contacts wait for their next attempt, the dispatcher misses nothing; the
// stream calls them on time, and a dispatcher started later reports the end.
func TestRequeueFiresWithoutDispatcher(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	caller := startCaller(t, srv, func(req *events.CallRequest) reply {
		switch {
		case req.ContactID == "again":
			return reply{outcome: events.CallCompleted, callStatus: "busy"}
		case req.ContactID == "busy" && req.Attempt == 1:
			return reply{outcome: events.CallCompleted, callStatus: "busy"}
		case req.ContactID == "skip" && req.Attempt == 1:
			return reply{outcome: events.CallSkipped, reason: events.CategoryCircuitOpen, service: "llm", retryIn: 2500 * time.Millisecond}
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	})
	list := mustContacts(t, "phone,id\n+14155550100,ok\n+14155550101,busy\n+14155550102,again\n+14155550103,skip\n", contacts.Options{})
	const delay = 2 * time.Second
	settings := Settings{Campaign: "durable", MaxAttempts: 2, NoAnswerRetryDelay: delay}

	d1 := newDispatcher(t, conn, settings)
	ctx1, stop1 := context.WithCancel(context.Background())
	defer stop1()
	ch := runAsync(ctx1, d1, list)
	waiting := []string{"busy", "again", "skip"}
	eventually(t, 10*time.Second, "three contacts waiting on a stored re-queue", func() bool {
		for _, id := range waiting {
			st := contactState(t, d1, id)
			if st == nil || len(st.History) != 2 || st.History[1].ScheduledAt == nil || st.History[1].PublishedAt == nil {
				return false
			}
		}
		return true
	})
	stop1()
	if r := waitRun(t, ch, 10*time.Second); !errors.Is(r.err, ErrUnfinished) {
		t.Fatalf("stopped run: %v; want ErrUnfinished", r.err)
	}

	// No dispatcher runs now: the stream alone makes the second attempts.
	for _, id := range waiting {
		first := contactState(t, d1, id).History[0]
		callID := CallID("durable", id, 2)
		eventually(t, 15*time.Second, "the re-queue of "+id+" called", func() bool {
			_, ok := caller.receivedAt(callID)
			return ok
		})
		at, _ := caller.receivedAt(callID)
		want := delay
		if id == "skip" {
			want = 2500 * time.Millisecond
		}
		// Compared with the first attempt's end as the caller stamped it.
		if late := at.Sub(first.EndedAt.Add(want)); late < 0 {
			t.Errorf("%s re-queued %s early", id, -late)
		} else {
			t.Logf("%s: re-queue fired %s after it was due", id, late.Round(time.Millisecond))
		}
	}

	d2 := newDispatcher(t, conn, settings)
	ctx2, stop2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer stop2()
	sum, err := d2.Run(ctx2, list)
	if err != nil {
		t.Fatalf("restarted Run: %v", err)
	}
	if sum.Line() != "3/4 contacts succeeded (75.0%)" {
		t.Errorf("Line() = %q", sum.Line())
	}
	for _, c := range sum.Contacts {
		want := map[string]Status{"ok": StatusCompleted, "busy": StatusCompleted, "skip": StatusCompleted, "again": StatusExhausted}[c.ContactID]
		if c.Status != want {
			t.Errorf("%s = %s, want %s", c.ContactID, c.Status, want)
		}
	}
	if c := caller.byContact(); c["ok"] != 1 || c["busy"] != 2 || c["again"] != 2 || c["skip"] != 2 {
		t.Errorf("calls = %v", c)
	}
	caller.assertNoRepeat(t)
	if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 4+2*3 {
		t.Errorf("CALLS stored %d messages, want %d", n, 4+2*3)
	}
}

// A request that leaves the queue without an outcome (here a caller
// terminates it) is recorded as lost, and the contact gets its next attempt,
// never the same attempt again.
func TestLostRequestGetsNextAttempt(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	caller := startCaller(t, srv, func(req *events.CallRequest) reply {
		if req.Attempt == 1 {
			return reply{} // terminate without an outcome
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	})
	clock := resiliencetest.NewClock(time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC))
	d := newDispatcher(t, conn, Settings{Campaign: "lost", Clock: clock, ReconcileInterval: time.Second})
	list := mustContacts(t, "phone,id\n+14155550100,x\n", contacts.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := runAsync(ctx, d, list)

	eventually(t, 10*time.Second, "the first request taken", func() bool { return caller.byContact()["x"] == 1 })
	eventually(t, 5*time.Second, "the request gone from CALLS", func() bool {
		s, err := conn.Stream(ctx, events.StreamCalls)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	eventually(t, 5*time.Second, "the started event read", func() bool {
		st := contactState(t, d, "x")
		return st != nil && st.Status == StatusInProgress
	})
	clock.Advance(time.Minute) // inside the duplicate window: not yet declared lost
	time.Sleep(100 * time.Millisecond)
	if st := contactState(t, d, "x"); st.Attempts != 1 || !st.Status.inFlight() {
		t.Fatalf("contact after 1m = %+v", st)
	}
	clock.Advance(2 * time.Minute)
	r := waitRun(t, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
	c := r.sum.Contacts[0]
	if c.Status != StatusCompleted || c.Attempts != 2 || c.History[0].Outcome != outcomeLost {
		t.Errorf("contact = %+v", c)
	}
	caller.assertNoRepeat(t)
}

// The dispatcher does everything it needs with only the permissions nats.conf
// gives its role: state bucket, outcome consumer, publishing, status.
func TestRunWithRolePermissions(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	admin := srv.Connect(t, config.NATS{User: "admin", Password: "admin-dev-password"}, "admin")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatal(err)
	}
	conn := srv.Connect(t, config.NATS{User: "dispatcher", Password: "dispatcher-dev-password"}, "dispatcher-test")
	callerConn := srv.Connect(t, config.NATS{User: "caller", Password: "caller-dev-password"}, "caller-test")
	caller := &fakeCaller{conn: callerConn, script: func(req *events.CallRequest) reply {
		if req.ContactID == "b" && req.Attempt == 1 {
			return reply{outcome: events.CallSkipped, retryIn: 100 * time.Millisecond}
		}
		return reply{outcome: events.CallCompleted, callStatus: "completed"}
	}}
	cctx, stopCaller := context.WithCancel(ctx)
	callerDone := make(chan struct{})
	go func() {
		defer close(callerDone)
		// Like the real caller: CALLS also holds the re-queue schedules.
		_ = callerConn.Consume(cctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers", FilterSubjects: []string{events.DispatchAll}}, caller.handle)
	}()
	defer func() { stopCaller(); <-callerDone }()

	list := mustContacts(t, "phone,id\n+14155550100,a\n+14155550101,b\n", contacts.Options{})
	d := newDispatcher(t, conn, Settings{Campaign: "perm"})
	sum, err := d.Run(ctx, list)
	if err != nil {
		t.Fatalf("Run as the dispatcher role: %v", err)
	}
	if sum.Line() != "2/2 contacts succeeded (100.0%)" {
		t.Errorf("Line() = %q", sum.Line())
	}
	st, err := d.Status(ctx)
	if err != nil || st.Line() != sum.Line() {
		t.Errorf("Status as the dispatcher role = %v, %v", st, err)
	}
	if _, err := admin.ConsumerInfo(ctx, events.StreamEvents, Durable("perm")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the finished campaign's consumer is still there: %v", err)
	}
}

// Two dispatchers on the same campaign, started together or the second
// while the first's re-queues wait on the stream, share the work and the
// state: each attempt reaches a caller once and both see the end.
func TestConcurrentDispatchers(t *testing.T) {
	cases := []struct {
		name  string
		delay time.Duration
		// join: the second starts once the first has stored every re-queue.
		join bool
	}{
		{name: "started together", delay: 300 * time.Millisecond},
		{name: "second joins while re-queues wait", delay: 2 * time.Second, join: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			conn := srv.Conn(t)
			// Half the contacts are busy once: both dispatchers see their
			// state and may store the re-queue, which the stream keeps once.
			caller := startCaller(t, srv, func(req *events.CallRequest) reply {
				if req.Attempt == 1 && strings.HasSuffix(req.Phone, "1") {
					return reply{outcome: events.CallCompleted, callStatus: "busy"}
				}
				return reply{outcome: events.CallCompleted, callStatus: "completed"}
			})
			list := mustContacts(t, "phone\n+14155550100\n+14155550101\n+14155550102\n+14155550111\n+14155550104\n+14155550121\n", contacts.Options{})
			busy := map[string]bool{}
			for _, c := range list {
				busy[c.ID] = strings.HasSuffix(c.Phone, "1")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s := Settings{Campaign: "twins", NoAnswerRetryDelay: tc.delay}
			first := newDispatcher(t, srv.Conn(t), s)
			a := runAsync(ctx, first, list)
			if tc.join {
				eventually(t, 10*time.Second, "the busy contacts' re-queues stored", func() bool {
					for id, b := range busy {
						if st := contactState(t, first, id); b && (st == nil || st.scheduled() == nil || st.scheduled().PublishedAt == nil) {
							return false
						}
					}
					return true
				})
				if n := caller.byContact(); len(n) != len(list) {
					t.Fatalf("calls before the second dispatcher = %v", n)
				}
			}
			b := runAsync(ctx, newDispatcher(t, srv.Conn(t), s), list)
			for _, ch := range []<-chan runResult{a, b} {
				r := waitRun(t, ch, 15*time.Second)
				if r.err != nil {
					t.Errorf("run: %v", r.err)
				} else if got := r.sum.Line(); got != "6/6 contacts succeeded (100.0%)" {
					t.Errorf("run: %s", got)
				}
			}
			caller.assertNoRepeat(t)
			calls := caller.byContact()
			if len(calls) != len(list) {
				t.Errorf("calls = %v", calls)
			}
			for id, n := range calls {
				want := 1
				if busy[id] {
					want = 2
				}
				if n != want {
					t.Errorf("contact %s called %d times, want %d", id, n, want)
				}
			}
			// 6 first attempts, and 3 re-queues each stored once and fired once.
			if n := natstest.LastSeq(t, conn, events.StreamCalls); n != 6+2*3 {
				t.Errorf("CALLS stored %d messages, want %d", n, 6+2*3)
			}
		})
	}
}
