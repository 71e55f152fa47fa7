// Package render turns events into the plain text a person reads in an
// email or a chat message: a title line and detail lines. Sinks add their
// own markup around it; the text itself carries none, so it is safe to
// escape for any format.
package render

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/callagent/agent/events"
)

// Text is one event rendered for people.
type Text struct {
	// Title is one line: severity, state and summary for an alert.
	Title string
	// Lines are the details, one per line, without markup.
	Lines []string
	// Service is the service the event is about, for grouping; may be empty.
	Service string
	// Severity is the alert's severity, or "" for other events.
	Severity string
	// Resolved is true for an alert's resolution.
	Resolved bool
}

// String is the title followed by the detail lines.
func (t Text) String() string {
	return strings.Join(append([]string{t.Title}, t.Lines...), "\n")
}

// timeLayout is how times read in a message: to the second, in UTC.
const timeLayout = "2006-01-02 15:04:05 UTC"

// Event renders ev: alerts in full, other events as their log line.
func Event(ev events.Event) Text {
	if a, ok := ev.(*events.Alert); ok {
		return Alert(a)
	}
	r := events.LogRecordOf(ev)
	t := Text{Service: r.Service, Title: string(r.Type)}
	if r.Service != "" {
		t.Title += " " + r.Service
	}
	t.Title += ": " + r.Message
	add := func(k, v string) {
		if v != "" && v != "0" {
			t.Lines = append(t.Lines, k+": "+v)
		}
	}
	add("time", r.Timestamp.UTC().Format(timeLayout))
	add("error category", r.ErrorCategory)
	add("retry count", fmt.Sprint(r.RetryCount))
	add("circuit breaker", r.BreakerState)
	add("status code", fmt.Sprint(r.StatusCode))
	add("call", r.CallID)
	add("contact", r.Contact)
	add("event", r.EventID)
	return t
}

// Alert renders an alert or its resolution.
func Alert(a *events.Alert) Text {
	t := Text{Service: a.Service, Severity: a.Severity, Resolved: a.Status == events.AlertResolved}
	summary := a.Summary
	if summary == "" {
		summary = a.Rule
	}
	if t.Resolved {
		t.Title = "RESOLVED: " + summary
	} else {
		t.Title = strings.ToUpper(a.Severity) + ": " + summary
	}
	if a.Message != "" {
		t.Lines = append(t.Lines, a.Message)
	}
	if a.Service != "" {
		t.Lines = append(t.Lines, "service: "+a.Service)
	}
	t.Lines = append(t.Lines, "rule: "+a.Rule)
	if !a.StartsAt.IsZero() {
		t.Lines = append(t.Lines, "since: "+a.StartsAt.UTC().Format(timeLayout))
	}
	if a.EndsAt != nil && !a.EndsAt.IsZero() {
		line := "resolved: " + a.EndsAt.UTC().Format(timeLayout)
		if d := a.EndsAt.Sub(a.StartsAt); d > 0 && !a.StartsAt.IsZero() {
			line += fmt.Sprintf(" (after %s)", d.Round(time.Second))
		}
		t.Lines = append(t.Lines, line)
	}
	if a.Count > 1 {
		t.Lines = append(t.Lines, fmt.Sprintf("occurrences: %d", a.Count))
	}
	if len(a.Labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
			kv = append(kv, k+"="+a.Labels[k])
		}
		t.Lines = append(t.Lines, "labels: "+strings.Join(kv, ", "))
	}
	if len(a.CallIDs) > 0 {
		t.Lines = append(t.Lines, "calls: "+strings.Join(a.CallIDs, ", "))
	}
	return t
}
