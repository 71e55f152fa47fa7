package caller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/provider/crm"
	"github.com/callagent/agent/internal/provider/elevenlabs"
	"github.com/callagent/agent/internal/provider/llm"
	"github.com/callagent/agent/internal/provider/telephony"
	"github.com/callagent/agent/internal/simulator"
)

// testConfig points every service at the simulator with the seed retry
// policy scaled down a hundredfold: 50, 100, 200 ms.
func testConfig(simURL string) config.Config {
	cfg := config.Default()
	for _, name := range config.Services {
		s := cfg.Services[name]
		s.BaseURL = simURL + "/" + name
		s.APIKey = "test-key-" + name
		s.Timeout = 2 * time.Second
		s.Retry = config.Retry{MaxRetries: 3, InitialDelay: 50 * time.Millisecond, Multiplier: 2, MaxDelay: time.Second}
		s.Breaker.RecoveryTimeout = 500 * time.Millisecond
		s.Health.Enabled = false
		s.Options = map[string]string{"account_sid": "AC123", "from_number": "+14155550100", "twiml_url": simURL + "/telephony/twiml"}
		cfg.Services[name] = s
	}
	cfg.Caller.Concurrency = 1
	cfg.Caller.FleetMaxInFlight = 1 // one call at a time across the fleet: the seed's order
	cfg.Caller.AckWait = 2 * time.Second
	cfg.Caller.ShutdownGrace = 0
	return cfg
}

func services(t *testing.T, cfg config.Config) caller.Services {
	t.Helper()
	l, err := llm.New(cfg.Services["llm"])
	if err != nil {
		t.Fatal(err)
	}
	e, err := elevenlabs.New(cfg.Services["elevenlabs"])
	if err != nil {
		t.Fatal(err)
	}
	p, err := telephony.New(cfg.Services["telephony"], telephony.WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r, err := crm.New(cfg.Services["crm"])
	if err != nil {
		t.Fatal(err)
	}
	return caller.Services{LLM: l, TTS: e, Telephony: p, CRM: r}
}

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

// startCaller runs a caller until ctx is done; the channel closes once it
// has stopped.
func startCaller(t *testing.T, ctx context.Context, srv *natstest.Server, cfg config.Config, name string) <-chan struct{} {
	t.Helper()
	conn := srv.Connect(t, config.NATS{}, name)
	c, err := caller.New(ctx, conn, cfg, services(t, cfg), nil, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { <-done })
	return done
}

func request(n int) *events.CallRequest {
	return &events.CallRequest{
		ID: fmt.Sprintf("req-%d", n), Time: time.Now(), Source: "test",
		CallID: fmt.Sprintf("seed-c%d-1", n), Campaign: "seed", ContactID: fmt.Sprintf("c%d", n),
		Phone: fmt.Sprintf("+1415555010%d", n), Name: fmt.Sprintf("Contact %d", n), Attempt: 1,
	}
}

func dispatch(t *testing.T, c *bus.Conn, r *events.CallRequest) {
	t.Helper()
	data, err := events.EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishMsg(context.Background(), r.Subject(), r.ID, data); err != nil {
		t.Fatal(err)
	}
}

// recorder keeps every event seen on agent.> in arrival order.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func record(t *testing.T, c *bus.Conn) *recorder {
	t.Helper()
	r := &recorder{}
	sub, err := c.Subscribe(context.Background(), events.AllSubjects, func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, events.DispatchPrefix) || strings.HasPrefix(m.Subject, events.RequeuePrefix) {
			return
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Errorf("undecodable event on %s: %v", m.Subject, err)
			return
		}
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Flush(context.Background())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *recorder) snapshot() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.evs...)
}

func (r *recorder) terminals() map[string][]*events.Call {
	out := map[string][]*events.Call{}
	for _, ev := range r.snapshot() {
		if c, ok := ev.(*events.Call); ok && c.Outcome != events.CallStarted {
			out[c.CallID] = append(out[c.CallID], c)
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const seedScenario = `
name: seed
services:
  elevenlabs:
    faults:
      - {kind: status, status: 503, code: system_busy, count: 4}
`

// TestSeedScenario reproduces the seed with two callers, delays scaled down:
// contact 1 sees the ElevenLabs 503 four times, retried after delays in the
// ratio 1:2:4, and fails with retries exhausted; contacts 2 and 3 complete.
func TestSeedScenario(t *testing.T) {
	sim := startSimulator(t, seedScenario)
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	rec := record(t, admin)
	cfg := testConfig(sim.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startCaller(t, ctx, srv, cfg, "caller-a")
	startCaller(t, ctx, srv, cfg, "caller-b")

	for n := 1; n <= 3; n++ {
		dispatch(t, admin, request(n))
	}
	waitFor(t, 20*time.Second, "three terminal outcomes", func() bool { return len(rec.terminals()) == 3 })

	terms := rec.terminals()
	c1 := terms["seed-c1-1"]
	if len(c1) != 1 || c1[0].Outcome != events.CallFailed || c1[0].Reason != "retries_exhausted" || c1[0].Service != "elevenlabs" {
		t.Fatalf("contact 1: %+v, want one failed event, retries_exhausted on elevenlabs", c1)
	}
	for _, id := range []string{"seed-c2-1", "seed-c3-1"} {
		if got := terms[id]; len(got) != 1 || got[0].Outcome != events.CallCompleted || got[0].CallStatus != "completed" {
			t.Fatalf("%s: %+v, want one completed event", id, got)
		}
	}

	// Contact 1's ElevenLabs story, in the order it arrived on agent.>.
	var story []string
	var delays []int64
	order := map[string]int{}
	for i, ev := range rec.snapshot() {
		switch e := ev.(type) {
		case *events.Attempt:
			if e.CallID == "seed-c1-1" && e.Service == "elevenlabs" {
				story = append(story, fmt.Sprintf("attempt%d:%d", e.Attempt, e.StatusCode))
			}
		case *events.Retry:
			if e.CallID == "seed-c1-1" {
				story = append(story, fmt.Sprintf("retry%d", e.Attempt))
				delays = append(delays, e.RetryInMs)
			}
		case *events.Call:
			if e.Outcome != events.CallStarted {
				order[e.CallID] = i
				if e.CallID == "seed-c1-1" {
					story = append(story, e.Outcome)
				}
			}
		}
	}
	want := "[attempt1:503 retry1 attempt2:503 retry2 attempt3:503 retry3 attempt4:503 failed]"
	if got := fmt.Sprint(story); got != want {
		t.Errorf("contact 1's events:\n got %s\nwant %s", got, want)
	}
	if fmt.Sprint(delays) != "[50 100 200]" {
		t.Errorf("retry delays %v ms, want 50, 100, 200 (1:2:4)", delays)
	}
	if !(order["seed-c1-1"] < order["seed-c2-1"] && order["seed-c2-1"] < order["seed-c3-1"]) {
		t.Errorf("outcomes out of order: %v", order)
	}
	for _, id := range []string{"seed-c1-1", "seed-c2-1", "seed-c3-1"} {
		if n := sim.SideEffects("crm", id); (id == "seed-c1-1") != (n == 0) || n > 1 {
			t.Errorf("%s: %d CRM records", id, n)
		}
	}
	// No event carries the full number.
	for _, ev := range rec.snapshot() {
		data, _ := json.Marshal(ev)
		for n := 1; n <= 3; n++ {
			if phone := request(n).Phone; strings.Contains(string(data), phone) {
				t.Fatalf("event %s carries a full phone number", data)
			}
		}
	}
}

// TestOpenBreakerSkipsWithoutCallingTheService shows graceful degradation: a
// service down long enough to trip the breaker makes later calls skip at once.
func TestOpenBreakerSkipsWithoutCallingTheService(t *testing.T) {
	sim := startSimulator(t, `
services:
  crm:
    faults:
      - {kind: status, status: 503, count: 0}
`)
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	rec := record(t, admin)
	cfg := testConfig(sim.URL())
	for _, name := range config.Services {
		s := cfg.Services[name]
		s.Retry.MaxRetries = 1
		s.Retry.InitialDelay = 10 * time.Millisecond
		s.Breaker.FailureThreshold = 2
		s.Breaker.RecoveryTimeout = time.Minute
		cfg.Services[name] = s
	}
	// Call 1 is held for the CRM, and a held request counts against the
	// fleet's in-flight cap until it is written: leave room for the others.
	cfg.Caller.FleetMaxInFlight = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startCaller(t, ctx, srv, cfg, "caller-a")
	for n := 1; n <= 4; n++ {
		dispatch(t, admin, request(n))
	}
	waitFor(t, 20*time.Second, "three terminal outcomes", func() bool { return len(rec.terminals()) == 3 })
	terms := rec.terminals()
	// Call 1's two CRM attempts trip the breaker (threshold 2); the contact
	// has been rung, so the call is held for the CRM, not ended. Calls 2 to 4
	// are skipped before the contact is rung (a call placed while the CRM
	// breaker is open could not be recorded), without a CRM request.
	if got := terms[request(1).CallID]; len(got) != 0 {
		t.Errorf("call 1, placed, ended %+v while the CRM is down; want it held", got)
	}
	var skipped int
	for _, evs := range terms {
		if len(evs) != 1 {
			t.Fatalf("duplicate terminal events: %+v", evs)
		}
		if evs[0].Outcome == events.CallSkipped {
			skipped++
			if evs[0].Service != "crm" || evs[0].RetryInMs <= 0 || evs[0].ErrorCategory != events.CategoryCircuitOpen {
				t.Errorf("skipped event: %+v", evs[0])
			}
		}
	}
	if skipped != 3 {
		t.Errorf("%d calls skipped, want 3 once the breaker opened", skipped)
	}
	if got := sim.Requests("crm")[503]; got > 2 {
		t.Errorf("CRM saw %d requests; the open breaker should have stopped them at 2", got)
	}
	for n := 2; n <= 4; n++ {
		if rung := sim.SideEffects("telephony", request(n).CallID); rung != 0 {
			t.Errorf("skipped call %d rung the contact %d times", n, rung)
		}
	}
}

// A create whose answer is lost after the call was placed rings the contact
// once: the caller's own retry adopts the call placed, and so does a caller
// taking the request over from one that died before storing the sid, from
// the dialing time stored before the create.
func TestLostDialRingsOnce(t *testing.T) {
	tests := []struct {
		name     string
		takeover bool
	}{
		{"retry in the same caller", false},
		{"takeover from a dead caller", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSimulator(t, `
services:
  telephony:
    faults:
      - {match: "POST ", kind: lost_response, count: 1}
`)
			srv := natstest.Start(t)
			admin := srv.Conn(t)
			rec := record(t, admin)
			cfg := testConfig(sim.URL())
			req := request(1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			if tt.takeover {
				// The dead caller stored when it began dialing, sent the
				// create and died without an answer.
				kv, err := admin.KeyValue(ctx, caller.ProgressBucket, 7*24*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				began, _ := json.Marshal(map[string]time.Time{"dialed": time.Now()})
				if _, err := kv.Create(ctx, req.CallID, began); err != nil {
					t.Fatal(err)
				}
				if _, err := services(t, cfg).Telephony.Dial(ctx, req.CallID, req.Phone, time.Time{}); err == nil {
					t.Fatal("the dead caller's Dial succeeded despite the lost response")
				}
				waitFor(t, 5*time.Second, "the lost create's call", func() bool { return sim.SideEffects("telephony", req.CallID) == 1 })
			}

			startCaller(t, ctx, srv, cfg, "caller-a")
			dispatch(t, admin, req)
			waitFor(t, 20*time.Second, "the terminal outcome", func() bool { return len(rec.terminals()) == 1 })
			if got := rec.terminals()[req.CallID]; len(got) != 1 || got[0].Outcome != events.CallCompleted || got[0].CallStatus != "completed" {
				t.Errorf("terminal events %+v, want one completed", got)
			}
			if n := sim.SideEffects("telephony", req.CallID); n != 1 {
				t.Errorf("contact rung %d times, want once", n)
			}
		})
	}
}
