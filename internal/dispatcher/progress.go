package dispatcher

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/resilience"
)

// ProgressMode says how progress is shown.
type ProgressMode int

const (
	// ProgressAuto draws a bar when the writer is a terminal and writes lines
	// otherwise.
	ProgressAuto ProgressMode = iota
	// ProgressBar redraws one status line, with outcome lines printed above it.
	ProgressBar
	// ProgressLines writes one plain line per outcome, for logs and pipes.
	ProgressLines
	// ProgressOff shows nothing.
	ProgressOff
)

// tally counts a run's contacts by status.
type tally struct {
	total  int
	counts map[Status]int
}

func (t *tally) move(from, to *ContactState) {
	if t.counts == nil {
		t.counts = map[Status]int{}
	}
	if from != nil {
		t.counts[from.Status]--
	}
	t.counts[to.Status]++
}

func (t tally) terminal() int {
	return t.counts[StatusCompleted] + t.counts[StatusFailed] + t.counts[StatusExhausted] +
		t.counts[StatusCancelled] + t.counts[StatusSuppressed]
}

// progress reports a run as it goes. Its methods are called with the run's
// lock held, so they see changes in order.
type progress struct {
	w           io.Writer
	bar         bool
	clock       resilience.Clock
	maxAttempts int
	start       time.Time

	mu     sync.Mutex
	last   tally
	ticker *time.Ticker
	done   chan struct{}
}

func newProgress(w io.Writer, mode ProgressMode, clock resilience.Clock, total, maxAttempts int) *progress {
	p := &progress{w: w, clock: clock, maxAttempts: maxAttempts, last: tally{total: total}}
	switch {
	case w == nil || mode == ProgressOff:
		p.w = nil
	case mode == ProgressBar:
		p.bar = true
	case mode == ProgressAuto:
		p.bar = isTerminal(w)
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// begin starts the clock and, for a bar, a ticker so elapsed time moves even
// when nothing happens.
func (p *progress) begin(t tally) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start = p.clock.Now()
	p.last = t
	if !p.bar {
		return
	}
	p.drawLocked()
	p.ticker = time.NewTicker(time.Second)
	p.done = make(chan struct{})
	go func(tick <-chan time.Time, done <-chan struct{}) {
		for {
			select {
			case <-done:
				return
			case <-tick:
				p.mu.Lock()
				p.drawLocked()
				p.mu.Unlock()
			}
		}
	}(p.ticker.C, p.done)
}

// end stops the ticker and leaves the last bar on its own line.
func (p *progress) end() {
	if p.w == nil || !p.bar {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ticker != nil {
		p.ticker.Stop()
		close(p.done)
		p.ticker = nil
	}
	p.drawLocked()
	fmt.Fprintln(p.w)
}

// change reports one contact's change of state.
func (p *progress) change(old, st *ContactState, t tally) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = t
	lines := describe(old, st, p.maxAttempts, p.clock.Now())
	if p.start.IsZero() {
		// Registration, before the run began: nothing to report yet.
		return
	}
	var b strings.Builder
	for _, l := range lines {
		if p.bar {
			b.WriteString("\r\x1b[K")
		}
		fmt.Fprintf(&b, "[%s] %s\n", elapsed(p.clock.Now().Sub(p.start)), l)
	}
	if b.Len() > 0 {
		_, _ = io.WriteString(p.w, b.String())
	}
	if p.bar {
		p.drawLocked()
	}
}

func (p *progress) drawLocked() {
	t := p.last
	done := t.terminal()
	const width = 24
	filled := 0
	if t.total > 0 {
		filled = done * width / t.total
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	waiting := t.counts[StatusPending] + t.counts[StatusPostponed] + t.counts[StatusSkipped]
	failed := t.counts[StatusFailed] + t.counts[StatusExhausted]
	inFlight := t.counts[StatusQueued] + t.counts[StatusInProgress]
	stopped := ""
	if n := t.counts[StatusCancelled] + t.counts[StatusSuppressed]; n > 0 {
		stopped = fmt.Sprintf(" | %d cancelled/suppressed", n)
	}
	fmt.Fprintf(p.w, "\r\x1b[K[%s] %d/%d done | %d succeeded | %d failed%s | %d waiting/re-queued | %d in flight | %s",
		bar, done, t.total, t.counts[StatusCompleted], failed, stopped, waiting, inFlight, elapsed(p.clock.Now().Sub(p.start)))
}

// describe says in a line what happened to a contact between two states:
// each attempt that got its outcome, and a postponement.
func describe(old, st *ContactState, maxAttempts int, now time.Time) []string {
	var lines []string
	who := st.ContactID + " " + st.Contact
	for i := range st.History {
		a := &st.History[i]
		if !a.done() || (old != nil && i < len(old.History) && old.History[i].done()) {
			continue
		}
		l := fmt.Sprintf("%s attempt %d/%d: %s", who, a.Attempt, max(maxAttempts, st.MaxAttempts), outcomeText(a))
		if i == len(st.History)-1 {
			switch st.Status {
			case StatusPending, StatusSkipped:
				if st.NextAttemptAt != nil {
					l += fmt.Sprintf(", re-queued for %s (in %s)", st.NextAttemptAt.UTC().Format(time.DateTime+" MST"), st.NextAttemptAt.Sub(now).Round(time.Second))
				}
			case StatusExhausted:
				l += ", no attempts left (exhausted)"
			}
		}
		lines = append(lines, l)
	}
	if st.Status == StatusPostponed && st.NextAttemptAt != nil &&
		(old == nil || old.Status != StatusPostponed || old.NextAttemptAt == nil || !old.NextAttemptAt.Equal(*st.NextAttemptAt)) {
		lines = append(lines, fmt.Sprintf("%s postponed to %s: %s", who, st.NextAttemptAt.UTC().Format(time.DateTime+" MST"), st.LastReason))
	}
	return lines
}

func outcomeText(a *Attempt) string {
	switch {
	case a.Outcome == events.CallCompleted && (a.CallStatus == "" || a.CallStatus == callStatusCompleted):
		return "completed"
	case a.Outcome == events.CallCompleted:
		return a.CallStatus
	}
	s := a.Outcome
	if a.Reason != "" {
		s += ": " + withService(a.Reason, a.Service)
	}
	return s
}

func elapsed(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", m, s)
}
