package dispatcher

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultCallingWindow is when telemarketing calls are allowed in the
// callee's local time (the US TCPA's 8 a.m. to 9 p.m.).
const DefaultCallingWindow = "08:00-21:00"

// Window is a daily calling window in local time: [Start, End) in minutes
// after midnight. A window whose End is before its Start spans midnight; one
// from 00:00 to 24:00 is always open.
type Window struct {
	Start, End int
}

// ParseWindow parses "HH:MM-HH:MM" (24-hour clock; 24:00 allowed as the end).
func ParseWindow(s string) (Window, error) {
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("calling window %q: want HH:MM-HH:MM, such as %s", s, DefaultCallingWindow)
	}
	start, err := parseClock(from)
	if err != nil {
		return Window{}, fmt.Errorf("calling window %q: start: %w", s, err)
	}
	end, err := parseClock(to)
	if err != nil {
		return Window{}, fmt.Errorf("calling window %q: end: %w", s, err)
	}
	if start == end {
		return Window{}, fmt.Errorf("calling window %q: start and end are the same (use 00:00-24:00 for always)", s)
	}
	if start == 24*60 {
		return Window{}, fmt.Errorf("calling window %q: start: 24:00 is only allowed as the end", s)
	}
	return Window{Start: start, End: end}, nil
}

func parseClock(s string) (int, error) {
	var h, m int
	s = strings.TrimSpace(s)
	if n, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || n != 2 || len(s) != 5 {
		return 0, errors.New("want HH:MM")
	}
	if h < 0 || h > 24 || m < 0 || m > 59 || h == 24 && m != 0 {
		return 0, fmt.Errorf("%s is not a time of day", s)
	}
	return h*60 + m, nil
}

func (w Window) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
}

// Open reports whether t, read in its own location, is inside the window.
func (w Window) Open(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

// Next returns t if the window is open at t, or else the moment it next
// opens, in t's location. Days are counted on the local calendar, so the
// opening stays at the same wall-clock time across daylight saving changes.
func (w Window) Next(t time.Time) time.Time {
	if w.Open(t) {
		return t
	}
	y, mo, d := t.Date()
	open := time.Date(y, mo, d, w.Start/60, w.Start%60, 0, 0, t.Location())
	if !open.After(t) {
		open = time.Date(y, mo, d+1, w.Start/60, w.Start%60, 0, 0, t.Location())
	}
	return open
}
