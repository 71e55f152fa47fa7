//go:build linux

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/rules"
)

// TestObserverFailover runs two real observers on one durable. One holds
// the lease and acts; the other stands by. An incident starts (a service's
// permanent failures, a breaker opening), the active observer is killed
// with SIGKILL while it is still working through the events, and the rest of
// the incident (the breaker closing, another failure) happens while nobody
// is active. The standby takes over: it derives and delivers the rest. Each
// alert reaches the webhook (a real plugin binary, the simulator's
// receiver) exactly once, and each alert and receipt was made by exactly
// one of the two observers: the one active at the time.
func TestObserverFailover(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	e := newEnv(t, "name: receivers\n")
	s := e.settings()
	s.set("sinks", []any{map[string]any{
		"name": "webhook", "plugin": "webhook", "kind": "alert", "min_severity": "info",
		"batch_size": 10, "batch_wait": "100ms", "backoff": "200ms", "max_backoff": "1s", "timeout": "5s",
		"config": map[string]any{"url": e.sim.URL() + "/webhook/alerts"},
	}})
	s.set("observer.lease.ttl", ttl.String())
	cfg := e.write("observer", s)

	a, aURL := e.startObserverHTTP(cfg, "observer-a")
	a.waitLog(t, "this observer is active", 20*time.Second)
	b, bURL := e.startObserverHTTP(cfg, "observer-b")
	b.waitLog(t, "standing by", 20*time.Second)
	e.waitConsumer(events.StreamEvents, "observer")
	e.waitConsumer(events.StreamAlerts, "sink-webhook")
	aPid, bPid := fmt.Sprint(a.Pid()), fmt.Sprint(b.Pid())
	if code, body := readyz(t, aURL); code != 200 || !strings.HasPrefix(body, "ready: active (") || !strings.Contains(body, aPid) {
		t.Fatalf("observer-a /readyz: %d %q, want ready and active", code, body)
	}
	if code, body := readyz(t, bURL); code != 200 || !strings.HasPrefix(body, "ready: standby (") || !strings.Contains(body, "active observer: observer-") ||
		!strings.Contains(body, aPid+" at "+strings.TrimPrefix(aURL, "http://")) {
		t.Fatalf("observer-b /readyz: %d %q, want ready, standby, naming observer-a", code, body)
	}

	// What the rules derive from the same events, by id (deterministic).
	engine := rules.New(config.Rules{GroupWait: 0})
	expected := map[string]*events.Alert{}
	var mu sync.Mutex
	// derive records what an event published by the test causes.
	derive := func(ev events.Event) []string {
		var ids []string
		mu.Lock()
		defer mu.Unlock()
		for _, out := range engine.Apply(ev) {
			if out.Alert != nil {
				expected[out.Alert.ID] = out.Alert
				ids = append(ids, out.Alert.ID)
			}
		}
		return ids
	}
	publish := func(evs []events.Event) []string {
		var ids []string
		for _, ev := range evs {
			e.emit(ev)
			ids = append(ids, derive(ev)...)
		}
		return ids
	}
	fill := func(prefix string, n int) []events.Event {
		out := make([]events.Event, n)
		for i := range out {
			out[i] = attempt(config.ServiceTelephony, fmt.Sprintf("%s-%d", prefix, i), events.OutcomeSuccess, "", 0)
		}
		return out
	}

	// The incident begins: observer-a alerts.
	before := publish([]events.Event{
		attempt(config.ServiceLLM, "ha-1", events.OutcomeFailure, events.CategoryPermanent, 401),
		breaker(config.ServiceElevenLabs, events.BreakerClosed, events.BreakerOpen),
	})
	waitFor(t, 20*time.Second, "observer-a to deliver the first alerts", func() bool {
		got := e.webhookAlerts()
		for _, id := range before {
			if got[id] == 0 {
				return false
			}
		}
		return e.settled(events.StreamAlerts, "sink-webhook")
	})
	// Observer-a is busy with a stream of events when it dies.
	filled := make(chan error, 1)
	var sent atomic.Int64
	var stop atomic.Bool
	go func() {
		for _, ev := range fill("ha-fill", 300) {
			if stop.Load() {
				break
			}
			ctx, cancel := timeout(5 * time.Second)
			err := e.admin.Emit(ctx, ev)
			cancel()
			if err != nil {
				filled <- err
				return
			}
			derive(ev)
			sent.Add(1)
		}
		filled <- nil
	}()
	waitFor(t, 10*time.Second, "a stream of events under way", func() bool { return sent.Load() >= 100 })
	a.kill9(t)
	killed := time.Now()
	stop.Store(true)
	// Failover: kill -> the standby active (its /readyz), watched from now.
	activeIn := make(chan time.Duration, 1)
	go func() {
		for time.Since(killed) < 30*time.Second {
			if code, body := readyz(t, bURL); code == 200 && strings.HasPrefix(body, "ready: active (") {
				activeIn <- time.Since(killed)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		activeIn <- 0
	}()
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	// The rest of the incident happens while nobody is active.
	after := publish([]events.Event{
		breaker(config.ServiceElevenLabs, events.BreakerOpen, events.BreakerClosed),
		attempt(config.ServiceCRM, "ha-2", events.OutcomeFailure, events.CategoryPermanent, 403),
		attempt(config.ServiceLLM, "ha-3", events.OutcomeSuccess, "", 0),
	})
	if len(after) < 2 {
		t.Fatalf("the second half of the incident derives %d alerts, want a resolved and a firing one", len(after))
	}

	// kill -> the next alert at the webhook.
	var delivered time.Duration
	for delivered == 0 {
		if time.Since(killed) > 30*time.Second {
			t.Fatal("no alert at the webhook 30s after the kill")
		}
		got := e.webhookAlerts()
		for _, id := range after {
			if got[id] > 0 {
				delivered = time.Since(killed)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	active := <-activeIn
	if active == 0 {
		t.Fatal("observer-b's /readyz did not say active within 30s of the kill")
	}
	line, err := b.WaitLog(t.Context(), regexp.QuoteMeta("observer lease taken over"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The takeover's own time, from its log line's timestamp (same clock).
	var took time.Duration
	if m := regexp.MustCompile(`time=(\S+)`).FindStringSubmatch(line); m != nil {
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			took = at.Sub(killed)
		}
	}
	t.Logf("failover with lease ttl %s, %d events into the stream: kill -9 -> lease taken over %s, -> standby active on /readyz (caught up) %s, -> next alert at the webhook %s",
		ttl, sent.Load(), took.Round(time.Millisecond), active.Round(time.Millisecond), delivered.Round(time.Millisecond))
	t.Logf("observer-b: %s", line)

	want := len(expected)
	waitFor(t, 30*time.Second, fmt.Sprintf("%d alerts at the webhook", want), func() bool {
		got := e.webhookAlerts()
		for id := range expected {
			if got[id] == 0 {
				return false
			}
		}
		return len(e.deliveries()) >= want
	})
	waitFor(t, 10*time.Second, "the webhook sink settled", func() bool { return e.settled(events.StreamAlerts, "sink-webhook") })

	// The webhook: every alert exactly once, by id and by fingerprint and status.
	received := e.webhookAlerts()
	byKey := map[string]int{}
	for id, a := range expected {
		byKey[a.Fingerprint+"/"+a.Status] += received[id]
		if n := received[id]; n != 1 {
			t.Errorf("alert %s %s %s reached the webhook %d times, want once", a.Rule, a.Service, a.Status, n)
		}
	}
	for id := range received {
		if expected[id] == nil {
			t.Errorf("the webhook got an unexpected alert %s", id)
		}
	}
	for key, n := range byKey {
		if n != 1 {
			t.Errorf("fingerprint/status %s reached the webhook %d times", key, n)
		}
	}
	// ALERTS and the receipts: once each, made by the observer active then.
	beforeSet := map[string]bool{}
	for _, id := range before {
		beforeSet[id] = true
	}
	maker := func(source string) string {
		switch {
		case strings.HasSuffix(source, "-"+aPid):
			return "observer-a"
		case strings.HasSuffix(source, "-"+bPid):
			return "observer-b"
		}
		return source
	}
	onStream := map[string]int{}
	for _, m := range e.read(events.StreamAlerts, events.AlertAll) {
		al, err := events.DecodeAs[*events.Alert](m.Data)
		if err != nil {
			t.Fatalf("undecodable alert at %d: %v", m.Seq, err)
		}
		onStream[al.ID]++
		if expected[al.ID] == nil {
			t.Errorf("unexpected alert on ALERTS: %s %s %s", al.Rule, al.Service, al.Status)
		}
		if w := map[bool]string{true: "observer-a", false: "observer-b"}[beforeSet[al.ID]]; maker(al.Source) != w {
			t.Errorf("alert %s %s %s derived by %s, want %s", al.Rule, al.Service, al.Status, maker(al.Source), w)
		}
	}
	for id, a := range expected {
		if onStream[id] != 1 {
			t.Errorf("alert %s %s %s is %d times on ALERTS, want once", a.Rule, a.Service, a.Status, onStream[id])
		}
	}
	for ref, d := range e.deliveries() {
		if len(d) != 1 || d[0].Outcome != events.DeliveryDelivered || expected[ref] == nil {
			t.Errorf("deliveries of %s: %+v, want one receipt of an expected alert", ref, d)
			continue
		}
		if w := map[bool]string{true: "observer-a", false: "observer-b"}[beforeSet[ref]]; maker(d[0].Source) != w {
			t.Errorf("alert %s delivered by %s, want %s", ref, maker(d[0].Source), w)
		}
	}
	var list []string
	for _, a := range expected {
		list = append(list, a.Rule+"/"+a.Service+"/"+a.Status)
	}
	t.Logf("%d alerts (%d before the kill), each once at the webhook: %v", want, len(before), list)
}

// startObserverHTTP starts an observer and returns it with the base URL of
// its HTTP endpoints (observer.http.addr is port 0: read from its log).
func (e *env) startObserverHTTP(config, name string) (*proc, string) {
	e.t.Helper()
	p := e.start(name, "observer", "run", "--config", config)
	line, err := p.WaitLog(e.t.Context(), regexp.QuoteMeta("observer started"), 20*time.Second)
	if err != nil {
		e.t.Fatalf("%v:\n%s", err, p.Tail(40))
	}
	m := regexp.MustCompile(`"?http"?[=:]"?(127\.0\.0\.1:\d+)`).FindStringSubmatch(line)
	if m == nil {
		e.t.Fatalf("no http address in %q", line)
	}
	return p, "http://" + m[1]
}

func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
