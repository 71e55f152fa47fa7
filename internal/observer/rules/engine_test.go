package rules_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer/observertest"
	ot "github.com/callagent/agent/internal/observer/observertest"
	"github.com/callagent/agent/internal/observer/rules"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// step is an event to apply or, with ev nil, a time to advance to.
type step struct {
	ev events.Event
	to time.Time
}

func ev(e events.Event) step       { return step{ev: observertest.Stamped(e)[0]} }
func advance(d time.Duration) step { return step{to: at(d)} }
func run(e *rules.Engine, steps ...step) []rules.Output {
	var outs []rules.Output
	for _, s := range steps {
		if s.ev != nil {
			outs = append(outs, e.Apply(s.ev)...)
		} else {
			outs = append(outs, e.Advance(s.to)...)
		}
	}
	return outs
}

// brief renders outputs compactly: "status svc from->to" and
// "firing|resolved rule svc severity n=count @offset".
func brief(outs []rules.Output) []string {
	var s []string
	for _, o := range outs {
		switch {
		case o.Status != nil:
			s = append(s, fmt.Sprintf("status %s %s->%s", o.Status.Service, o.Status.From, o.Status.To))
		case o.Alert != nil:
			a := o.Alert
			s = append(s, fmt.Sprintf("%s %s %s %s n=%d @%s", a.Status, a.Rule, a.Service, a.Severity, a.Count, a.Time.Sub(t0)))
		}
	}
	return s
}

func alerts(outs []rules.Output) []*events.Alert {
	var a []*events.Alert
	for _, o := range outs {
		if o.Alert != nil {
			a = append(a, o.Alert)
		}
	}
	return a
}

func only(prefix string, s []string) []string {
	var out []string
	for _, x := range s {
		if strings.HasPrefix(x, prefix) {
			out = append(out, x)
		}
	}
	return out
}

const tts = "elevenlabs"

func fail(id string, d time.Duration, call string) step {
	return ev(ot.Failure(id, at(d), call, tts, 1, events.CategoryTransient, 503, "service_unavailable", "503"))
}

func ok(id string, d time.Duration, call string) step {
	return ev(ot.Success(id, at(d), call, tts, 200*time.Millisecond))
}

func TestStatusTransitions(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		want  []string
	}{
		{"first success is up", []step{ok("a", 0, "c1")}, []string{"status elevenlabs ->up"}},
		{"two failures in a row degrade, a success recovers", []step{
			ok("a", 0, "c1"), fail("b", time.Second, "c1"), fail("c", 2*time.Second, "c1"), ok("d", 3*time.Second, "c1"),
		}, []string{"status elevenlabs ->up", "status elevenlabs up->degraded", "status elevenlabs degraded->up"}},
		{"breaker open is down, half-open stays down, closed is up", []step{
			ok("a", 0, "c1"),
			ev(ot.Breaker("b", at(time.Second), tts, events.BreakerClosed, events.BreakerOpen)),
			ev(ot.Breaker("c", at(31*time.Second), tts, events.BreakerOpen, events.BreakerHalfOpen)),
			ev(ot.Breaker("d", at(32*time.Second), tts, events.BreakerHalfOpen, events.BreakerClosed)),
		}, []string{"status elevenlabs ->up", "status elevenlabs up->down", "status elevenlabs down->up"}},
		{"two failed probes are down, a passing probe is up", []step{
			ev(ot.Health("a", at(0), tts, true)),
			ev(ot.Health("b", at(15*time.Second), tts, false)),
			ev(ot.Health("c", at(30*time.Second), tts, false)),
			ev(ot.Health("d", at(45*time.Second), tts, true)),
		}, []string{"status elevenlabs ->up", "status elevenlabs up->down", "status elevenlabs down->up"}},
		{"a high error rate degrades until two successes", func() []step {
			var s []step
			for i := range 10 { // 3 of 10 failed: 30% > 10%, never two in a row
				if i%3 == 0 {
					s = append(s, fail(fmt.Sprint("f", i), time.Duration(i)*time.Second, "c"))
				} else {
					s = append(s, ok(fmt.Sprint("s", i), time.Duration(i)*time.Second, "c"))
				}
			}
			return append(s, ok("x", 11*time.Second, "c"), ok("y", 12*time.Second, "c"))
		}(), []string{"status elevenlabs ->up", "status elevenlabs up->degraded", "status elevenlabs degraded->up"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rules.New(config.Rules{GroupWait: -1})
			got := only("status", brief(run(e, tt.steps...)))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("statuses\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestAlertRulesFireAndResolve(t *testing.T) {
	cfg := config.Rules{GroupWait: 10 * time.Second, RepeatInterval: time.Hour, RateWindow: time.Minute, RateMinRequests: 10}
	many := func(n int, from time.Duration, mk func(i int, d time.Duration) step) []step {
		var s []step
		for i := range n {
			s = append(s, mk(i, from+time.Duration(i)*time.Second))
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
		want  []string
		check func(t *testing.T, a []*events.Alert)
	}{
		{
			name: "permanent failure: quota exceeded is not an auth failure",
			steps: []step{
				ev(ot.Failure("p1", at(0), "c1", tts, 1, events.CategoryPermanent, 401, "quota_exceeded", "This request exceeds your quota")),
				advance(11 * time.Second),
				ok("s1", time.Minute, "c2"),
			},
			want: []string{"firing permanent_failure elevenlabs critical n=1 @10s", "resolved permanent_failure elevenlabs critical n=1 @1m0s"},
			check: func(t *testing.T, a []*events.Alert) {
				if !strings.Contains(a[0].Message, "quota exceeded, not an auth failure") || !strings.Contains(a[0].Summary, "quota exceeded") {
					t.Errorf("summary %q message %q: want the quota named, not auth", a[0].Summary, a[0].Message)
				}
				if a[0].Labels["error_code"] != "quota_exceeded" || a[0].Fingerprint != a[1].Fingerprint {
					t.Errorf("labels %v, fingerprints %s %s", a[0].Labels, a[0].Fingerprint, a[1].Fingerprint)
				}
			},
		},
		{
			name: "permanent failures with different codes are different alerts",
			steps: []step{
				ev(ot.Failure("p1", at(0), "c1", tts, 1, events.CategoryPermanent, 401, "quota_exceeded", "")),
				ev(ot.Failure("p2", at(time.Second), "c2", tts, 1, events.CategoryPermanent, 401, "invalid_api_key", "")),
				advance(time.Minute),
			},
			want: []string{"firing permanent_failure elevenlabs critical n=1 @10s", "firing permanent_failure elevenlabs critical n=1 @11s"},
			check: func(t *testing.T, a []*events.Alert) {
				if a[0].Fingerprint == a[1].Fingerprint || !strings.Contains(a[1].Message, "authentication failed") {
					t.Errorf("got %+v", a)
				}
			},
		},
		{
			name: "retries exhausted fires after the group wait and resolves on success",
			steps: []step{
				ev(ot.Call("c1", at(0), "call-1", events.CallFailed, tts, "retries_exhausted")),
				advance(20 * time.Second),
				ok("s1", 30*time.Second, "call-2"),
			},
			want: []string{"firing retries_exhausted elevenlabs warning n=1 @10s", "resolved retries_exhausted elevenlabs warning n=1 @30s"},
			check: func(t *testing.T, a []*events.Alert) {
				if !reflect.DeepEqual(a[0].CallIDs, []string{"call-1"}) {
					t.Errorf("call ids %v", a[0].CallIDs)
				}
			},
		},
		{
			name: "the breaker's close resolves its open",
			steps: []step{
				ev(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)),
				advance(15 * time.Second),
				ev(ot.Breaker("b2", at(31*time.Second), tts, events.BreakerOpen, events.BreakerHalfOpen)),
				ev(ot.Breaker("b3", at(32*time.Second), tts, events.BreakerHalfOpen, events.BreakerClosed)),
			},
			want: []string{"firing breaker_open elevenlabs critical n=1 @10s", "resolved breaker_open elevenlabs critical n=1 @32s"},
			check: func(t *testing.T, a []*events.Alert) {
				if a[0].Fingerprint != a[1].Fingerprint || a[1].EndsAt == nil || !a[1].StartsAt.Equal(at(0)) {
					t.Errorf("resolution %+v does not match firing %+v", a[1], a[0])
				}
				if a[1].Summary != "elevenlabs circuit breaker closed again" {
					t.Errorf("summary %q", a[1].Summary)
				}
			},
		},
		{
			name: "a breaker that closes within the group wait is still reported",
			steps: []step{
				ev(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)),
				ev(ot.Breaker("b2", at(3*time.Second), tts, events.BreakerOpen, events.BreakerClosed)),
			},
			want: []string{"firing breaker_open elevenlabs critical n=1 @3s", "resolved breaker_open elevenlabs critical n=1 @3s"},
		},
		{
			name: "service down longer than down_for",
			steps: []step{
				ev(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)),
				advance(10 * time.Minute),
				ev(ot.Breaker("b2", at(11*time.Minute), tts, events.BreakerOpen, events.BreakerClosed)),
			},
			want: []string{
				"firing breaker_open elevenlabs critical n=1 @10s",
				"firing service_down elevenlabs critical n=1 @5m10s",
				"resolved breaker_open elevenlabs critical n=1 @11m0s",
				"resolved service_down elevenlabs critical n=1 @11m0s",
			},
			check: func(t *testing.T, a []*events.Alert) {
				if !a[1].StartsAt.Equal(at(0)) {
					t.Errorf("service_down starts at %v, want when it went down", a[1].StartsAt)
				}
			},
		},
		{
			name: "down for less than down_for does not fire",
			steps: []step{
				ev(ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen)),
				ev(ot.Breaker("b2", at(4*time.Minute), tts, events.BreakerOpen, events.BreakerClosed)),
				advance(20 * time.Minute),
			},
			want: []string{"firing breaker_open elevenlabs critical n=1 @10s", "resolved breaker_open elevenlabs critical n=1 @4m0s"},
		},
		{
			name: "error rate fires and resolves when the window slides past the failures",
			steps: cat(
				many(10, 0, func(i int, d time.Duration) step { // 2 of 10 failed, not in a row
					if i == 3 || i == 7 {
						return fail(fmt.Sprint("f", i), d, "c")
					}
					return ok(fmt.Sprint("s", i), d, "c")
				}),
				[]step{advance(5 * time.Minute)},
			),
			// The first success leaving the window leaves 9 attempts, under
			// rate_min_requests: no rate to judge, so resolved.
			want: []string{"firing error_rate elevenlabs warning n=1 @19s", "resolved error_rate elevenlabs warning n=1 @1m0s"},
		},
		{
			name: "error rate resolves when successes bring it back under the threshold",
			steps: cat(
				many(10, 0, func(i int, d time.Duration) step {
					if i == 3 || i == 7 {
						return fail(fmt.Sprint("f", i), d, "c")
					}
					return ok(fmt.Sprint("s", i), d, "c")
				}),
				// 2 failures in 20 attempts is 10%, not above it.
				many(10, 30*time.Second, func(i int, d time.Duration) step { return ok(fmt.Sprint("t", i), d, "c") }),
			),
			want: []string{"firing error_rate elevenlabs warning n=1 @19s", "resolved error_rate elevenlabs warning n=1 @39s"},
		},
		{
			name: "retry rate fires and resolves",
			steps: cat(
				many(10, 0, func(i int, d time.Duration) step { return ok(fmt.Sprint("s", i), d, "c") }),
				many(4, 10*time.Second, func(i int, d time.Duration) step {
					return ev(ot.Retry(fmt.Sprint("r", i), at(d), "c", tts, 1, 5*time.Second))
				}),
				many(10, 70*time.Second, func(i int, d time.Duration) step { return ok(fmt.Sprint("t", i), d, "c") }),
			),
			// The 4th retry makes 40% > 30%; the first success leaving the
			// window leaves 9 attempts, under rate_min_requests.
			want: []string{"firing retry_rate elevenlabs warning n=1 @23s", "resolved retry_rate elevenlabs warning n=1 @1m0s"},
		},
		{
			name: "latency fires and resolves",
			steps: cat(
				many(10, 0, func(i int, d time.Duration) step {
					lat := 200 * time.Millisecond
					if i < 2 {
						lat = 6 * time.Second
					}
					return ev(ot.Success(fmt.Sprint("s", i), at(d), "c", tts, lat))
				}),
				[]step{advance(3 * time.Minute)},
			),
			want: []string{"firing latency elevenlabs warning n=1 @19s", "resolved latency elevenlabs warning n=1 @1m0s"},
		},
		{
			name: "repeats within the repeat interval are deduplicated, then reminded",
			steps: cat(
				many(5, 0, func(i int, d time.Duration) step {
					return ev(ot.Failure(fmt.Sprint("p", i), at(d*60), fmt.Sprint("call-", i), tts, 1, events.CategoryPermanent, 401, "invalid_api_key", ""))
				}),
				[]step{advance(61 * time.Minute)},
			),
			// p0 at 0 opens the group; p1..p4 (1-4 min) come after it was sent.
			want: []string{"firing permanent_failure elevenlabs critical n=1 @10s", "firing permanent_failure elevenlabs critical n=4 @1h0m10s"},
		},
		{
			name: "a burst for one service is one notification",
			steps: cat(
				many(5, 0, func(i int, d time.Duration) step {
					return ev(ot.Call(fmt.Sprint("x", i), at(d/2), fmt.Sprint("call-", i), events.CallFailed, tts, "retries_exhausted"))
				}),
				[]step{advance(time.Minute)},
			),
			want: []string{"firing retries_exhausted elevenlabs warning n=5 @10s"},
			check: func(t *testing.T, a []*events.Alert) {
				if len(a[0].CallIDs) != 5 || !strings.Contains(a[0].Summary, "5 calls") {
					t.Errorf("group %q call ids %v", a[0].Summary, a[0].CallIDs)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rules.New(cfg)
			outs := run(e, tt.steps...)
			got := only("", brief(outs))
			var gotAlerts []string
			for _, s := range got {
				if !strings.HasPrefix(s, "status") {
					gotAlerts = append(gotAlerts, s)
				}
			}
			if !reflect.DeepEqual(gotAlerts, tt.want) {
				t.Fatalf("alerts\n got %q\nwant %q", gotAlerts, tt.want)
			}
			as := alerts(outs)
			seen := map[string]bool{}
			for _, a := range as {
				if err := observertest.Stamped(a)[0].Validate(); err != nil {
					t.Errorf("invalid alert %+v: %v", a, err)
				}
				if seen[a.ID] {
					t.Errorf("duplicate alert id %s", a.ID)
				}
				seen[a.ID] = true
			}
			if tt.check != nil {
				tt.check(t, as)
			}
		})
	}
}

// The outputs, ids included, do not depend on how often the clock is
// advanced between events, nor on a save and restore of the state halfway.
func TestDeterministic(t *testing.T) {
	seed := observertest.Seed("seed", t0)
	extra := []events.Event{
		ot.Breaker("b1", at(40*time.Second), tts, events.BreakerClosed, events.BreakerOpen),
		ot.Call("k1", at(41*time.Second), "call-4", events.CallSkipped, tts, "circuit_open"),
		ot.Breaker("b2", at(8*time.Minute), tts, events.BreakerOpen, events.BreakerClosed),
	}
	all := append(seed, observertest.Stamped(extra...)...)
	end := at(15 * time.Minute)
	cfg := config.Default().Observer.Rules

	reference := func() []rules.Output {
		e := rules.New(cfg)
		var outs []rules.Output
		for _, ev := range all {
			outs = append(outs, e.Apply(ev)...)
		}
		return append(outs, e.Advance(end)...)
	}()

	ticked := func() []rules.Output {
		e := rules.New(cfg)
		var outs []rules.Output
		for _, ev := range all {
			// A live ticker: advance in 700 ms steps up to the event.
			for tt := e.Clock().Add(700 * time.Millisecond); !e.Clock().IsZero() && tt.Before(ev.Head().Time); tt = tt.Add(700 * time.Millisecond) {
				outs = append(outs, e.Advance(tt)...)
			}
			outs = append(outs, e.Apply(ev)...)
		}
		return append(outs, e.Advance(end)...)
	}()

	restored := func() []rules.Output {
		e := rules.New(cfg)
		var outs []rules.Output
		for i, ev := range all {
			if i%3 == 0 {
				data, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				e = rules.New(cfg)
				if err := json.Unmarshal(data, e); err != nil {
					t.Fatal(err)
				}
			}
			outs = append(outs, e.Apply(ev)...)
		}
		return append(outs, e.Advance(end)...)
	}()

	want := ids(reference)
	if len(alerts(reference)) < 4 {
		t.Fatalf("reference run has too few alerts to compare: %q", brief(reference))
	}
	for name, outs := range map[string][]rules.Output{"ticked": ticked, "restored": restored} {
		if got := ids(outs); !reflect.DeepEqual(got, want) {
			t.Errorf("%s run differs\n got %q\nwant %q\n%q\n%q", name, got, want, brief(outs), brief(reference))
		}
	}
}

func ids(outs []rules.Output) []string {
	var s []string
	for _, o := range outs {
		if o.Alert != nil {
			s = append(s, o.Alert.ID+" "+o.Alert.Rule+" "+o.Alert.Status)
		} else {
			s = append(s, o.Status.ID+" status "+o.Status.To)
		}
	}
	return s
}

func TestSeedScenario(t *testing.T) {
	e := rules.New(config.Default().Observer.Rules)
	var outs []rules.Output
	for _, ev := range observertest.Seed("seed", t0) {
		outs = append(outs, e.Apply(ev)...)
	}
	outs = append(outs, e.Advance(at(10*time.Minute))...)
	want := []string{
		"status llm ->up",
		"status elevenlabs ->up",
		"status elevenlabs up->degraded",
		"firing retries_exhausted elevenlabs warning n=1 @36.5s",
		"resolved retries_exhausted elevenlabs warning n=1 @36.5s",
		"status elevenlabs degraded->up",
		"status telephony ->up",
		"status crm ->up",
	}
	if got := brief(outs); !reflect.DeepEqual(got, want) {
		t.Errorf("seed scenario\n got %q\nwant %q", got, want)
	}
	if n := len(e.Active()); n != 0 {
		t.Errorf("%d alerts still active: %+v", n, e.Active())
	}
}

// An event that arrives after the clock was advanced past its time (a live
// ticker ran ahead of a slow publisher) derives the same ids.
func TestLateEventKeepsItsIDs(t *testing.T) {
	evs := observertest.Stamped(
		ot.Breaker("b1", at(0), tts, events.BreakerClosed, events.BreakerOpen),
		ot.Breaker("b2", at(time.Minute), tts, events.BreakerOpen, events.BreakerClosed),
	)
	cfg := config.Default().Observer.Rules
	onTime := rules.New(cfg)
	late := rules.New(cfg)
	late.Advance(at(-time.Second))
	var want, got []rules.Output
	for _, ev := range evs {
		want = append(want, onTime.Apply(ev)...)
		got = append(got, late.Advance(ev.Head().Time.Add(20*time.Second))...) // the ticker ran ahead
		got = append(got, late.Apply(ev)...)
	}
	want = append(want, onTime.Advance(at(time.Hour))...)
	got = append(got, late.Advance(at(time.Hour))...)
	if !reflect.DeepEqual(ids(got), ids(want)) || len(want) != 4 {
		t.Errorf("late run\n got %q\nwant %q", brief(got), brief(want))
	}
}
