package loadtest

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/rules"
	"github.com/callagent/agent/internal/simulator"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of four rounds up the rank", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of four is the max", ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"5/s", 5, false},
		{"5", 5, false},
		{"300/m", 5, false},
		{"7200/h", 2, false},
		{"1/ms", 1000, false},
		{" 2.5 / s ", 2.5, false},
		{"0/s", 0, true},
		{"-1/s", 0, true},
		{"5/d", 0, true},
		{"fast", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseRate(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestContactsPassTheDispatcher checks that the generated numbers are valid
// and distinct as the dispatcher reads them, at both ends of every area code.
func TestContactsPassTheDispatcher(t *testing.T) {
	all, err := Contacts(MaxContacts)
	if err != nil {
		t.Fatal(err)
	}
	phones := map[string]bool{}
	for _, c := range all {
		if phones[c.Phone] {
			t.Fatalf("phone %s generated twice", c.Phone)
		}
		phones[c.Phone] = true
	}
	var sample []Contact
	for i := 0; i < MaxContacts; i += 10000 {
		sample = append(sample, all[i], all[i+9999])
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, sample); err != nil {
		t.Fatal(err)
	}
	list, err := contacts.Read(&buf, "contacts.csv", contacts.Options{DefaultRegion: "US", DefaultTimezone: "UTC"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Contacts) != len(sample) || len(list.Rejected) > 0 || len(list.Duplicates) > 0 {
		t.Fatalf("%d of %d contacts accepted; rejected %v", len(list.Contacts), len(sample), list.Rejected)
	}
	for i, c := range list.Contacts {
		if c.ID != sample[i].ID || c.Phone != sample[i].Phone {
			t.Errorf("contact %d read as %s %s, want %s %s", i, c.ID, c.Phone, sample[i].ID, sample[i].Phone)
		}
	}
	if _, err := Contacts(MaxContacts + 1); err == nil {
		t.Error("Contacts above MaxContacts did not fail")
	}
}

func TestTally(t *testing.T) {
	list, _ := Contacts(4)
	call := func(contact, outcome string) *events.Call {
		return &events.Call{CallRef: events.CallRef{CallID: Campaign + "-" + contact + "-1", Campaign: Campaign, ContactID: contact}, Outcome: outcome}
	}
	base := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	tl := newTally(list)
	tl.add(call("c000001", events.CallStarted), base)
	tl.add(call("c000001", events.CallCompleted), base.Add(time.Second))
	tl.add(call("c000002", events.CallFailed), base.Add(3*time.Second))
	tl.add(call("c000002", events.CallFailed), base.Add(2*time.Second)) // a duplicate, stored earlier
	tl.add(call("c000003", events.CallStarted), base)                   // started, never ended
	tl.add(call("other", events.CallCompleted), base)                   // not one of ours
	if tl.done() {
		t.Fatal("done with contacts missing")
	}
	var r CallsReport
	tl.fill(&r)
	want := CallsReport{Terminal: 4, CallIDs: 3, Duplicates: 1, Missing: 2}
	if r.Terminal != want.Terminal || r.CallIDs != want.CallIDs || r.Duplicates != want.Duplicates || r.Missing != want.Missing {
		t.Errorf("got terminal %d, call ids %d, duplicates %d, missing %d; want %d, %d, %d, %d",
			r.Terminal, r.CallIDs, r.Duplicates, r.Missing, want.Terminal, want.CallIDs, want.Duplicates, want.Missing)
	}
	if r.Outcomes[events.CallFailed] != 2 || r.Outcomes[events.CallCompleted] != 2 || r.Outcomes[events.CallStarted] != 0 {
		t.Errorf("outcomes %v", r.Outcomes)
	}
	if r.MeanLatency != time.Second {
		t.Errorf("mean latency %v, want 1s (the one call started and ended)", r.MeanLatency)
	}
	if got := tl.lastStored(); !got.Equal(base.Add(3 * time.Second)) {
		t.Errorf("last stored %v, want the latest terminal's", got)
	}
	tl.add(call("c000003", events.CallSkipped), base)
	tl.add(call("c000004", events.CallCompleted), base)
	if !tl.done() {
		t.Error("not done once every contact has an outcome")
	}
	tl.fill(&r)
	if r.OK() {
		t.Error("a report with a duplicate is OK")
	}
}

func TestMatcherTakesOnlyItsFiringBreakerAlerts(t *testing.T) {
	open := time.Date(2026, 3, 2, 10, 0, 0, 123_000_000, time.UTC)
	s := &sample{service: "loadtest-03"}
	m := &matcher{byKey: map[string]*sample{}}
	m.expect(key(s.service, open), s)
	alert := func(rule, status, service string, startsAt time.Time) *events.Alert {
		return &events.Alert{Rule: rule, Status: status, Service: service, StartsAt: startsAt}
	}
	tests := []struct {
		name string
		a    *events.Alert
		want *sample
	}{
		{"its firing alert", alert(rules.RuleBreakerOpen, events.AlertFiring, s.service, open), s},
		{"start kept to the millisecond", alert(rules.RuleBreakerOpen, events.AlertFiring, s.service, open.Add(400*time.Microsecond)), s},
		{"the resolution", alert(rules.RuleBreakerOpen, events.AlertResolved, s.service, open), nil},
		{"another rule", alert(rules.RuleServiceDown, events.AlertFiring, s.service, open), nil},
		{"another service", alert(rules.RuleBreakerOpen, events.AlertFiring, "loadtest-04", open), nil},
		{"another episode", alert(rules.RuleBreakerOpen, events.AlertFiring, s.service, open.Add(2*time.Second)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.firing(tt.a); got != tt.want {
				t.Errorf("firing = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMatcherCountsAWebhookPostedWhileItPolls is the alert lost under
// `loadtest alert-latency`: the observer delivered every alert, but the
// matcher polled the simulator while a POST was between its arrival and its
// answer, read it with no webhook name yet, took it for another receiver's
// and never read it again. The receiver's latency holds the POST in that
// state for a while, so the poll meets it there every time.
func TestMatcherCountsAWebhookPostedWhileItPolls(t *testing.T) {
	sc, err := simulator.ParseScenario([]byte("name: held\nservices:\n  webhook: {latency: 300ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(sc, nil)
	if err := sim.Start(t.Context(), "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })

	open := time.Now().UTC().Truncate(time.Millisecond)
	s := &sample{service: "loadtest-07"}
	m := &matcher{byKey: map[string]*sample{}}
	m.expect(key(s.service, open), s)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.pollReceiver(ctx, sim)

	a := &events.Alert{
		Fingerprint: rules.Fingerprint(rules.RuleBreakerOpen, s.service, nil), Rule: rules.RuleBreakerOpen,
		Severity: events.SeverityCritical, Status: events.AlertFiring, Service: s.service,
		Summary: s.service + " circuit breaker opened", StartsAt: open, Count: 1,
	}
	data, err := events.Encode(events.Stamp(a, "observer-test", open))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"version":"1","events":[` + string(data) + `]}`
	resp, err := http.Post(sim.URL()+"/webhook/"+AlertSink, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook answered %s", resp.Status)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		received, receipts := s.received, s.receipts
		m.mu.Unlock()
		if !received.IsZero() {
			if receipts != 1 {
				t.Fatalf("%d receipts, want 1", receipts)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the alert posted and answered is not counted after 5s: the matcher skipped it (receiver holds %+v)", sim.Received(simulator.ServiceWebhook))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFillSaysWhereSamplesWereLost(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	samples := []*sample{
		{published: t0, alerted: t0.Add(time.Millisecond), received: t0.Add(100 * time.Millisecond), receipts: 1},
		{published: t0, alerted: t0.Add(time.Millisecond)}, // in ALERTS, never at the webhook
		{published: t0}, // never raised
	}
	var r AlertReport
	(&matcher{}).fill(&r, samples)
	if r.Received != 1 || r.LostInDelivery != 1 || r.Duplicates != 0 {
		t.Errorf("received %d, lost in delivery %d, duplicates %d; want 1, 1, 0", r.Received, r.LostInDelivery, r.Duplicates)
	}
}

func TestReportsSayWhatFailed(t *testing.T) {
	calls := &CallsReport{Options: CallsOptions{Callers: 2, Concurrency: 32, FleetMaxInFlight: 64, Dispatch: DispatchDirect},
		Contacts: 10, Terminal: 10, Outcomes: map[string]int{events.CallCompleted: 10}, CallIDs: 10, Missing: 1, Wall: time.Second}
	alerts := &AlertReport{Options: AlertOptions{Rate: 5, Services: 10}, Samples: 3, Received: 2, LostInDelivery: 1,
		Latency: []time.Duration{time.Millisecond, 2 * time.Millisecond}}
	for _, c := range []struct {
		name  string
		write func(*bytes.Buffer) error
		ok    bool
		want  []string
	}{
		{"calls", func(b *bytes.Buffer) error { return calls.WriteText(b) }, calls.OK(), []string{"missing                1", "FAIL"}},
		{"alerts", func(b *bytes.Buffer) error { return alerts.WriteText(b) }, alerts.OK(), []string{"lost                   1", "lost after ALERTS      1 of the 1 lost", "FAIL", "p99"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := c.write(&b); err != nil {
				t.Fatal(err)
			}
			if c.ok {
				t.Error("OK with something missing")
			}
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// CALLS counts as drained with a re-queue stored on it (a schedule, not work
// yet), and not with a request waiting for a caller.
func TestDrainedIgnoresStoredRequeues(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Consumer(ctx, bus.ConsumerSpec{Stream: events.StreamCalls, Durable: "callers", FilterSubjects: []string{events.DispatchAll}}); err != nil {
		t.Fatal(err)
	}
	e := &env{admin: conn}
	if !e.drained(ctx) {
		t.Fatal("an empty CALLS is not drained")
	}
	_, js := srv.Raw(t)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: events.RequeueSubject("lt", "c1"), Data: []byte("{}")},
		jetstream.WithScheduleAt(time.Now().Add(time.Hour)), jetstream.WithScheduleTarget(events.DispatchSubject("lt"))); err != nil {
		t.Fatal(err)
	}
	if !e.drained(ctx) {
		t.Error("a stored re-queue counts as a request")
	}
	if _, err := conn.PublishMsg(ctx, events.DispatchSubject("lt"), "lt.c2.1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if e.drained(ctx) {
		t.Error("a waiting request does not count")
	}
}
