package bus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/lease"
)

// The development passwords whose bcrypt hashes nats.conf holds.
func role(name string) config.NATS {
	return config.NATS{User: name, Password: name + "-dev-password"}
}

// permissionErrors collects the server's asynchronous permission violations.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err.Error())
}

func (p *permissionErrors) has(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errs {
		if strings.Contains(e, "Permissions Violation") && strings.Contains(e, subject) {
			return true
		}
	}
	return false
}

func TestNATSConfPermissions(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	admin := srv.Connect(t, role("admin"), "admin")
	if err := admin.EnsureStreams(ctx, config.Streams{}); err != nil {
		t.Fatalf("admin provisions streams: %v", err)
	}

	t.Run("anonymous and wrong password are refused, saying as whom", func(t *testing.T) {
		for _, tc := range []struct {
			role  string
			creds config.NATS
			want  string
		}{
			{"", config.NATS{}, "with no user"},
			{config.RoleMedia, config.NATS{}, "as role media with no user configured (set nats.roles.media.user and password)"},
			{config.RoleCaller, config.NATS{User: "caller", Password: "wrong"}, `as role caller (user "caller")`},
		} {
			cfg := tc.creds
			cfg.URL, cfg.ConnectTimeout = srv.URL(), time.Second
			_, err := bus.Connect(ctx, cfg, tc.role, "x", nil)
			if err == nil {
				t.Errorf("connected as %q without the right password", tc.creds.User)
				continue
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "wrong") {
				t.Errorf("error %q, want it to say %q and not the password", err, tc.want)
			}
		}
	})

	t.Run("dispatcher publishes requests and keeps campaign state", func(t *testing.T) {
		d := srv.Connect(t, role("dispatcher"), "dispatcher")
		req := &events.CallRequest{ID: "r1", Time: time.Now(), Source: "d", CallID: "call-1", Campaign: "spring", ContactID: "c1", Phone: "+14155550101", Attempt: 1}
		data, err := events.EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.PublishMsg(ctx, req.Subject(), req.ID, data); err != nil {
			t.Fatalf("dispatcher publish request: %v", err)
		}
		kv, err := d.KeyValue(ctx, "campaigns", 0)
		if err != nil {
			t.Fatalf("dispatcher campaign bucket: %v", err)
		}
		if _, err := kv.Put(ctx, "spring.c1", []byte(`{"status":"queued"}`)); err != nil {
			t.Fatalf("dispatcher kv put: %v", err)
		}
		if _, err := kv.Get(ctx, "spring.c1"); err != nil {
			t.Fatalf("dispatcher kv get: %v", err)
		}
		// Following outcomes: a consumer on agent.call.> in EVENTS.
		if _, err := d.Consumer(ctx, bus.ConsumerSpec{Stream: events.StreamEvents, Durable: "dispatcher-spring", FilterSubjects: []string{events.CallAll}}); err != nil {
			t.Fatalf("dispatcher follows outcomes: %v", err)
		}
	})

	t.Run("caller takes requests and publishes call events", func(t *testing.T) {
		c := srv.Connect(t, role("caller"), "caller")
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		got := make(chan string, 1)
		go func() {
			_ = c.Consume(cctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers"}, func(ctx context.Context, m *bus.Msg) error {
				r, err := events.DecodeRequest(m.Data)
				if err != nil {
					return err
				}
				if err := c.Emit(ctx, &events.Call{CallRef: r.Ref(), Outcome: events.CallCompleted, Attempt: 1}); err != nil {
					return err
				}
				got <- r.CallID
				return nil
			})
		}()
		select {
		case id := <-got:
			if id != "call-1" {
				t.Fatalf("caller got %q", id)
			}
		case <-ctx.Done():
			t.Fatal("caller did not consume the request")
		}
		for _, ev := range []events.Event{
			&events.Attempt{Service: "llm", Attempt: 1, Outcome: events.OutcomeSuccess, CallRef: events.CallRef{CallID: "call-1"}},
			&events.Breaker{Service: "llm", From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen},
		} {
			if err := c.Emit(ctx, ev); err != nil {
				t.Errorf("caller emit %s: %v", ev.Subject(), err)
			}
		}
	})

	t.Run("caller follows peers' attempts and elects probes", func(t *testing.T) {
		c := srv.Connect(t, role("caller"), "caller-3")
		peer := srv.Connect(t, role("caller"), "caller-4")
		sub, err := bus.NATSConn(c).SubscribeSync(events.AttemptAll)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.NATSConn(c).Flush(); err != nil {
			t.Fatal(err)
		}
		if err := peer.Emit(ctx, &events.Attempt{Service: "elevenlabs", Attempt: 1, Outcome: events.OutcomeFailure,
			ErrorCategory: events.CategoryTransient, CallRef: events.CallRef{CallID: "call-1"}}); err != nil {
			t.Fatalf("caller emit attempt: %v", err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("caller did not receive a peer's attempt: %v", err)
		}
		kv, err := c.KeyValue(ctx, "breaker_probes", time.Hour)
		if err != nil {
			t.Fatalf("caller probe bucket: %v", err)
		}
		other, err := peer.KeyValue(ctx, "breaker_probes", time.Hour)
		if err != nil {
			t.Fatalf("peer probe bucket: %v", err)
		}
		const key = "elevenlabs.1767225600000.0.0"
		if _, err := kv.Create(ctx, key, []byte("caller-3")); err != nil {
			t.Fatalf("caller claims a probe slot: %v", err)
		}
		if _, err := other.Create(ctx, key, []byte("caller-4")); !errors.Is(err, jetstream.ErrKeyExists) {
			t.Fatalf("a second claim of the slot: %v, want key exists", err)
		}
		if err := kv.Delete(ctx, key); err != nil {
			t.Fatalf("caller gives the slot back: %v", err)
		}
		if _, err := other.Create(ctx, key, []byte("caller-4")); err != nil {
			t.Fatalf("peer claims the slot given back: %v", err)
		}
	})

	t.Run("only callers use the probe bucket", func(t *testing.T) {
		d := srv.Connect(t, role("dispatcher"), "dispatcher-2")
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := d.KeyValue(pctx, "breaker_probes", time.Hour); err == nil {
			t.Fatal("dispatcher opened the probe bucket")
		}
	})

	t.Run("dispatcher stores a re-queue that fires with no dispatcher", func(t *testing.T) {
		// Callers take agent.dispatch.> only: a schedule on CALLS is not a request.
		if err := bus.JetStream(admin).DeleteConsumer(ctx, events.StreamCalls, "callers"); err != nil {
			t.Fatal(err)
		}
		d := srv.Connect(t, role("dispatcher"), "dispatcher-requeue")
		req := &events.CallRequest{ID: "spring.c2.2", Time: time.Now(), Source: "d", CallID: "spring-c2-2", Campaign: "spring", ContactID: "c2", Phone: "+14155550102", Attempt: 2}
		data, err := events.EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: events.RequeueSubject("spring", "c2"), Data: data}
		if _, err := bus.JetStream(d).PublishMsg(ctx, msg, jetstream.WithMsgID(req.ID),
			jetstream.WithScheduleAt(time.Now().Add(time.Second)), jetstream.WithScheduleTarget(req.Subject())); err != nil {
			t.Fatalf("dispatcher stores a re-queue: %v", err)
		}
		d.Close()

		c := srv.Connect(t, role("caller"), "caller-requeue")
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := c.PublishMsg(pctx, events.DispatchSubject("spring"), "forged", data); err == nil {
			t.Error("caller published a call request")
		}
		// A caller parks a paused campaign's request as a schedule on its
		// contact's re-queue subject.
		park := &nats.Msg{Subject: events.RequeueSubject("spring", "c3"), Data: data}
		kctx, kcancel := context.WithTimeout(ctx, 5*time.Second)
		defer kcancel()
		if _, err := bus.JetStream(c).PublishMsg(kctx, park, jetstream.WithMsgID("spring.c3.1.park.7"),
			jetstream.WithScheduleAt(time.Now().Add(time.Hour)), jetstream.WithScheduleTarget(req.Subject())); err != nil {
			t.Errorf("caller parks a request: %v", err)
		}
		if s, err := bus.JetStream(admin).Stream(ctx, events.StreamCalls); err != nil {
			t.Fatal(err)
		} else if err := s.Purge(ctx, jetstream.WithPurgeSubject(park.Subject)); err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		got := make(chan string, 1)
		go func() {
			_ = c.Consume(cctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers", FilterSubjects: []string{events.DispatchAll}}, func(ctx context.Context, m *bus.Msg) error {
				r, err := events.DecodeRequest(m.Data)
				if err != nil {
					return err
				}
				got <- m.Subject + " " + r.CallID
				return nil
			})
		}()
		select {
		case g := <-got:
			if g != "agent.dispatch.spring spring-c2-2" {
				t.Fatalf("caller got %q", g)
			}
		case <-ctx.Done():
			t.Fatal("the stored re-queue never reached the caller")
		}
	})

	t.Run("only the dispatcher purges a contact's re-queue", func(t *testing.T) {
		subject := events.RequeueSubject("spring", "c2")
		for _, name := range []string{"caller", "observer", "tail"} {
			_, js := natstest.Raw(t, srv.URL(), name, name+"-dev-password")
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			s, err := js.Stream(pctx, events.StreamCalls)
			if err == nil {
				err = s.Purge(pctx, jetstream.WithPurgeSubject(subject))
			}
			pcancel()
			if err == nil {
				t.Errorf("%s purged CALLS", name)
			}
		}
		_, js := natstest.Raw(t, srv.URL(), "dispatcher", "dispatcher-dev-password")
		s, err := js.Stream(ctx, events.StreamCalls)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			t.Errorf("dispatcher purges a re-queue: %v", err)
		}
	})

	t.Run("dispatcher controls campaigns and the do-not-call list; callers only read them", func(t *testing.T) {
		d := srv.Connect(t, role("dispatcher"), "dispatcher-control")
		c := srv.Connect(t, role("caller"), "caller-control")
		for _, b := range []string{"campaign_control", "dnc"} {
			kv, err := d.KeyValue(ctx, b, 0)
			if err != nil {
				t.Fatalf("dispatcher bucket %s: %v", b, err)
			}
			if _, err := kv.Put(ctx, "spring", []byte(`{"state":"paused"}`)); err != nil {
				t.Fatalf("dispatcher put %s: %v", b, err)
			}
			// Watching a campaign's record, listing the list.
			w, err := kv.Watch(ctx, "spring")
			if err != nil {
				t.Fatalf("dispatcher watch %s: %v", b, err)
			}
			if e := <-w.Updates(); e == nil || string(e.Value()) != `{"state":"paused"}` {
				t.Fatalf("dispatcher watch %s: got %v", b, e)
			}
			_ = w.Stop()
			ckv, err := c.KeyValue(ctx, b, 0)
			if err != nil {
				t.Fatalf("caller opens %s: %v", b, err)
			}
			if e, err := ckv.Get(ctx, "spring"); err != nil || string(e.Value()) != `{"state":"paused"}` {
				t.Fatalf("caller reads %s: %v", b, err)
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			if _, err := ckv.Put(pctx, "spring", []byte(`{"state":"running"}`)); err == nil {
				t.Errorf("caller wrote %s", b)
			}
			if err := ckv.Delete(pctx, "spring"); err == nil {
				t.Errorf("caller deleted from %s", b)
			}
			pcancel()
			if e, err := kv.Get(ctx, "spring"); err != nil || string(e.Value()) != `{"state":"paused"}` {
				t.Fatalf("%s changed by the caller: %v %v", b, e, err)
			}
		}
		// Callers pace each other in campaign_pacing; the dispatcher has no use for it.
		pace, err := c.KeyValue(ctx, "campaign_pacing", 15*time.Minute)
		if err != nil {
			t.Fatalf("caller pacing bucket: %v", err)
		}
		if _, err := pace.Create(ctx, "spring.slot.0", []byte("call-1")); err != nil {
			t.Fatalf("caller claims a call slot: %v", err)
		}
		if err := pace.Delete(ctx, "spring.slot.0"); err != nil {
			t.Fatalf("caller frees a call slot: %v", err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := d.KeyValue(pctx, "campaign_pacing", 15*time.Minute); err == nil {
			t.Error("dispatcher opened the pacing bucket")
		}
		// The tail role sees neither.
		tl := srv.Connect(t, role("tail"), "tail-control")
		if _, err := bus.JetStream(tl).KeyValue(pctx, "dnc"); err == nil {
			t.Error("tail opened the do-not-call list")
		}
	})

	t.Run("caller cannot publish alerts", func(t *testing.T) {
		perr := &permissionErrors{}
		c := srv.Connect(t, role("caller"), "caller-2")
		bus.NATSConn(c).SetErrorHandler(perr.handler)
		before := streamInfo(t, admin, events.StreamAlerts).State.Msgs
		// A forbidden publish gets no answer: the server drops it and reports
		// a permission violation asynchronously.
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		err := c.Emit(pctx, &events.Alert{Fingerprint: "f", Rule: "r", Severity: events.SeverityCritical, Status: events.AlertFiring, Summary: "forged", StartsAt: time.Now()})
		if err == nil {
			t.Fatal("caller published an alert")
		}
		waitFor(t, "permission violation reported", func() bool {
			return errors.Is(err, nats.ErrPermissionViolation) || perr.has("agent.alert.critical")
		})
		if after := streamInfo(t, admin, events.StreamAlerts).State.Msgs; after != before {
			t.Fatalf("ALERTS grew from %d to %d messages after a forbidden publish", before, after)
		}
	})

	t.Run("observer consumes events and publishes alerts", func(t *testing.T) {
		o := srv.Connect(t, role("observer"), "observer")
		if _, err := o.Consumer(ctx, bus.ConsumerSpec{Stream: events.StreamEvents, Durable: "observer"}); err != nil {
			t.Fatalf("observer consumer: %v", err)
		}
		if err := o.Emit(ctx, &events.Alert{Fingerprint: "f", Rule: "r", Severity: events.SeverityWarning, Status: events.AlertFiring, Summary: "ok", StartsAt: time.Now()}); err != nil {
			t.Fatalf("observer alert: %v", err)
		}
		if err := o.Emit(ctx, &events.Status{Service: "llm", To: events.StatusUp}); err != nil {
			t.Fatalf("observer status: %v", err)
		}
		for _, b := range []string{"service_status", "alert_state"} {
			kv, err := o.KeyValue(ctx, b, 0)
			if err != nil {
				t.Fatalf("observer bucket %s: %v", b, err)
			}
			if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
				t.Fatalf("observer put %s: %v", b, err)
			}
		}
		// The lease: opened or created with per-key TTLs, taken with a TTL,
		// watched, renewed by a compare-and-set with a TTL, released.
		var leaseCfg jetstream.KeyValueConfig
		for _, b := range bus.Buckets("campaigns") {
			if b.Name == lease.Bucket {
				leaseCfg = b.KeyValueConfig()
			}
		}
		kv, err := o.OpenOrCreateKeyValue(ctx, leaseCfg)
		if err != nil {
			t.Fatalf("observer lease bucket: %v", err)
		}
		rev, err := kv.Create(ctx, "observer", []byte("me"), jetstream.KeyTTL(5*time.Second))
		if err != nil {
			t.Fatalf("observer takes the lease: %v", err)
		}
		w, err := kv.Watch(ctx, "observer")
		if err != nil {
			t.Fatalf("observer watches the lease: %v", err)
		}
		if e := <-w.Updates(); e == nil || string(e.Value()) != "me" {
			t.Fatalf("lease watch: %v", e)
		}
		_ = w.Stop()
		ack, err := o.PublishMsg(ctx, "$KV."+lease.Bucket+".observer", "", []byte("me"),
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(5*time.Second))
		if err != nil {
			t.Fatalf("observer renews the lease: %v", err)
		}
		if err := kv.Delete(ctx, "observer", jetstream.LastRevision(ack.Sequence)); err != nil {
			t.Fatalf("observer releases the lease: %v", err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := bus.JetStream(srv.Connect(t, role("caller"), "caller-lease")).KeyValue(pctx, lease.Bucket); err == nil {
			t.Error("the caller role opened the observers' lease bucket")
		}
		if err := o.Emit(pctx, &events.Call{CallRef: events.CallRef{CallID: "x"}, Outcome: events.CallCompleted}); err == nil {
			t.Fatal("observer published a call outcome")
		}
	})

	t.Run("tail subscribes to everything and publishes nothing", func(t *testing.T) {
		perr := &permissionErrors{}
		tail := srv.Connect(t, role("tail"), "tail")
		bus.NATSConn(tail).SetErrorHandler(perr.handler)
		sub, err := bus.NATSConn(tail).SubscribeSync(events.AllSubjects)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.NATSConn(tail).Flush(); err != nil {
			t.Fatal(err)
		}
		if err := admin.Emit(ctx, &events.Health{Service: "crm", Outcome: events.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("tail did not see the event: %v", err)
		}
		// Call requests hold full phone numbers: tail must not see them.
		req := &events.CallRequest{ID: "r-tail", Time: time.Now(), Source: "d", CallID: "call-tail", Campaign: "spring", ContactID: "c9", Phone: "+14155550199", Attempt: 1}
		data, err := events.EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.PublishMsg(ctx, req.Subject(), req.ID, data); err != nil {
			t.Fatal(err)
		}
		if _, err := bus.JetStream(admin).PublishMsg(ctx, &nats.Msg{Subject: events.RequeueSubject("spring", "c9"), Data: data},
			jetstream.WithScheduleAt(time.Now().Add(time.Hour)), jetstream.WithScheduleTarget(req.Subject())); err != nil {
			t.Fatal(err)
		}
		if err := admin.Emit(ctx, &events.Health{Service: "llm", Outcome: events.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("tail did not see the event after the request: %v", err)
		}
		if m.Subject != events.HealthSubject("llm") {
			t.Fatalf("tail received %s; call requests must not reach it", m.Subject)
		}

		before := streamInfo(t, admin, events.StreamEvents).State.Msgs
		for _, subj := range []string{"agent.call.completed", "agent.dispatch.spring", "$JS.API.STREAM.DELETE.EVENTS", "anything"} {
			if err := bus.NATSConn(tail).Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		_ = bus.NATSConn(tail).Flush()
		waitFor(t, "permission violation reported", func() bool { return perr.has("agent.call.completed") })
		if after := streamInfo(t, admin, events.StreamEvents).State.Msgs; after != before {
			t.Fatalf("EVENTS changed from %d to %d after tail publishes", before, after)
		}
		if _, err := bus.JetStream(admin).Stream(ctx, events.StreamEvents); err != nil {
			t.Fatalf("EVENTS gone after tail's delete attempt: %v", err)
		}
		if _, err := bus.NATSConn(tail).SubscribeSync("_INBOX.>"); err == nil {
			_ = bus.NATSConn(tail).Flush()
			waitFor(t, "subscribe violation", func() bool { return perr.has("_INBOX") })
		}
	})
}
