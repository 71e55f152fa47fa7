package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/callagent/agent/events"
)

// tracer turns the events tailed on agent.> into lines a person can follow:
// one line per contact, growing as its call goes (elevenlabs 503 -> retry
// (5s) -> ...), and side lines for what the observer derives (status
// changes, alerts). On a terminal the current contact's line grows in place;
// elsewhere each step is printed as a complete line. It is safe for
// concurrent use: the tail subscription feeds it while the demo prints
// through it.
type tracer struct {
	mu  sync.Mutex
	out io.Writer
	// width is the terminal's width, nil when the output is not a terminal.
	width func() int
	start time.Time
	now   func() time.Time
	// quiet stops the live output; events are still recorded.
	quiet bool

	contacts map[string]*contactTrace // by contact id
	order    []*contactTrace          // by first call
	byCall   map[string]*contactTrace
	// failing holds the services whose latest attempt failed, across every
	// contact: the next success on one of them is a recovery.
	failing map[string]bool
	// health holds the latest probe outcome per caller and service, so only
	// changes are shown.
	health map[string]string
	alerts []*events.Alert
	// receipts maps an alert event id to its sinks' delivery outcomes.
	receipts map[string]map[string]string
	// audio is the size of each completed call's stored audio, by call id.
	audio map[string]int64
	// live is the contact whose line is open at the bottom of a terminal;
	// drawn is that line as it is on the screen, "" when none is.
	live  *contactTrace
	drawn string
}

// contactTrace is what the tracer knows of one contact.
type contactTrace struct {
	id, contact string
	caller      string
	calls       []string
	// steps are the contact's story in the canonical form of the final line.
	steps []string
	// opened is the time stamp of the contact's line on a terminal.
	opened string
	// lastFail is the latest failure step, so retries of the same failure
	// are not repeated on the line.
	lastFail string
	// pending are steps not yet printed on a non-terminal (a recovery, shown
	// with the outcome that follows it).
	pending []string
	// outcome is the latest call's terminal outcome, "" while it runs.
	outcome    string
	callStatus string
	reason     string
	// alerted: a firing alert named one of the contact's calls; next: the
	// queue moved on to another contact after this one did not succeed.
	alerted bool
	next    bool
}

// newTracer writes to out; width is the terminal's width, nil when out is
// not a terminal; now is the clock, nil for time.Now.
func newTracer(out io.Writer, width func() int, now func() time.Time) *tracer {
	if now == nil {
		now = time.Now
	}
	return &tracer{
		out: out, width: width, now: now, start: now(),
		contacts: map[string]*contactTrace{}, byCall: map[string]*contactTrace{},
		failing: map[string]bool{}, health: map[string]string{}, receipts: map[string]map[string]string{},
		audio: map[string]int64{},
	}
}

// handle takes one message from agent.>. Call requests (agent.dispatch.*)
// hold full phone numbers and are ignored; so is anything that does not
// decode.
func (t *tracer) handle(subject string, data []byte) {
	if strings.HasPrefix(subject, events.DispatchPrefix) {
		return
	}
	ev, err := events.Decode(data)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.apply(ev)
}

func (t *tracer) apply(ev events.Event) {
	switch e := ev.(type) {
	case *events.Call:
		t.call(e)
	case *events.Attempt:
		t.attempt(e)
	case *events.Retry:
		t.retry(e)
	case *events.Breaker:
		if e.Origin == "" { // a peer adopting it is the same transition
			t.side(fmt.Sprintf("%s: %s breaker %s -> %s%s", e.Source, e.Service, e.From, e.To, suffix(words(e.Reason))))
		}
	case *events.Health:
		key := e.Source + "/" + e.Service
		prev, seen := t.health[key]
		t.health[key] = e.Outcome
		if e.Outcome != prev && (seen || e.Outcome != events.OutcomeSuccess) {
			state := "ok again"
			if e.Outcome != events.OutcomeSuccess {
				state = "failing" + suffix(e.Message)
			}
			t.side(fmt.Sprintf("%s: %s health probe %s", e.Source, e.Service, state))
		}
	case *events.Status:
		if e.From == "" {
			return // a service first seen: not news
		}
		t.side(fmt.Sprintf("observer: %s %s -> %s%s", e.Service, orDash(e.From), e.To, suffix(e.Message)))
	case *events.Alert:
		t.alert(e)
	case *events.Delivery:
		t.delivery(e)
	}
}

func (t *tracer) contact(ref events.CallRef) *contactTrace {
	ct := t.byCall[ref.CallID]
	if ct == nil && ref.ContactID != "" {
		ct = t.contacts[ref.ContactID]
	}
	if ct == nil {
		id := cmp.Or(ref.ContactID, ref.CallID)
		ct = &contactTrace{id: id, contact: ref.Contact}
		t.contacts[id] = ct
		t.order = append(t.order, ct)
	}
	if ref.CallID != "" && t.byCall[ref.CallID] == nil {
		t.byCall[ref.CallID] = ct
		ct.calls = append(ct.calls, ref.CallID)
	}
	return ct
}

func (t *tracer) call(e *events.Call) {
	ct := t.contact(e.CallRef)
	switch e.Outcome {
	case events.CallStarted:
		// The queue has moved on: every contact that ended without success
		// did not hold it up.
		for _, o := range t.order {
			if o != ct && o.outcome != "" && !o.succeeded() {
				o.next = true
			}
		}
		ct.outcome, ct.callStatus, ct.reason, ct.lastFail = "", "", "", ""
		ct.caller = e.Source
		if e.Attempt > 1 {
			t.step(ct, fmt.Sprintf("attempt %d", e.Attempt))
		}
		t.line(ct, "call started on "+e.Source)
	case events.CallCompleted:
		ct.outcome, ct.callStatus = e.Outcome, e.CallStatus
		t.audio[e.CallID] = e.AudioBytes
		s := "success"
		if !ct.succeeded() {
			s = "call " + words(e.CallStatus)
		}
		t.outcome(ct, s, "")
	case events.CallFailed:
		ct.outcome, ct.reason = e.Outcome, e.Reason
		t.outcome(ct, "failed"+paren(words(cmp.Or(e.Reason, e.ErrorCategory))), failure(e.Service, e.StatusCode, "", e.ErrorCategory))
	case events.CallSkipped:
		ct.outcome, ct.reason = e.Outcome, e.Reason
		s := "skipped" + paren(words(cmp.Or(e.Reason, e.ErrorCategory)))
		if e.RetryInMs > 0 {
			s += ", re-queued in " + delay(e.RetryInMs)
		}
		t.outcome(ct, s, failure(e.Service, e.StatusCode, "", e.ErrorCategory))
	}
}

func (t *tracer) attempt(e *events.Attempt) {
	ct := t.contact(e.CallRef)
	switch {
	case e.Outcome == events.OutcomeSuccess:
		ct.lastFail = ""
		if t.failing[e.Service] {
			t.failing[e.Service] = false
			t.step(ct, "service recovered ("+e.Service+")")
		}
	case e.Outcome == events.OutcomeFailure:
		if e.ErrorCategory != events.CategoryCircuitOpen {
			t.failing[e.Service] = true
		}
		f := failure(e.Service, e.StatusCode, e.ErrorCode, e.ErrorCategory)
		if f != ct.lastFail {
			ct.lastFail = f
			t.step(ct, f)
		}
	}
}

func (t *tracer) retry(e *events.Retry) {
	ct := t.contact(e.CallRef)
	s := "retry (" + delay(e.RetryInMs) + ")"
	t.step(ct, s)
	if t.width == nil {
		t.line(ct, joinSteps(failure(e.Service, e.StatusCode, "", e.ErrorCategory), s))
		ct.pending = nil
	}
}

// outcome ends the contact's current call: on a terminal its line is done;
// elsewhere the line says what ended it.
func (t *tracer) outcome(ct *contactTrace, s, cause string) {
	if t.width == nil && len(ct.pending) == 0 && cause != "" {
		// The failure was on an earlier line (before a retry): say it again
		// so this line reads on its own.
		ct.pending = []string{cause}
	}
	t.step(ct, s)
	if t.width != nil {
		if t.live == ct {
			t.commit()
		}
		return
	}
	t.line(ct, joinSteps(ct.pending...))
	ct.pending = nil
}

func (t *tracer) alert(e *events.Alert) {
	t.alerts = append(t.alerts, e)
	if e.Status == events.AlertFiring {
		for _, id := range e.CallIDs {
			if ct := t.byCall[id]; ct != nil {
				ct.alerted = true
			}
		}
		calls := ""
		if len(e.CallIDs) > 0 {
			calls = " [" + strings.Join(e.CallIDs, ", ") + "]"
		}
		t.side(fmt.Sprintf("ALERT (%s): %s%s", e.Severity, e.Summary, calls))
		return
	}
	t.side("alert resolved: " + e.Summary)
}

func (t *tracer) delivery(e *events.Delivery) {
	if e.RefType != events.TypeAlert && e.Outcome != events.DeliveryDeadLetter {
		return
	}
	if t.receipts[e.RefID] == nil {
		t.receipts[e.RefID] = map[string]string{}
	}
	t.receipts[e.RefID][e.Sink] = e.Outcome
	if e.Outcome == events.DeliveryDeadLetter {
		t.side(fmt.Sprintf("observer: sink %s gave up on a %s after %d tries%s", e.Sink, cmp.Or(string(e.RefType), "record"), e.Attempts, suffix(e.Message)))
	}
}

// step adds a step to the contact's story; on a terminal it appears at once.
func (t *tracer) step(ct *contactTrace, s string) {
	ct.steps = append(ct.steps, s)
	if t.width == nil {
		ct.pending = append(ct.pending, s)
		return
	}
	t.show(ct)
}

// line prints one complete line about a contact; on a terminal it shows the
// contact's live line instead.
func (t *tracer) line(ct *contactTrace, s string) {
	if t.width != nil {
		t.show(ct)
		return
	}
	if !t.quiet {
		fmt.Fprintf(t.out, "%s %s: %s\n", t.stamp(), ct.label(), s)
	}
}

// show makes ct the terminal's live line, the one at the bottom that grows
// in place, and draws it. The line of another contact is left as it is.
func (t *tracer) show(ct *contactTrace) {
	if t.quiet {
		return
	}
	if t.live != ct {
		t.commit()
		t.live = ct
		ct.opened = t.stamp()
	}
	t.draw()
}

func (t *tracer) draw() {
	ct := t.live
	body := strings.Join(ct.steps, " -> ")
	if body == "" {
		body = "calling on " + ct.caller + "…"
	}
	t.erase()
	t.drawn = ct.opened + " " + ct.label() + ": " + body
	fmt.Fprint(t.out, t.drawn)
}

// erase clears the live line from the terminal, all the rows it wraps over.
func (t *tracer) erase() {
	if t.drawn == "" {
		return
	}
	w := max(t.width(), 1)
	rows := (utf8.RuneCountInString(t.drawn)-1)/w + 1
	fmt.Fprint(t.out, "\r")
	if rows > 1 {
		fmt.Fprintf(t.out, "\033[%dA", rows-1)
	}
	fmt.Fprint(t.out, "\033[J")
	t.drawn = ""
}

// commit ends the live line where it stands.
func (t *tracer) commit() {
	if t.drawn != "" {
		fmt.Fprintln(t.out)
		t.drawn = ""
	}
	t.live = nil
}

// side prints a line that is not about one contact. On a terminal it goes
// above the live line, which is drawn again below it.
func (t *tracer) side(s string) {
	if t.quiet {
		return
	}
	if t.live != nil {
		t.erase()
		fmt.Fprintf(t.out, "%s %s\n", t.stamp(), s)
		t.draw()
		return
	}
	fmt.Fprintf(t.out, "%s %s\n", t.stamp(), s)
}

// println prints a line of the demo's own, below the live line if one is
// open.
func (t *tracer) println(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.commit()
	fmt.Fprintln(t.out, s)
}

// silence stops the live output; what arrives later is still recorded.
func (t *tracer) silence() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.commit()
	t.quiet = true
}

func (t *tracer) stamp() string {
	return fmt.Sprintf("[%5.1fs]", t.now().Sub(t.start).Seconds())
}

// finalLine is the contact's whole story, in the canonical form:
// Contact 1 (+1415****101): elevenlabs 503 -> retry (5s) -> ... -> failed
// (retries exhausted) -> alert -> next contact. ok is false when the tracer
// saw nothing of the contact.
func (t *tracer) finalLine(contactID string) (line string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ct := t.contacts[contactID]
	if ct == nil {
		return "", false
	}
	steps := slices.Clone(ct.steps)
	if ct.alerted {
		steps = append(steps, "alert")
	}
	if ct.next && !ct.succeeded() {
		steps = append(steps, "next contact")
	}
	return ct.label() + ": " + strings.Join(steps, " -> "), true
}

// audioBytes is the size of callID's stored audio, from its completed
// call event; 0 when none was stored or the call did not complete.
func (t *tracer) audioBytes(callID string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.audio[callID]
}

// ended reports whether the tracer has seen the terminal outcome of callID.
func (t *tracer) ended(callID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ct := t.byCall[callID]
	return ct != nil && ct.outcome != "" && ct.calls[len(ct.calls)-1] == callID
}

// firing returns the firing alert notifications seen so far.
func (t *tracer) firing() []*events.Alert {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*events.Alert
	for _, a := range t.alerts {
		if a.Status == events.AlertFiring {
			out = append(out, a)
		}
	}
	return out
}

// allAlerts returns every alert notification seen so far, firing or resolved.
func (t *tracer) allAlerts() []*events.Alert {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.alerts)
}

// receipt returns a sink's delivery outcome for an alert, "" when none yet.
func (t *tracer) receipt(alertID, sink string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.receipts[alertID][sink]
}

func (ct *contactTrace) label() string {
	l := "Contact " + ct.id
	if ct.contact != "" {
		l += " (" + ct.contact + ")"
	}
	return l
}

func (ct *contactTrace) succeeded() bool {
	return ct.outcome == events.CallCompleted && (ct.callStatus == "" || ct.callStatus == "completed")
}

// failure names a failed attempt: "elevenlabs 503", "crm timeout".
func failure(service string, status int, code, category string) string {
	if service == "" {
		return ""
	}
	switch {
	case category == events.CategoryCircuitOpen:
		return service + " circuit open"
	case status != 0:
		return service + " " + strconv.Itoa(status)
	case code != "":
		return service + " " + code
	case category != "":
		return service + " " + category + " error"
	}
	return service + " error"
}

// delay writes a retry delay as people say it: 5s, 10s, 50ms, 1.5s.
func delay(ms int64) string {
	return (time.Duration(ms) * time.Millisecond).String()
}

func joinSteps(steps ...string) string {
	var keep []string
	for _, s := range steps {
		if s != "" {
			keep = append(keep, s)
		}
	}
	return strings.Join(keep, " -> ")
}

func words(s string) string { return strings.ReplaceAll(s, "_", " ") }

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

func orDash(s string) string { return cmp.Or(s, "-") }
