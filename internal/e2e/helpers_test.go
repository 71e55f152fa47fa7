//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/dispatcher"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/simulator"
	"github.com/callagent/agent/internal/stack"
)

// binDir holds the binaries under test, built once by TestMain. It is set
// before any test runs and never changed after.
var binDir string

// The binaries TestMain builds, as stack.Build targets: plugins land in
// binDir/plugins.
var builds = []string{"caller", "dispatcher", "media", "observer", "plugins/webhook"}

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	bins := &stack.Binaries{Root: filepath.Dir(natstest.RepoFile("go.mod")), Targets: builds}
	defer bins.Close()
	var err error
	if binDir, err = bins.Build(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// Roles whose passwords nats.conf's hashes are made from.
var roles = []string{"admin", "dispatcher", "caller", "media", "observer", "operator"}

// env is one test's world: a JetStream server with nats.conf's users, the
// streams provisioned by the admin role, a simulator, and the processes the
// test starts (all killed when it ends).
type env struct {
	t     *testing.T
	nats  *stack.NATS
	admin *bus.Conn
	sim   *simulator.Server
	dir   string
	procs *stack.Stack
}

// startSimulator plays scenario on free ports until the test ends.
func startSimulator(t *testing.T, scenario string) *simulator.Server {
	t.Helper()
	sc, err := simulator.ParseScenario([]byte(scenario))
	if err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(sc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = sim.Close() })
	if err := sim.Start(ctx, "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return sim
}

func newEnv(t *testing.T, scenario string) *env {
	t.Helper()
	sim := startSimulator(t, scenario)
	srv, err := stack.StartNATS(stack.NATSOptions{ConfigFile: natstest.RepoFile("nats.conf"), StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(srv.Close)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	admin, err := srv.Connect(sctx, config.RoleAdmin, "e2e-admin", natstest.Logger(t))
	if err != nil {
		t.Fatalf("connect as admin: %v", err)
	}
	t.Cleanup(admin.Close)
	if err := admin.EnsureStreams(sctx, config.Streams{}); err != nil {
		t.Fatalf("provision streams: %v", err)
	}
	dir := t.TempDir()
	e := &env{t: t, nats: srv, admin: admin, sim: sim, dir: dir, procs: &stack.Stack{Bin: binDir, Dir: dir}}
	// Registered after the server's cleanup, so it runs before it: the
	// processes die while NATS is still up, and their logs are shown when
	// the test failed.
	t.Cleanup(e.stopAll)
	return e
}

// settings is a configuration tree, written as JSON (which YAML reads).
type settings map[string]any

// set sets the value at a dotted path, creating the sections on the way.
func (s settings) set(path string, v any) {
	keys := strings.Split(path, ".")
	m := map[string]any(s)
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

// settings returns the configuration every process of the test shares:
// the test's NATS with each role's password, the simulator's services with
// delays in the hundreds of milliseconds, no health probes (tests that want
// them turn them on), calls allowed around the clock.
func (e *env) settings() settings {
	s := settings{}
	s.set("nats.url", e.nats.URL())
	s.set("nats.connect_timeout", "10s")
	for _, role := range roles {
		s.set("nats.roles."+role+".password", stack.DevPassword(role))
	}
	for _, name := range config.Services {
		p := "services." + name + "."
		s.set(p+"base_url", e.sim.URL()+"/"+name)
		s.set(p+"api_key", "e2e-key-"+name)
		s.set(p+"timeout", "2s")
		s.set(p+"retry.max_retries", 3)
		s.set(p+"retry.initial_delay", "100ms")
		s.set(p+"retry.multiplier", 2)
		s.set(p+"retry.max_delay", "1s")
		s.set(p+"retry.jitter", 0)
		s.set(p+"retry.budget", 0)
		s.set(p+"breaker.failure_threshold", 5)
		s.set(p+"breaker.recovery_timeout", "2s")
		s.set(p+"breaker.failure_rate", 0)
		s.set(p+"health.enabled", false)
	}
	s.set("services.telephony.options", map[string]any{
		"account_sid": "AC00000000000000000000000000000000",
		"from_number": "+15005550006",
		"twiml_url":   e.sim.URL() + "/telephony/twiml",
	})
	s.set("caller.concurrency", 2)
	s.set("caller.ack_wait", "3s")
	s.set("caller.shutdown_grace", "1s")
	s.set("caller.call_timeout", "1m")
	s.set("dispatcher.calling_window", "00:00-24:00")
	s.set("observer.http.addr", "127.0.0.1:0")
	s.set("observer.plugin_dir", filepath.Join(binDir, "plugins"))
	s.set("observer.rules.group_wait", "0s")
	s.set("log.level", "info")
	return s
}

// write stores the configuration in the test's directory and returns its path.
func (e *env) write(name string, s settings) string {
	e.t.Helper()
	path, err := e.procs.WriteConfig(name+".yaml", s)
	if err != nil {
		e.t.Fatal(err)
	}
	return path
}

// proc is one running binary, in a process group of its own so that what it
// starts (sink plugins) is found and killed with it; its log (standard
// error) in <test dir>/<name>.log, its standard output apart.
type proc struct {
	*stack.Proc
	stdout bytes.Buffer // read once the process has exited
}

// start starts binary bin (one of builds) as name.
func (e *env) start(name, bin string, args ...string) *proc {
	e.t.Helper()
	p := &proc{}
	var err error
	// Killed with the test binary should that die (a -timeout panic) before
	// its cleanups run: SIGKILL, the default.
	if p.Proc, err = e.procs.Spawn(stack.Spec{Name: name, Path: bin, Args: args, Stdout: &p.stdout}); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	return p
}

func (e *env) startCaller(config, name string) *proc {
	e.t.Helper()
	p := e.start(name, "caller", "--config", config, "--name", name)
	p.waitLog(e.t, "caller started", 20*time.Second)
	return p
}

func (e *env) startObserver(config, name string) *proc {
	e.t.Helper()
	p := e.start(name, "observer", "run", "--config", config)
	p.waitLog(e.t, "observer started", 20*time.Second)
	return p
}

// waitLog waits until the process has logged text.
func (p *proc) waitLog(t *testing.T, text string, within time.Duration) {
	t.Helper()
	if _, err := p.WaitLog(context.Background(), regexp.QuoteMeta(text), within); err != nil {
		t.Fatalf("%v:\n%s", err, p.Tail(40))
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	ctx, cancel := timeout(within)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("%s still running after %s:\n%s", p.Name, within, p.Tail(40))
	}
	return p.ExitCode()
}

// kill9 kills the process (not its group: what it started is orphaned, as
// with a real crash) and checks that it is gone.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	ctx, cancel := timeout(10 * time.Second)
	defer cancel()
	if err := p.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s (pid %d) killed with SIGKILL: %v; kill(pid, 0) = ESRCH", p.Name, p.Pid(), p.State())
}

// stopAll kills every process group the test started and, if the test
// failed, shows the end of each process's output.
func (e *env) stopAll() {
	// The groups, not only the leaders: orphaned plugins die with them.
	if err := e.procs.Kill(10 * time.Second); err != nil {
		e.t.Error(err)
	}
	if e.t.Failed() || os.Getenv("E2E_LOGS") != "" {
		for _, p := range e.procs.Procs() {
			e.t.Logf("--- %s (pid %d) output, last lines:\n%s", p.Name, p.Pid(), p.Tail(60))
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timeout bounds one bus operation of the test.
func timeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// request is a call request as the dispatcher writes it.
func request(campaign, contactID string, attempt int, phone string) *events.CallRequest {
	return &events.CallRequest{
		ID:       dispatcher.MsgID(campaign, contactID, attempt),
		Time:     time.Now().UTC(),
		Source:   "e2e-dispatcher",
		CallID:   dispatcher.CallID(campaign, contactID, attempt),
		Campaign: campaign, ContactID: contactID, Phone: phone, Name: "Contact " + contactID,
		Attempt: attempt, MaxAttempts: 3,
	}
}

// dispatch publishes r on agent.dispatch.<campaign> with its Nats-Msg-Id.
func (e *env) dispatch(r *events.CallRequest) {
	e.t.Helper()
	data, err := events.EncodeRequest(r)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := timeout(5 * time.Second)
	defer cancel()
	if _, err := e.admin.PublishMsg(ctx, r.Subject(), r.ID, data); err != nil {
		e.t.Fatal(err)
	}
}

// publishRaw stores data on subject as it is, with no id.
func (e *env) publishRaw(subject string, data []byte) {
	e.t.Helper()
	ctx, cancel := timeout(5 * time.Second)
	defer cancel()
	if _, err := e.admin.PublishMsg(ctx, subject, "", data); err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
}

// emit stores an event as its publisher would.
func (e *env) emit(ev events.Event) {
	e.t.Helper()
	ctx, cancel := timeout(5 * time.Second)
	defer cancel()
	if err := e.admin.Emit(ctx, ev); err != nil {
		e.t.Fatal(err)
	}
}

// stored is one message read back from a stream.
type stored struct {
	Subject string
	Seq     uint64
	Data    []byte
}

// read returns every message of stream on the filter subjects, in order,
// through an ephemeral consumer that acknowledges nothing.
func (e *env) read(stream string, filters ...string) []stored {
	e.t.Helper()
	ctx, cancel := timeout(20 * time.Second)
	defer cancel()
	admin := e.nats.Roles()[config.RoleAdmin]
	_, js := natstest.Raw(e.t, e.nats.URL(), admin.User, admin.Password)
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubjects:    filters,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		e.t.Fatalf("read %s: %v", stream, err)
	}
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name) }()
	want := int(cons.CachedInfo().NumPending)
	var out []stored
	for len(out) < want {
		batch, err := cons.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatalf("read %s: %v", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			out = append(out, stored{Subject: m.Subject(), Seq: md.Sequence.Stream, Data: m.Data()})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatalf("read %s: %v", stream, err)
		}
		if n == 0 {
			e.t.Fatalf("read %s: %d of %d messages, then nothing", stream, len(out), want)
		}
	}
	return out
}

// terminalSubjects are the subjects of terminal call outcomes.
var terminalSubjects = []string{
	events.CallSubject(events.CallCompleted),
	events.CallSubject(events.CallFailed),
	events.CallSubject(events.CallSkipped),
}

// terminals reads EVENTS and returns every terminal call event by call id.
func (e *env) terminals() map[string][]*events.Call {
	e.t.Helper()
	out := map[string][]*events.Call{}
	for _, m := range e.read(events.StreamEvents, terminalSubjects...) {
		ev, err := events.DecodeAs[*events.Call](m.Data)
		if err != nil {
			continue // garbage a test published on purpose
		}
		out[ev.CallID] = append(out[ev.CallID], ev)
	}
	return out
}

// eventsOf reads EVENTS on the filter subjects and decodes what decodes.
func (e *env) eventsOf(filters ...string) []events.Event {
	e.t.Helper()
	var out []events.Event
	for _, m := range e.read(events.StreamEvents, filters...) {
		if ev, err := events.Decode(m.Data); err == nil {
			out = append(out, ev)
		}
	}
	return out
}

// consumerInfo returns the durable's state.
func (e *env) consumerInfo(stream, durable string) *jetstream.ConsumerInfo {
	e.t.Helper()
	ctx, cancel := timeout(5 * time.Second)
	defer cancel()
	info, err := e.admin.ConsumerInfo(ctx, stream, durable)
	if err != nil {
		e.t.Fatalf("consumer %s on %s: %v", durable, stream, err)
	}
	return info
}

// settled reports whether the durable has nothing left to deliver and
// nothing awaiting an acknowledgement.
func (e *env) settled(stream, durable string) bool {
	info := e.consumerInfo(stream, durable)
	return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}

// streamMsgs is how many messages stream holds now.
func (e *env) streamMsgs(stream string) uint64 {
	e.t.Helper()
	ctx, cancel := timeout(5 * time.Second)
	defer cancel()
	s, err := e.admin.Stream(ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// subscribe delivers every event published on subject from now on.
func (e *env) subscribe(subject string) <-chan events.Event {
	e.t.Helper()
	ch := make(chan events.Event, 1024)
	sub, err := e.admin.Subscribe(context.Background(), subject, func(m *nats.Msg) {
		if ev, err := events.Decode(m.Data); err == nil {
			select {
			case ch <- ev:
			default:
			}
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.admin.Flush(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// contactsFile writes n contacts, c01..cNN, as CSV and returns its path and
// the contact ids.
func (e *env) contactsFile(n int) (string, []string) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString("id,phone,name\n")
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("c%02d", i+1)
		fmt.Fprintf(&b, "%s,+1415555%04d,Contact %d\n", ids[i], 100+i, i+1)
	}
	path := filepath.Join(e.dir, "contacts.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path, ids
}

// runDispatcher starts `dispatcher run` following the campaign to its end.
func (e *env) runDispatcher(config, contacts, campaign string) *proc {
	e.t.Helper()
	return e.start("dispatcher", "dispatcher", "run", "--config", config, "--contacts", contacts,
		"--campaign", campaign, "--output", "json", "--progress", "lines", "--timeout", "100s")
}

// summary waits for the dispatcher to exit 0 and decodes its JSON summary.
func (e *env) summary(p *proc, within time.Duration) *dispatcher.Summary {
	e.t.Helper()
	if code := p.wait(e.t, within); code != 0 {
		e.t.Fatalf("dispatcher exited %d:\n%s", code, p.Tail(40))
	}
	var sum dispatcher.Summary
	if err := json.Unmarshal([]byte(p.stdout.String()), &sum); err != nil {
		e.t.Fatalf("dispatcher summary: %v\n%s", err, p.stdout.String())
	}
	return &sum
}

// outcomes follows agent.call.> from now on: the distinct call ids with a
// terminal event, and the calls started and not yet ended, by caller.
type outcomes struct {
	mu      sync.Mutex
	ended   map[string]bool
	running map[string]string // call id -> source of its latest start
}

func (e *env) outcomes() *outcomes {
	e.t.Helper()
	o := &outcomes{ended: map[string]bool{}, running: map[string]string{}}
	sub, err := e.admin.Subscribe(context.Background(), events.CallAll, func(m *nats.Msg) {
		ev, err := events.DecodeAs[*events.Call](m.Data)
		if err != nil {
			return
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		if ev.Outcome == events.CallStarted {
			if !o.ended[ev.CallID] {
				o.running[ev.CallID] = ev.Source
			}
			return
		}
		o.ended[ev.CallID] = true
		delete(o.running, ev.CallID)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.admin.Flush(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return o
}

// count is how many calls have ended.
func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ended)
}

// busiest returns the source among names running the most calls, and how
// many; "" when none of them runs one.
func (o *outcomes) busiest(names []string) (string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	per := map[string]int{}
	for _, src := range o.running {
		per[src]++
	}
	best, n := "", 0
	for _, name := range names {
		if per[name] > n {
			best, n = name, per[name]
		}
	}
	return best, n
}

// checkCampaign checks a finished campaign against the delivery contract:
// every contact of ids is in the summary with a terminal status; no call id
// has two terminal events in EVENTS, and every attempt the summary records
// an outcome for has its one terminal event, saying the same; the CRM holds
// exactly one record for every completed call and the telephony provider
// placed exactly one call for it. It returns the number of contacts per
// status.
func (e *env) checkCampaign(sum *dispatcher.Summary, ids []string) map[dispatcher.Status]int {
	e.t.Helper()
	t := e.t
	if !sum.Finished || sum.Total != len(ids) || len(sum.Contacts) != len(ids) {
		t.Fatalf("summary: finished %v, %d contacts of %d", sum.Finished, len(sum.Contacts), len(ids))
	}
	terms := e.terminals()
	for id, evs := range terms {
		if len(evs) != 1 {
			var desc []string
			for _, ev := range evs {
				desc = append(desc, fmt.Sprintf("%s by %s (%s)", ev.Outcome, ev.Source, ev.ID))
			}
			t.Errorf("call %s has %d terminal events: %s", id, len(evs), strings.Join(desc, ", "))
		}
	}
	byStatus := map[dispatcher.Status]int{}
	seen := map[string]bool{}
	for _, c := range sum.Contacts {
		seen[c.ContactID] = true
		byStatus[c.Status]++
		if !c.Status.Terminal() {
			t.Errorf("contact %s is %s, want a terminal status", c.ContactID, c.Status)
		}
		for _, a := range c.History {
			evs := terms[a.CallID]
			switch {
			case a.Outcome == "" || a.Outcome == "lost":
				t.Errorf("contact %s attempt %d (%s) has outcome %q: a request without a terminal outcome", c.ContactID, a.Attempt, a.CallID, a.Outcome)
			case len(evs) == 0:
				t.Errorf("contact %s attempt %s is %s in the summary but has no terminal event", c.ContactID, a.CallID, a.Outcome)
			case evs[0].Outcome != a.Outcome:
				t.Errorf("contact %s attempt %s is %s in the summary, %s in EVENTS", c.ContactID, a.CallID, a.Outcome, evs[0].Outcome)
			}
			if a.Outcome == events.CallCompleted {
				for _, svc := range []string{config.ServiceCRM, config.ServiceTelephony} {
					if n := e.sim.SideEffects(svc, a.CallID); n != 1 {
						t.Errorf("completed call %s: %d %s side effects, want exactly 1", a.CallID, n, svc)
					}
				}
			}
		}
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("contact %s missing from the summary", id)
		}
	}
	return byStatus
}

// takeovers counts the calls whose terminal event comes from another caller
// than their start: calls taken over from a caller that died.
func (e *env) takeovers() int {
	e.t.Helper()
	started := map[string]string{}
	n := 0
	for _, ev := range e.eventsOf(events.CallAll) {
		c, ok := ev.(*events.Call)
		if !ok {
			continue
		}
		if c.Outcome == events.CallStarted {
			started[c.CallID] = c.Source
		} else if src, ok := started[c.CallID]; ok && src != c.Source {
			n++
		}
	}
	return n
}

// contains reports whether the process has logged text.
func contains(p *proc, text string) bool { return strings.Contains(p.Log(), text) }

// group returns the pids of the processes left in p's process group: the
// children it started, once p itself is dead.
func (e *env) group(p *proc) []int {
	e.t.Helper()
	pids, err := p.Group()
	if err != nil {
		e.t.Fatal(err)
	}
	return pids
}

// waitConsumer waits until the durable exists: a process logs that it
// started before it has created its consumers.
func (e *env) waitConsumer(stream, durable string) {
	e.t.Helper()
	waitFor(e.t, 20*time.Second, "consumer "+durable+" on "+stream, func() bool {
		ctx, cancel := timeout(5 * time.Second)
		defer cancel()
		_, err := e.admin.ConsumerInfo(ctx, stream, durable)
		return err == nil
	})
}
