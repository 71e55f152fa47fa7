package bus_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/control"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/dnc"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer"
	"github.com/callagent/agent/internal/observer/lease"
	"github.com/callagent/agent/internal/observer/silence"
	"github.com/callagent/agent/internal/resilience"
)

func actions(ps []bus.Provisioned) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s %s %s\n", p.Kind, p.Name, p.Action)
	}
	return b.String()
}

func TestProvision(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := config.Default()
	admin := srv.Connect(t, role("admin"), "admin")

	// Before provisioning, the agent's roles may not create streams: without
	// provision a fresh server cannot run the product.
	d := srv.Connect(t, role("dispatcher"), "dispatcher")
	// (A forbidden request gets no answer, hence the short deadline.)
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	if _, err := bus.JetStream(d).CreateStream(cctx, bus.StreamConfigs(cfg.NATS.Streams)[0]); err == nil {
		t.Fatal("the dispatcher role created a stream")
	}
	err := d.WaitStreams(ctx, 300*time.Millisecond, events.StreamCalls)
	if err == nil || !strings.Contains(err.Error(), "dispatcher provision") {
		t.Fatalf("waiting for a missing stream: %v, want an error naming `dispatcher provision`", err)
	}

	all := func(a bus.Action) string {
		return "stream CALLS " + string(a) + "\nstream EVENTS " + string(a) + "\nstream ALERTS " + string(a) +
			"\nbucket campaigns " + string(a) + "\nbucket calls " + string(a) + "\nbucket breaker_probes " + string(a) +
			"\nbucket service_status " + string(a) + "\nbucket alert_state " + string(a) + "\nbucket observer_lease " + string(a) +
			"\nbucket silences " + string(a) +
			"\nbucket campaign_control " + string(a) + "\nbucket dnc " + string(a) + "\nbucket campaign_pacing " + string(a) +
			"\nobject call_audio " + string(a) + "\n"
	}
	got, err := admin.Provision(ctx, cfg)
	if err != nil {
		t.Fatalf("first provision: %v", err)
	}
	if s := actions(got); s != all(bus.Created) {
		t.Fatalf("first provision:\n%swant\n%s", s, all(bus.Created))
	}
	got, err = admin.Provision(ctx, cfg)
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if s := actions(got); s != all(bus.Unchanged) {
		t.Fatalf("second provision:\n%swant\n%s", s, all(bus.Unchanged))
	}
	kv, err := bus.JetStream(admin).KeyValue(ctx, caller.ProgressBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bus.Buckets(cfg.Dispatcher.StateBucket) {
		if b.Name == resilience.ProbeBucket && b.TTL != resilience.ProbeBucketTTL {
			t.Errorf("provisioned %s TTL %v, the fleet opens it with %v", b.Name, b.TTL, resilience.ProbeBucketTTL)
		}
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != 7*24*time.Hour {
		t.Fatalf("calls bucket TTL: %v, %v", st, err)
	}

	// A CALLS stream provisioned before re-queues were stored in it (no
	// message schedules) is updated to allow them.
	old := bus.StreamConfigs(cfg.NATS.Streams)[0]
	old.AllowMsgSchedules, old.AllowRollup = false, false
	if err := bus.JetStream(admin).DeleteStream(ctx, events.StreamCalls); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.JetStream(admin).CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	got, err = admin.Provision(ctx, cfg)
	if err != nil {
		t.Fatalf("provision of an old CALLS: %v", err)
	}
	if want := strings.Replace(all(bus.Unchanged), "stream CALLS unchanged", "stream CALLS updated", 1); actions(got) != want {
		t.Fatalf("provision of an old CALLS:\n%swant\n%s", actions(got), want)
	}
	if c := streamInfo(t, admin, events.StreamCalls).Config; !c.AllowMsgSchedules || !c.AllowRollup {
		t.Fatalf("CALLS after provision: schedules %v, roll-ups %v", c.AllowMsgSchedules, c.AllowRollup)
	}

	// A changed configuration updates that object only.
	changed := cfg
	changed.NATS.Streams.Events.MaxAge = 48 * time.Hour
	got, err = admin.Provision(ctx, changed)
	if err != nil {
		t.Fatalf("provision after a change: %v", err)
	}
	want := strings.Replace(all(bus.Unchanged), "stream EVENTS unchanged", "stream EVENTS updated", 1)
	if s := actions(got); s != want {
		t.Fatalf("provision after a change:\n%swant\n%s", s, want)
	}
	if age := streamInfo(t, admin, events.StreamEvents).Config.MaxAge; age != 48*time.Hour {
		t.Fatalf("EVENTS max age %s after update", age)
	}

	// Each role uses what was provisioned: the stream it needs is found at
	// once, and its bucket opens (opened, not created) for reads and writes.
	for _, tc := range []struct {
		role    string
		streams []string
		buckets []string
	}{
		{config.RoleDispatcher, []string{events.StreamCalls, events.StreamEvents}, []string{dispatcher.DefaultStateBucket, control.Bucket, dnc.Bucket}},
		{config.RoleCaller, []string{events.StreamCalls, events.StreamEvents}, []string{caller.ProgressBucket, resilience.ProbeBucket, control.PacingBucket}},
		{config.RoleObserver, []string{events.StreamEvents, events.StreamAlerts}, []string{observer.StatusBucket, observer.StateBucket, lease.Bucket}},
		{config.RoleOperator, nil, []string{silence.Bucket}},
	} {
		t.Run(tc.role, func(t *testing.T) {
			c := srv.Connect(t, role(tc.role), tc.role)
			if err := c.WaitStreams(ctx, time.Second, tc.streams...); err != nil {
				t.Fatalf("streams: %v", err)
			}
			for _, b := range tc.buckets {
				if !slices.ContainsFunc(bus.Buckets(cfg.Dispatcher.StateBucket), func(x bus.Bucket) bool { return x.Name == b }) {
					t.Errorf("bucket %s is not in bus.Buckets", b)
				}
				kv, err := bus.JetStream(c).KeyValue(ctx, b)
				if err != nil {
					t.Fatalf("open %s: %v", b, err)
				}
				if _, err := kv.Put(ctx, "k1", []byte("v")); err != nil {
					t.Fatalf("put %s: %v", b, err)
				}
				if e, err := kv.Get(ctx, "k1"); err != nil || string(e.Value()) != "v" {
					t.Fatalf("get %s: %v", b, err)
				}
			}
		})
	}
	// The processes' own open-or-create finds the provisioned buckets.
	c := srv.Connect(t, role("caller"), "caller-kv")
	if _, err := c.KeyValue(ctx, caller.ProgressBucket, 7*24*time.Hour); err != nil {
		t.Fatalf("caller KeyValue: %v", err)
	}
	// The caller's open-or-update of call_audio finds it as provisioned and
	// stores audio in it; the media role reads it.
	audio, err := media.Create(ctx, c, cfg.Media.AudioMaxAge)
	if err != nil {
		t.Fatalf("caller opens the provisioned audio bucket: %v", err)
	}
	if err := audio.Put(ctx, "call-1", []byte("mp3")); err != nil {
		t.Fatalf("caller stores audio: %v", err)
	}
	m := srv.Connect(t, role("media"), "media")
	if a, err := media.Open(m).Get(ctx, "call-1"); err != nil || string(a.Data) != "mp3" {
		t.Fatalf("media reads audio: %q, %v", a.Data, err)
	}
	got, err = admin.Provision(ctx, changed)
	if err != nil {
		t.Fatalf("provision after the processes: %v", err)
	}
	if s := actions(got); s != all(bus.Unchanged) {
		t.Fatalf("provision after the processes opened everything:\n%swant\n%s", s, all(bus.Unchanged))
	}
	if _, err := bus.JetStream(admin).KeyValue(ctx, "nothing_else"); err != jetstream.ErrBucketNotFound {
		t.Fatalf("unexpected bucket: %v", err)
	}
}
