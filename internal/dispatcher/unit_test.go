package dispatcher

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

func TestWindow(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation(time.DateTime, s, ny)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	day := mustWindow(t, "08:00-21:00")
	night := mustWindow(t, "22:00-06:00")
	always := mustWindow(t, "00:00-24:00")
	tests := []struct {
		name string
		w    Window
		now  string
		open bool
		next string
	}{
		{"before opening", day, "2026-03-02 03:00:00", false, "2026-03-02 08:00:00"},
		{"last minute before", day, "2026-03-02 07:59:59", false, "2026-03-02 08:00:00"},
		{"opening", day, "2026-03-02 08:00:00", true, "2026-03-02 08:00:00"},
		{"last minute", day, "2026-03-02 20:59:00", true, "2026-03-02 20:59:00"},
		{"closing", day, "2026-03-02 21:00:00", false, "2026-03-03 08:00:00"},
		{"across a month end", day, "2026-03-31 22:00:00", false, "2026-04-01 08:00:00"},
		// Clocks spring forward at 02:00 on 2026-03-08: 08:00 is still 08:00 local.
		{"across daylight saving", day, "2026-03-07 22:00:00", false, "2026-03-08 08:00:00"},
		{"night window open late", night, "2026-03-02 23:00:00", true, "2026-03-02 23:00:00"},
		{"night window open early", night, "2026-03-02 05:59:00", true, "2026-03-02 05:59:00"},
		{"night window closed", night, "2026-03-02 12:00:00", false, "2026-03-02 22:00:00"},
		{"always", always, "2026-03-02 23:59:59", true, "2026-03-02 23:59:59"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := at(tt.now)
			if got := tt.w.Open(now); got != tt.open {
				t.Errorf("Open(%s) = %v, want %v", tt.now, got, tt.open)
			}
			if got, want := tt.w.Next(now), at(tt.next); !got.Equal(want) {
				t.Errorf("Next(%s) = %s, want %s", tt.now, got, want)
			}
		})
	}
	if got := tt(day.Next(at("2026-03-07 22:00:00"))); got != "2026-03-08 12:00:00 +0000 UTC" {
		t.Errorf("opening after the change = %s, want 12:00 UTC (08:00 EDT)", got)
	}

	for _, bad := range []string{"", "8-21", "08:00", "08:00-08:00", "25:00-26:00", "08:60-09:00", "24:00-08:00", "8:00-21:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
	if day.String() != "08:00-21:00" {
		t.Errorf("String() = %q", day.String())
	}
}

func tt(t time.Time) string { return t.UTC().String() }

func mustWindow(t *testing.T, s string) Window {
	t.Helper()
	w, err := ParseWindow(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestPolicyApply(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	p := policy{maxAttempts: 3, noAnswerDelay: 4 * time.Hour, skippedDelay: 0}
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	state := func(attempts int) *ContactState {
		st := &ContactState{Campaign: "c", ContactID: "x", Status: StatusInProgress, Attempts: attempts}
		for i := 1; i <= attempts; i++ {
			a := Attempt{Attempt: i, CallID: CallID("c", "x", i), QueuedAt: now}
			if i < attempts {
				a.Outcome = events.CallCompleted
				a.CallStatus = "busy"
			}
			st.History = append(st.History, a)
		}
		st.LastCallID = CallID("c", "x", attempts)
		return st
	}
	ev := func(attempt int, outcome string, f func(e *events.Call)) *events.Call {
		e := &events.Call{CallRef: events.CallRef{CallID: CallID("c", "x", attempt), Campaign: "c", ContactID: "x"}, Outcome: outcome, Attempt: attempt}
		e.Time = now
		if f != nil {
			f(e)
		}
		return e
	}
	tests := []struct {
		name     string
		st       *ContactState
		ev       *events.Call
		changed  bool
		status   Status
		reason   string
		next     *time.Time
		recorded string // the attempt's outcome afterwards
	}{
		{"answered", state(1), ev(1, events.CallCompleted, func(e *events.Call) { e.CallStatus = "completed" }), true, StatusCompleted, "", nil, events.CallCompleted},
		{"completed without a call status", state(1), ev(1, events.CallCompleted, nil), true, StatusCompleted, "", nil, events.CallCompleted},
		{"busy re-queued much later", state(1), ev(1, events.CallCompleted, func(e *events.Call) { e.CallStatus = "busy" }), true, StatusPending, "busy", at(4 * time.Hour), events.CallCompleted},
		{"no-answer re-queued", state(2), ev(2, events.CallCompleted, func(e *events.Call) { e.CallStatus = "no-answer" }), true, StatusPending, "no-answer", at(4 * time.Hour), events.CallCompleted},
		{"busy on the last attempt", state(3), ev(3, events.CallCompleted, func(e *events.Call) { e.CallStatus = "busy" }), true, StatusExhausted, "busy", nil, events.CallCompleted},
		{"carrier failed the call", state(1), ev(1, events.CallCompleted, func(e *events.Call) { e.CallStatus = "failed" }), true, StatusFailed, "call_failed", nil, events.CallCompleted},
		{"skipped after the breaker's time", state(1), ev(1, events.CallSkipped, func(e *events.Call) {
			e.Reason, e.Service, e.RetryInMs = "circuit_open", "elevenlabs", 30000
		}), true, StatusSkipped, "circuit_open (elevenlabs)", at(30 * time.Second), events.CallSkipped},
		{"skipped without a time", state(1), ev(1, events.CallSkipped, nil), true, StatusSkipped, "circuit_open", at(time.Minute), events.CallSkipped},
		{"skipped on the last attempt", state(3), ev(3, events.CallSkipped, nil), true, StatusExhausted, "circuit_open", nil, events.CallSkipped},
		{"permanent failure", state(1), ev(1, events.CallFailed, func(e *events.Call) { e.Reason, e.Service = "permanent", "telephony" }), true, StatusFailed, "permanent (telephony)", nil, events.CallFailed},
		{"retries exhausted", state(2), ev(2, events.CallFailed, func(e *events.Call) { e.Reason = "retries_exhausted" }), true, StatusFailed, "retries_exhausted", nil, events.CallFailed},
		{"failed without a reason", state(1), ev(1, events.CallFailed, func(e *events.Call) { e.ErrorCategory = "transient" }), true, StatusFailed, "transient", nil, events.CallFailed},
		{"unknown call id", state(1), ev(2, events.CallCompleted, nil), false, StatusInProgress, "", nil, ""},
		{"an older attempt's late outcome is recorded only", func() *ContactState {
			st := state(2)
			st.History[0].Outcome = ""
			return st
		}(), ev(1, events.CallCompleted, func(e *events.Call) { e.CallStatus = "completed" }), true, StatusInProgress, "", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed := p.apply(tc.st, tc.ev, now)
			if changed != tc.changed {
				t.Fatalf("changed = %v, want %v", changed, tc.changed)
			}
			st := tc.st
			if st.Status != tc.status || st.LastReason != tc.reason {
				t.Errorf("status %s (%q), want %s (%q)", st.Status, st.LastReason, tc.status, tc.reason)
			}
			if (st.NextAttemptAt == nil) != (tc.next == nil) || st.NextAttemptAt != nil && !st.NextAttemptAt.Equal(*tc.next) {
				t.Errorf("next attempt %v, want %v", st.NextAttemptAt, tc.next)
			}
			if a := st.last(); tc.recorded != "" && a.Outcome != tc.recorded {
				t.Errorf("attempt outcome %q, want %q", a.Outcome, tc.recorded)
			}
			// Applying the same event again changes nothing: redeliveries are harmless.
			before, _ := json.Marshal(st)
			if p.apply(st, tc.ev, now.Add(time.Minute)) {
				t.Error("second apply changed the state")
			}
			if after, _ := json.Marshal(st); !bytes.Equal(before, after) {
				t.Errorf("second apply changed the state:\n%s\n%s", before, after)
			}
		})
	}

	t.Run("started then finished", func(t *testing.T) {
		st := state(1)
		st.Status = StatusQueued
		if !p.apply(st, ev(1, events.CallStarted, nil), now) || st.Status != StatusInProgress || st.last().StartedAt == nil {
			t.Fatalf("after started: %+v", st)
		}
		if p.apply(st, ev(1, events.CallStarted, nil), now) {
			t.Error("a second started event changed the state")
		}
		if !p.apply(st, ev(1, events.CallCompleted, nil), now) || st.Status != StatusCompleted {
			t.Errorf("after completed: %+v", st)
		}
	})
	t.Run("skipped honours the longer delay", func(t *testing.T) {
		p := policy{maxAttempts: 3, skippedDelay: 5 * time.Minute}
		st := state(1)
		p.apply(st, ev(1, events.CallSkipped, func(e *events.Call) { e.RetryInMs = 1000 }), now)
		if !st.NextAttemptAt.Equal(now.Add(5 * time.Minute)) {
			t.Errorf("next attempt %s, want the configured 5m", st.NextAttemptAt)
		}
	})
}

func TestSummary(t *testing.T) {
	next := time.Date(2026, 1, 10, 16, 0, 0, 0, time.UTC)
	list := []ContactState{
		{ContactID: "a", Contact: "+91888****882", Status: StatusFailed, Attempts: 1, MaxAttempts: 3, LastReason: "permanent (telephony)"},
		{ContactID: "b", Contact: "+1415****100", Status: StatusCompleted, Attempts: 1, MaxAttempts: 3},
		{ContactID: "c", Contact: "+1415****101", Status: StatusPending, Attempts: 1, MaxAttempts: 3, LastReason: "busy", NextAttemptAt: &next},
	}
	tests := []struct {
		list []ContactState
		line string
	}{
		{list[:0], "0/0 contacts succeeded (0.0%)"},
		{list[:2], "1/2 contacts succeeded (50.0%)"},
		{list, "1/3 contacts succeeded (33.3%)"},
		{[]ContactState{list[1], list[1], list[0]}, "2/3 contacts succeeded (66.7%)"},
	}
	for _, tc := range tests {
		if got := newSummary("x", tc.list).Line(); got != tc.line {
			t.Errorf("Line() = %q, want %q", got, tc.line)
		}
	}

	s := newSummary("seed", list)
	if s.Finished || s.Waiting != 1 || s.Failed != 1 {
		t.Errorf("summary = %+v", s)
	}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `Campaign seed
CONTACT        ID  STATUS     ATTEMPTS  REASON
+91888****882  a   failed     1/3       permanent (telephony)
+1415****100   b   completed  1/3       -
+1415****101   c   pending    1/3       busy; next attempt 2026-01-10 16:00:00 UTC
Not finished: 1 waiting, 0 in flight (run again to resume).
1/3 contacts succeeded (33.3%)
`
	if b.String() != want {
		t.Errorf("WriteText:\n%s\nwant\n%s", b.String(), want)
	}

	var j bytes.Buffer
	if err := s.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Campaign string         `json:"campaign"`
		Result   string         `json:"result"`
		Contacts []ContactState `json:"contacts"`
		Total    int            `json:"total"`
	}
	if err := json.Unmarshal(j.Bytes(), &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.Result != "1/3 contacts succeeded (33.3%)" || decoded.Total != 3 || len(decoded.Contacts) != 3 || decoded.Contacts[2].LastReason != "busy" {
		t.Errorf("JSON = %s", j.String())
	}
}

func TestProgressBar(t *testing.T) {
	clock := resiliencetest.NewClock(time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC))
	var out syncBuffer
	p := newProgress(&out, ProgressBar, clock, 2, 3)
	var tl tally
	tl.total = 2
	queued := &ContactState{ContactID: "a", Contact: "+1415****100", Status: StatusQueued, Attempts: 1, History: []Attempt{{Attempt: 1, CallID: "x-a-1"}}}
	tl.move(nil, queued)
	p.begin(tl)
	clock.Advance(75 * time.Second)
	done := queued.clone()
	done.Status = StatusCompleted
	done.History[0].Outcome = events.CallCompleted
	tl.move(queued, done)
	p.change(queued, done, tl)
	p.end()
	got := out.String()
	for _, want := range []string{
		"\r\x1b[K[                        ] 0/2 done | 0 succeeded | 0 failed | 0 waiting/re-queued | 1 in flight | 00:00",
		"\r\x1b[K[01:15] a +1415****100 attempt 1/3: completed\n",
		"\r\x1b[K[============            ] 1/2 done | 1 succeeded | 0 failed | 0 waiting/re-queued | 0 in flight | 01:15\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("bar output lacks %q:\n%q", want, got)
		}
	}
}
