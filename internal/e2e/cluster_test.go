//go:build linux && cluster

// The cluster tests run three real nats-server processes: `make
// test-cluster` (which `make test` runs) gives the cluster tag.

package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/loadtest"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/rules"
	"github.com/callagent/agent/internal/stack"
)

// The nodes are the go tool dependency's nats-server, built once with the
// rest by TestMain.
func init() { builds = append(builds, stack.NATSServer) }

// replicated is every stream and bucket the product provisions, each of
// which must be on all three nodes.
var replicated = []string{
	events.StreamCalls, events.StreamEvents, events.StreamAlerts,
	"KV_campaigns", "KV_calls", "KV_breaker_probes", "KV_service_status", "KV_alert_state",
	"OBJ_" + bus.AudioBucket,
}

// newClusterEnv is newEnv on a 3-node cluster of real nats-server
// processes with nats-auth.conf's users, everything provisioned at R3
// through nats.streams.*.replicas and nats.buckets.replicas.
func newClusterEnv(t *testing.T, scenario string) (*env, *stack.Cluster) {
	t.Helper()
	sim := startSimulator(t, scenario)
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	auth := natstest.RepoFile("nats-auth.conf")
	cl, err := stack.StartCluster(sctx, stack.ClusterOptions{
		Server: filepath.Join(binDir, stack.NATSServer), AuthFile: auth, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cl.Nodes() {
				// Without the retries of the route to a killed node.
				var lines []string
				for line := range strings.Lines(cl.Proc(n.Name).Log()) {
					if !strings.Contains(line, "Error trying to connect to route") {
						lines = append(lines, strings.TrimRight(line, "\n"))
					}
				}
				t.Logf("--- %s log, last lines:\n%s", n.Name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
		cl.Stop()
	})
	// An external server for the env: the cluster's URL list, with the
	// users of the file the nodes include.
	srv, err := stack.StartNATS(stack.NATSOptions{URL: cl.URL(), ConfigFile: auth})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := srv.Connect(sctx, config.RoleAdmin, "e2e-admin", natstest.Logger(t))
	if err != nil {
		t.Fatalf("connect as admin: %v", err)
	}
	t.Cleanup(admin.Close)
	cfg := config.Default()
	for _, s := range []*config.Stream{&cfg.NATS.Streams.Calls, &cfg.NATS.Streams.Events, &cfg.NATS.Streams.Alerts} {
		s.Replicas = 3
	}
	cfg.NATS.Buckets.Replicas = 3
	if _, err := admin.Provision(sctx, cfg); err != nil {
		t.Fatalf("provision: %v", err)
	}
	dir := t.TempDir()
	e := &env{t: t, nats: srv, admin: admin, sim: sim, dir: dir, procs: &stack.Stack{Bin: binDir, Dir: dir}}
	t.Cleanup(e.stopAll)
	return e, cl
}

// clusterSettings are the env's settings at R3.
func (e *env) clusterSettings() settings {
	s := e.settings()
	for _, name := range []string{"calls", "events", "alerts"} {
		s.set("nats.streams."+name+".replicas", 3)
	}
	s.set("nats.buckets.replicas", 3)
	return s
}

// TestClusterNodeLoss runs a 300-contact campaign with three callers, the
// dispatcher and an observer delivering alerts to a webhook on a 3-node
// cluster, and kills with SIGKILL the node leading CALLS mid-run, then (once
// it is back and caught up) the node leading EVENTS. Every contact ends
// exactly once, nobody is rung twice, every alert the events call for is on
// ALERTS once and reaches the webhook once; the stall each kill caused (the
// longest time with no call ending) is logged.
func TestClusterNodeLoss(t *testing.T) {
	const contacts = 300
	// A permanent telephony refusal (a bad number) for one contact early on
	// and one late: each fails its contact and raises alerts, across the
	// kills. 100 ms a request keeps the campaign going for both kills.
	e, cl := newClusterEnv(t, fmt.Sprintf(`
name: node-loss
latency: 100ms
services:
  telephony:
    faults:
      - {kind: status, status: 400, match: %q}
      - {kind: status, status: 400, match: %q}
`, phone(15)[2:], phone(240)[2:]))
	ctx := context.Background()
	for _, name := range replicated {
		s, err := e.admin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}

	s := e.clusterSettings()
	s.set("caller.ack_wait", "5s")
	s.set("sinks", []any{map[string]any{
		"name": "webhook", "plugin": "webhook", "kind": "alert", "min_severity": "info",
		"batch_size": 10, "batch_wait": "100ms", "backoff": "200ms", "max_backoff": "1s", "timeout": "5s",
		"config": map[string]any{"url": e.sim.URL() + "/webhook/alerts"},
	}})
	cfg := e.write("agent", s)
	e.startObserver(cfg, "observer")
	e.waitConsumer(events.StreamAlerts, "sink-webhook")
	for _, n := range []string{"caller-a", "caller-b", "caller-c"} {
		e.startCaller(cfg, n)
	}
	done := e.outcomes()
	file, ids := e.contactsFile(contacts)
	started := time.Now()
	// A longer timeout than runDispatcher's: each loss stalls the fleet
	// for the election of new leaders and the redeliveries after it.
	d := e.start("dispatcher", "dispatcher", "run", "--config", cfg, "--contacts", file,
		"--campaign", "nodeloss", "--output", "json", "--progress", "lines", "--timeout", "200s")

	var kills []time.Time
	killLeader := func(stream string, after int) string {
		t.Helper()
		waitFor(t, 90*time.Second, fmt.Sprintf("%d outcomes", after), func() bool { return done.count() >= after })
		leader, err := stack.Leader(ctx, e.admin, stream, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		kctx, cancel := timeout(10 * time.Second)
		defer cancel()
		kills = append(kills, time.Now())
		if err := cl.Kill(kctx, leader); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: kill -9 %s (pid %d), the leader of %s, after %d outcomes", time.Since(started).Round(time.Millisecond),
			leader, cl.Proc(leader).Pid(), stream, done.count())
		return leader
	}

	first := killLeader(events.StreamCalls, contacts/5)
	// Back and caught up before the next loss: two nodes down of three
	// would leave no quorum.
	waitFor(t, 120*time.Second, "progress after the first kill", func() bool { return done.count() >= contacts/5+30 })
	rctx, rcancel := timeout(60 * time.Second)
	defer rcancel()
	if err := cl.Restart(rctx, first); err != nil {
		t.Fatal(err)
	}
	if err := stack.Current(rctx, e.admin, 60*time.Second, replicated...); err != nil {
		t.Fatal(err)
	}
	for stream, durables := range map[string][]string{
		events.StreamCalls: {"callers"}, events.StreamEvents: {"observer"}, events.StreamAlerts: {"sink-webhook"},
	} {
		if err := stack.ConsumersCurrent(rctx, e.admin, 60*time.Second, stream, durables...); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: %s restarted and current in every stream and bucket", time.Since(started).Round(time.Millisecond), first)
	if done.count() >= contacts-20 {
		t.Fatalf("%d outcomes of %d before the second kill: the campaign went too fast to test it", done.count(), contacts)
	}
	killLeader(events.StreamEvents, done.count()+10)

	sum := e.summary(d, 210*time.Second)
	byStatus := e.checkCampaign(sum, ids)
	t.Logf("campaign: %s; %v in %s", sumLine(sum), byStatus, time.Since(started).Round(time.Millisecond))
	// A call caught in a loss may still fail (its call timeout ran out
	// while the bus was away): it ends once, like any other.
	for _, c := range sum.Contacts {
		refused := c.ContactID == "c15" || c.ContactID == "c240"
		if refused && c.Status != "failed" {
			t.Errorf("contact %s, refused by the provider, is %s", c.ContactID, c.Status)
		}
		if !refused && c.Status != "completed" {
			t.Logf("contact %s: %s (%+v)", c.ContactID, c.Status, c.History)
		}
		rings := 0
		for _, a := range c.History {
			rings += e.sim.SideEffects(config.ServiceTelephony, a.CallID)
		}
		if rings > 1 {
			t.Errorf("contact %s rung %d times over %d attempts", c.ContactID, rings, len(c.History))
		}
	}

	stored := e.terminalTimes()
	for i, s := range loadtest.Stalls(stored, kills, 15*time.Second) {
		t.Logf("kill %d: stall %s (the longest time with no call ending, from the last before the kill to 15s after or the next kill)",
			i+1, s.Round(time.Millisecond))
	}
	e.checkAlerts()
}

// phone is the phone number contactsFile gives contact i (1-based).
func phone(i int) string { return fmt.Sprintf("+1415555%04d", 100+i-1) }

// terminalTimes is when EVENTS stored each terminal call event, in order.
func (e *env) terminalTimes() []time.Time {
	e.t.Helper()
	ctx, cancel := timeout(30 * time.Second)
	defer cancel()
	admin := e.nats.Roles()[config.RoleAdmin]
	_, js := natstest.Raw(e.t, e.nats.URL(), admin.User, admin.Password)
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: terminalSubjects})
	if err != nil {
		e.t.Fatal(err)
	}
	want := int(cons.CachedInfo().NumPending)
	var out []time.Time
	for len(out) < want {
		batch, err := cons.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				out = append(out, md.Timestamp)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatal(err)
		}
		if n == 0 {
			e.t.Fatalf("read %d of %d terminal events, then nothing", len(out), want)
		}
	}
	return out
}

// checkAlerts replays EVENTS, in the order the observer read it, through
// the observer's rules: every alert they derive is on ALERTS exactly once
// and nothing else is, each has one delivery receipt, and the webhook
// received each exactly once.
func (e *env) checkAlerts() {
	t := e.t
	t.Helper()
	engine := rules.New(config.Rules{GroupWait: 0})
	expected := map[string]*events.Alert{}
	for _, m := range e.read(events.StreamEvents, events.AllSubjects) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			continue
		}
		for _, out := range engine.Apply(ev) {
			if out.Alert != nil {
				expected[out.Alert.ID] = out.Alert
			}
		}
	}
	if len(expected) == 0 {
		t.Fatal("the events call for no alert: the test checks nothing")
	}
	waitFor(t, 60*time.Second, fmt.Sprintf("%d delivery receipts", len(expected)), func() bool {
		return len(e.deliveries()) >= len(expected)
	})
	waitFor(t, 20*time.Second, "the webhook sink settled", func() bool { return e.settled(events.StreamAlerts, "sink-webhook") })
	onStream := map[string]int{}
	for _, m := range e.read(events.StreamAlerts, events.AlertAll) {
		a, err := events.DecodeAs[*events.Alert](m.Data)
		if err != nil {
			t.Fatalf("undecodable alert at %d: %v", m.Seq, err)
		}
		onStream[a.ID]++
		if expected[a.ID] == nil {
			t.Errorf("unexpected alert %s %s %s %s", a.Rule, a.Service, a.Status, a.ID)
		}
	}
	received := e.webhookAlerts()
	var names []string
	for id, a := range expected {
		names = append(names, a.Rule+"/"+a.Service+"/"+a.Status)
		if onStream[id] != 1 {
			t.Errorf("alert %s %s %s is %d times on ALERTS, want once", a.Rule, a.Service, a.Status, onStream[id])
		}
		if received[id] != 1 {
			t.Errorf("alert %s %s %s reached the webhook %d times, want once", a.Rule, a.Service, a.Status, received[id])
		}
	}
	for ref, d := range e.deliveries() {
		if len(d) != 1 || d[0].Outcome != events.DeliveryDelivered || expected[ref] == nil {
			t.Errorf("deliveries of %s: %+v, want one receipt of an expected alert", ref, d)
		}
	}
	sort.Strings(names)
	t.Logf("%d alerts, each once on ALERTS and at the webhook: %s", len(expected), strings.Join(names, " "))
}
