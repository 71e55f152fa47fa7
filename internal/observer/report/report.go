// Package report turns a window of events, and the statuses and alerts the
// observer derived from them, into a post-mortem: per service when the impact
// began and ended, how long it took to detect and to recover, which calls it
// affected and which alerts fired, and a timeline of what happened. It reads
// events only; it neither fetches nor publishes them.
package report

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/callagent/agent/events"
)

// DefaultTimelineLimit caps the timeline of a report built with zero Limit.
const DefaultTimelineLimit = 500

// Duration is a time.Duration that reads well in JSON ("36.5s").
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// Report is a post-mortem of one window.
type Report struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Events counts the callers' events in the window.
	Events   int         `json:"events"`
	Calls    Calls       `json:"calls"`
	Services []Service   `json:"services"`
	Alerts   []AlertLine `json:"alerts"`
	Timeline []Entry     `json:"timeline"`
	// TimelineOmitted counts the entries left out past the limit.
	TimelineOmitted int `json:"timeline_omitted,omitempty"`
}

// Calls counts distinct calls by their last outcome in the window.
type Calls struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
	// InFlight started in the window without an outcome in it.
	InFlight int `json:"in_flight"`
}

// Service is one service's share of the post-mortem.
type Service struct {
	Service string `json:"service"`
	// ImpactBegan is the first sign of trouble (a failed attempt or probe, a
	// failed or skipped call, an open breaker, a bad status); ImpactEnded the
	// first sign of health after the last sign of trouble, nil if the window
	// ends before one.
	ImpactBegan *time.Time `json:"impact_began,omitempty"`
	ImpactEnded *time.Time `json:"impact_ended,omitempty"`
	// TimeToDetect runs from the impact's start to the first alert sent for
	// the service; TimeToRecover from its start to its end.
	TimeToDetect  *Duration `json:"time_to_detect,omitempty"`
	TimeToRecover *Duration `json:"time_to_recover,omitempty"`
	// CallsAffected counts distinct calls with a failed attempt against the
	// service or failed or skipped because of it.
	CallsAffected int      `json:"calls_affected"`
	CallIDs       []string `json:"call_ids,omitempty"`
	Attempts      int      `json:"attempts"`
	Failures      int      `json:"failures"`
	Retries       int      `json:"retries"`
	// AlertsFired counts firing notifications, AlertsResolved resolutions.
	AlertsFired    int      `json:"alerts_fired"`
	AlertsResolved int      `json:"alerts_resolved"`
	Rules          []string `json:"rules,omitempty"`
	BreakerOpened  int      `json:"breaker_opened"`
	FinalStatus    string   `json:"final_status,omitempty"`
	FinalBreaker   string   `json:"final_breaker,omitempty"`
}

// AlertLine is one alert notification.
type AlertLine struct {
	Time        time.Time `json:"time"`
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	Severity    string    `json:"severity"`
	Rule        string    `json:"rule"`
	Service     string    `json:"service,omitempty"`
	Summary     string    `json:"summary"`
	Message     string    `json:"message,omitempty"`
	Fingerprint string    `json:"fingerprint"`
	Count       int       `json:"count,omitempty"`
	CallIDs     []string  `json:"call_ids,omitempty"`
}

// Entry is one line of the timeline.
type Entry struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Service string    `json:"service,omitempty"`
	CallID  string    `json:"call_id,omitempty"`
	Text    string    `json:"text"`
}

// Builder accumulates events into a report. Feed it the window's events and
// what was derived from them, in order, with Add.
type Builder struct {
	from, to time.Time
	limit    int
	events   int
	calls    map[string]string // call id -> last outcome
	services map[string]*tally
	alerts   []AlertLine
	timeline []Entry
	omitted  int
}

type tally struct {
	Service
	lastBad, recovered time.Time
	affected           map[string]bool
	rules              map[string]bool
}

// New returns a builder for the window [from, to]. limit caps the timeline
// (0 means DefaultTimelineLimit, negative means no limit).
func New(from, to time.Time, limit int) *Builder {
	if limit == 0 {
		limit = DefaultTimelineLimit
	}
	return &Builder{from: from, to: to, limit: limit, calls: map[string]string{}, services: map[string]*tally{}}
}

func (b *Builder) service(name string) *tally {
	t := b.services[name]
	if t == nil {
		t = &tally{Service: Service{Service: name}, affected: map[string]bool{}, rules: map[string]bool{}}
		b.services[name] = t
	}
	return t
}

// Add takes one event: a caller's event (call, attempt, retry, breaker,
// health) or one the observer derived (status, alert). Others are counted
// and otherwise ignored.
func (b *Builder) Add(ev events.Event) {
	h := ev.Head()
	switch ev.(type) {
	case *events.Call, *events.Attempt, *events.Retry, *events.Breaker, *events.Health:
		b.events++
	}
	at := h.Time
	switch e := ev.(type) {
	case *events.Call:
		switch e.Outcome {
		case events.CallStarted:
			if _, ok := b.calls[e.CallID]; !ok {
				b.calls[e.CallID] = e.Outcome
			}
			return
		default:
			b.calls[e.CallID] = e.Outcome
		}
		text := "call " + e.CallID + " " + e.Outcome
		if e.Service != "" && e.Outcome != events.CallCompleted {
			s := b.service(e.Service)
			s.bad(at)
			s.affect(e.CallID)
			text += ": " + joinNonEmpty(", ", e.Reason, e.Service, httpStatus(e.StatusCode))
		}
		if e.CallStatus != "" && e.CallStatus != "completed" {
			text += " (" + e.CallStatus + ")"
		}
		b.entry(at, "call", e.Service, e.CallID, text)
	case *events.Attempt:
		s := b.service(e.Service)
		switch {
		case e.Outcome == events.OutcomeCanceled || e.ErrorCategory == events.CategoryCircuitOpen:
		case e.Outcome == events.OutcomeFailure:
			s.Attempts++
			s.Failures++
			s.bad(at)
			s.affect(e.CallID)
			b.entry(at, "attempt", e.Service, e.CallID, fmt.Sprintf("%s attempt %s failed: %s", e.Service,
				of(e.Attempt, e.MaxAttempts), joinNonEmpty(" ", e.ErrorCategory, httpStatus(e.StatusCode), e.ErrorCode, quote(e.Message))))
		default:
			s.Attempts++
			s.good(at)
		}
	case *events.Retry:
		s := b.service(e.Service)
		s.Retries++
		b.entry(at, "retry", e.Service, e.CallID, fmt.Sprintf("%s retry after attempt %s in %s",
			e.Service, of(e.Attempt, e.MaxAttempts), time.Duration(e.RetryInMs)*time.Millisecond))
	case *events.Breaker:
		s := b.service(e.Service)
		s.FinalBreaker = e.To
		switch e.To {
		case events.BreakerOpen:
			s.bad(at)
			if e.Origin == "" {
				s.BreakerOpened++
			}
		case events.BreakerClosed:
			s.good(at)
		}
		text := fmt.Sprintf("%s breaker %s -> %s", e.Service, e.From, e.To)
		if e.Origin != "" {
			text += " (adopted from " + e.Origin + ")"
		} else if e.Reason != "" {
			text += " (" + e.Reason + ")"
		}
		b.entry(at, "breaker", e.Service, "", text+" on "+h.Source)
	case *events.Health:
		s := b.service(e.Service)
		if e.Outcome == events.OutcomeFailure {
			s.bad(at)
			b.entry(at, "health", e.Service, "", fmt.Sprintf("%s health probe failed %s", e.Service, joinNonEmpty(" ", httpStatus(e.StatusCode), quote(e.Message))))
		}
	case *events.Status:
		s := b.service(e.Service)
		s.FinalStatus = e.To
		switch {
		case e.To != events.StatusUp:
			s.bad(at)
		case e.From != "": // a service first seen up has not recovered from anything
			s.good(at)
		}
		b.entry(at, "status", e.Service, "", fmt.Sprintf("%s status %s -> %s: %s", e.Service, orElse(e.From, "unknown"), e.To, e.Message))
	case *events.Alert:
		b.alerts = append(b.alerts, AlertLine{
			Time: at, ID: h.ID, Status: e.Status, Severity: e.Severity, Rule: e.Rule, Service: e.Service,
			Summary: e.Summary, Message: e.Message, Fingerprint: e.Fingerprint, Count: e.Count, CallIDs: e.CallIDs,
		})
		if e.Service != "" {
			s := b.service(e.Service)
			s.rules[e.Rule] = true
			if e.Status == events.AlertFiring {
				s.AlertsFired++
				if s.ImpactBegan != nil && s.TimeToDetect == nil && !at.Before(*s.ImpactBegan) {
					d := Duration(at.Sub(*s.ImpactBegan))
					s.TimeToDetect = &d
				}
			} else {
				s.AlertsResolved++
			}
		}
		text := fmt.Sprintf("ALERT %s %s %s: %s", e.Status, e.Severity, e.Rule, e.Summary)
		if e.Count > 1 {
			text += fmt.Sprintf(" (%d occurrences)", e.Count)
		}
		b.entry(at, "alert", e.Service, "", text)
	}
}

func (t *tally) bad(at time.Time) {
	if t.ImpactBegan == nil {
		a := at
		t.ImpactBegan = &a
	}
	if at.After(t.lastBad) {
		t.lastBad = at
	}
	t.recovered = time.Time{}
}

func (t *tally) good(at time.Time) {
	if t.ImpactBegan != nil && t.recovered.IsZero() && !at.Before(t.lastBad) {
		t.recovered = at
	}
}

func (t *tally) affect(call string) {
	if call != "" {
		t.affected[call] = true
	}
}

func (b *Builder) entry(at time.Time, kind, service, call, text string) {
	if b.limit > 0 && len(b.timeline) >= b.limit {
		b.omitted++
		return
	}
	b.timeline = append(b.timeline, Entry{Time: at, Kind: kind, Service: service, CallID: call, Text: text})
}

// Report returns the post-mortem of what was added so far.
func (b *Builder) Report() *Report {
	r := &Report{From: b.from, To: b.to, Events: b.events, Alerts: b.alerts, Timeline: b.timeline, TimelineOmitted: b.omitted}
	if r.Alerts == nil {
		r.Alerts = []AlertLine{}
	}
	if r.Timeline == nil {
		r.Timeline = []Entry{}
	}
	for _, outcome := range b.calls {
		r.Calls.Total++
		switch outcome {
		case events.CallCompleted:
			r.Calls.Completed++
		case events.CallFailed:
			r.Calls.Failed++
		case events.CallSkipped:
			r.Calls.Skipped++
		default:
			r.Calls.InFlight++
		}
	}
	r.Services = []Service{}
	for _, name := range slices.Sorted(maps.Keys(b.services)) {
		t := b.services[name]
		s := t.Service
		if !t.recovered.IsZero() {
			end := t.recovered
			s.ImpactEnded = &end
			d := Duration(end.Sub(*s.ImpactBegan))
			s.TimeToRecover = &d
		}
		s.CallIDs = slices.Sorted(maps.Keys(t.affected))
		s.CallsAffected = len(s.CallIDs)
		s.Rules = slices.Sorted(maps.Keys(t.rules))
		r.Services = append(r.Services, s)
	}
	slices.SortStableFunc(r.Timeline, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	slices.SortStableFunc(r.Alerts, func(a, b AlertLine) int { return a.Time.Compare(b.Time) })
	return r
}

// Service returns the named service's part, or nil.
func (r *Report) Service(name string) *Service {
	for i := range r.Services {
		if r.Services[i].Service == name {
			return &r.Services[i]
		}
	}
	return nil
}

// Fired counts the firing notifications of the report.
func (r *Report) Fired() int {
	n := 0
	for _, a := range r.Alerts {
		if a.Status == events.AlertFiring {
			n++
		}
	}
	return n
}

func httpStatus(code int) string {
	if code == 0 {
		return ""
	}
	return fmt.Sprintf("HTTP %d", code)
}

func quote(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf("%q", s)
}

func of(n, limit int) string {
	if limit > 0 {
		return fmt.Sprintf("%d/%d", n, limit)
	}
	return fmt.Sprint(n)
}

func orElse(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func joinNonEmpty(sep string, parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, sep)
}
