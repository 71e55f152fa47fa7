package silence_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/observer/silence"
)

var t0 = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

func alert(service, status string, startsAt time.Time) *events.Alert {
	return &events.Alert{Fingerprint: "fp-" + service, Rule: "breaker_open", Severity: events.SeverityCritical,
		Status: status, Service: service, Summary: "breaker open", StartsAt: startsAt}
}

func TestMatches(t *testing.T) {
	a := alert("elevenlabs", events.AlertFiring, t0)
	tests := []struct {
		name string
		m    silence.Matchers
		want bool
	}{
		{"service", silence.Matchers{Service: "elevenlabs"}, true},
		{"other service", silence.Matchers{Service: "crm"}, false},
		{"rule and severity", silence.Matchers{Rule: "breaker_open", Severity: events.SeverityCritical}, true},
		{"rule but not severity", silence.Matchers{Rule: "breaker_open", Severity: events.SeverityWarning}, false},
		{"nothing set matches nothing", silence.Matchers{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (silence.Silence{Matchers: tt.m}).Matches(a); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := silence.Silence{Matchers: silence.Matchers{Service: "elevenlabs"}, StartsAt: t0, EndsAt: t0.Add(time.Hour), Comment: "INC-1"}
	tests := []struct {
		name   string
		change func(*silence.Silence)
		valid  bool
	}{
		{"valid", func(*silence.Silence) {}, true},
		{"no matcher", func(s *silence.Silence) { s.Matchers = silence.Matchers{} }, false},
		{"no comment", func(s *silence.Silence) { s.Comment = " " }, false},
		{"ends before it starts", func(s *silence.Silence) { s.EndsAt = t0 }, false},
		{"unknown severity", func(s *silence.Silence) { s.Matchers.Severity = "fatal" }, false},
		{"wildcard service", func(s *silence.Silence) { s.Matchers.Service = "*" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.change(&s)
			err := s.Validate()
			if (err == nil) != tt.valid || (err != nil && !errors.Is(err, silence.ErrInvalid)) {
				t.Errorf("Validate = %v, want valid %v", err, tt.valid)
			}
		})
	}
}

// The muter's decisions over one sink's notifications, in order.
func TestMuter(t *testing.T) {
	set := silence.NewSet(nil, nil)
	set.Put(silence.Silence{ID: "s1", Matchers: silence.Matchers{Service: "elevenlabs"}, StartsAt: t0, EndsAt: t0.Add(time.Hour), Comment: "x"})
	m := silence.NewMuter(set)
	ep2 := t0.Add(2 * time.Hour) // an episode starting after the silence ended
	steps := []struct {
		name  string
		a     *events.Alert
		end   time.Time // a resolution's ends_at
		at    time.Time // when it is delivered
		muted bool
	}{
		{"firing during the silence", alert("elevenlabs", events.AlertFiring, t0.Add(time.Minute)), time.Time{}, t0.Add(time.Minute), true},
		{"another service", alert("crm", events.AlertFiring, t0.Add(time.Minute)), time.Time{}, t0.Add(time.Minute), false},
		{"resolved after the silence expired: still muted", alert("elevenlabs", events.AlertResolved, t0.Add(time.Minute)), t0.Add(90 * time.Minute), t0.Add(90 * time.Minute), true},
		{"the same resolution redelivered", alert("elevenlabs", events.AlertResolved, t0.Add(time.Minute)), t0.Add(90 * time.Minute), t0.Add(91 * time.Minute), true},
		{"a new episode after it", alert("elevenlabs", events.AlertFiring, ep2), time.Time{}, ep2, false},
		{"its resolution", alert("elevenlabs", events.AlertResolved, ep2), ep2.Add(time.Minute), ep2.Add(time.Minute), false},
		{"never seen firing (a restart), the episode overlapped the silence", alert("elevenlabs", events.AlertResolved, t0.Add(-time.Hour)), t0.Add(10 * time.Minute), t0.Add(3 * time.Hour), true},
		{"never seen firing, before the silence", alert("elevenlabs", events.AlertResolved, t0.Add(-3*time.Hour)), t0.Add(-2 * time.Hour), t0.Add(3 * time.Hour), false},
	}
	for _, s := range steps {
		if !s.end.IsZero() {
			s.a.EndsAt = &s.end
		}
		if _, got := m.Mute(s.a, s.at); got != s.muted {
			t.Errorf("%s: muted %v, want %v", s.name, got, s.muted)
		}
	}
}

func role(name string) config.NATS {
	return config.NATS{User: name, Password: name + "-dev-password"}
}

// Under nats.conf: the admin provisions the bucket, the operator adds,
// lists and expires silences, the observer follows them but may not write
// them, and the operator may do nothing else.
func TestUnderNATSConf(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := srv.Connect(t, role("admin"), "admin")
	if _, err := admin.Provision(ctx, config.Default()); err != nil {
		t.Fatal(err)
	}
	op := srv.Connect(t, role("operator"), "operator")
	st, err := silence.Open(ctx, op, nil)
	if err != nil {
		t.Fatalf("operator opens silences: %v", err)
	}
	s, err := st.Add(ctx, silence.Silence{Matchers: silence.Matchers{Service: "elevenlabs"}, EndsAt: time.Now().Add(time.Hour), Comment: "INC-42"})
	if err != nil {
		t.Fatalf("operator adds: %v", err)
	}

	obs := srv.Connect(t, role("observer"), "observer")
	set := silence.NewSet(natstest.Logger(t), nil)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { set.Run(wctx, obs, 50*time.Millisecond); close(done) }()
	defer func() { stop(); <-done }()
	waitFor(t, "the observer's watch loads the silence", func() bool { return len(set.Active(time.Now())) == 1 })

	list, err := st.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != s.ID {
		t.Fatalf("operator lists %+v, %v", list, err)
	}
	if _, err := st.Expire(ctx, s.ID); err != nil {
		t.Fatalf("operator expires: %v", err)
	}
	waitFor(t, "the observer's watch sees the expiry", func() bool { return len(set.Active(time.Now())) == 0 })
	if _, err := st.Expire(ctx, "nope"); !errors.Is(err, silence.ErrNotFound) {
		t.Errorf("expire of an unknown id: %v", err)
	}

	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	kv, err := obs.OpenKeyValue(short, silence.Bucket)
	if err != nil {
		t.Fatalf("observer opens silences: %v", err)
	}
	if _, err := kv.Put(short, "forged", []byte(`{}`)); err == nil {
		t.Error("the observer wrote a silence")
	}
	short2, cancelShort2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort2()
	a := alert("crm", events.AlertFiring, time.Now())
	if err := op.Emit(short2, a); err == nil {
		t.Error("the operator published an alert")
	}
	if _, err := op.OpenKeyValue(short2, "campaigns"); err == nil {
		t.Error("the operator opened the campaigns bucket")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
