// Package rules is the observer's brain: from the event stream it derives each
// service's status (up, degraded, down) and the alerts a person must see, with
// their grouping, deduplication, reminders and resolutions.
//
// The engine runs on event time: its clock is the time of the events it is
// given (Apply) and moves on only when told (Advance), so the same events give
// the same statuses and alerts in a live run and in a replay, and every alert
// and status event gets an id derived from what it says (fingerprint, status,
// start) rather than a random one. An observer that dies after publishing and
// re-derives the same events therefore publishes the same ids again, which the
// stream's duplicate window drops.
//
// An Engine is not safe for concurrent use; its state serialises to JSON
// (MarshalJSON, UnmarshalJSON) so it survives a restart.
package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// Rule names: the alert's rule field.
const (
	RulePermanentFailure = "permanent_failure"
	RuleRetriesExhausted = "retries_exhausted"
	RuleBreakerOpen      = "breaker_open"
	RuleServiceDown      = "service_down"
	RuleErrorRate        = "error_rate"
	RuleRetryRate        = "retry_rate"
	RuleLatency          = "latency"
)

// Thresholds of the status derivation that the configuration does not carry.
const (
	// DegradedAfter consecutive failed attempts make a service degraded: one
	// failure that a retry fixes is not worth a status change.
	DegradedAfter = 2
	// RecoveredAfter consecutive successes end a degradation caused by a high
	// error or retry rate, so a flapping service does not flap its status.
	RecoveredAfter = 2
	// DownAfterProbes consecutive failed health probes make a service down:
	// one lost probe is not an outage.
	DownAfterProbes = 2
	// LatencyShare makes the latency rule a p90 rule: it fires when more than
	// this share of attempts in the window is slower than rules.latency.
	LatencyShare = 0.10
	// MaxCallIDs caps the call ids one notification lists.
	MaxCallIDs = 20
)

// Output is one event the engine derived: a status change or an alert
// notification (firing or resolved). Exactly one of Status and Alert is set;
// its id and time are set, its source is left to the publisher.
type Output struct {
	Status *events.Status
	Alert  *events.Alert
	// Cause is the id of the event that led to it; empty when the passing of
	// time did (a group flushed, a service down for too long, a rate fell back).
	Cause string
}

// Engine derives statuses and alerts. Create it with New.
type Engine struct {
	cfg      config.Rules
	span     span
	clock    time.Time
	services map[string]*service
	alerts   map[string]*alert // by fingerprint: the active alerts
	// fps caches the fingerprints of the alerts without labels, which the
	// rate rules look up for every event.
	fps map[fpKey]string
}

type fpKey struct{ rule, service string }

// New returns an engine with the thresholds of cfg. A zero field takes the
// default of config.Default, except GroupWait: zero (or negative) sends every
// notification at once, as group_wait: 0s does in the configuration. A
// negative RepeatInterval never repeats a notification.
func New(cfg config.Rules) *Engine {
	cfg = withDefaults(cfg)
	return &Engine{
		cfg:      cfg,
		span:     newSpan(cfg.RateWindow),
		services: map[string]*service{},
		alerts:   map[string]*alert{},
		fps:      map[fpKey]string{},
	}
}

func withDefaults(cfg config.Rules) config.Rules {
	d := config.Default().Observer.Rules
	if cfg.DownFor == 0 {
		cfg.DownFor = d.DownFor
	}
	if cfg.ErrorRate == 0 {
		cfg.ErrorRate = d.ErrorRate
	}
	if cfg.RetryRate == 0 {
		cfg.RetryRate = d.RetryRate
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = d.RateWindow
	}
	if cfg.RateMinRequests == 0 {
		cfg.RateMinRequests = d.RateMinRequests
	}
	if cfg.Latency == 0 {
		cfg.Latency = d.Latency
	}
	if cfg.RepeatInterval == 0 {
		cfg.RepeatInterval = d.RepeatInterval
	}
	return cfg
}

// Clock is the engine's event time: the latest of the events applied and the
// times advanced to.
func (e *Engine) Clock() time.Time { return e.clock }

// Apply derives what one event changes. The clock first advances to the
// event's time, firing what falls due before it. What the event causes is
// dated by the event's own time, even when it is older than the clock (it
// arrived after the clock was advanced past it), so that the same event
// derives the same ids however the clock was moved. Status, alert and
// delivery events, which the observer itself publishes, change nothing.
func (e *Engine) Apply(ev events.Event) []Output {
	h := ev.Head()
	outs := e.Advance(h.Time)
	at := h.Time
	cause := h.ID
	switch x := ev.(type) {
	case *events.Attempt:
		outs = append(outs, e.attempt(x, at, cause)...)
	case *events.Retry:
		svc := e.service(x.Service)
		svc.Window.add(e.span, e.clock, h.Time, func(b *bucket) { b.Retries++ })
		outs = append(outs, e.evaluate(svc, at, cause)...)
	case *events.Breaker:
		outs = append(outs, e.breaker(x, at, cause)...)
	case *events.Health:
		svc := e.service(x.Service)
		svc.Health = x.Outcome
		if x.Outcome == events.OutcomeSuccess {
			svc.HealthFailures = 0
		} else {
			svc.HealthFailures++
		}
		outs = append(outs, e.evaluate(svc, at, cause)...)
	case *events.Call:
		outs = append(outs, e.call(x, at, cause)...)
	}
	return outs
}

// Advance moves the clock to t, firing in time order what falls due on the
// way: group flushes, reminders, services down for too long, rates falling
// back as their window slides. Each fires at its own due time, whatever t is,
// so advancing in many small steps or one large one gives the same outputs.
// A t before the clock moves nothing; it only fires what is overdue.
func (e *Engine) Advance(t time.Time) []Output {
	var outs []Output
	for {
		tm, ok := e.nextTimer()
		if !ok || tm.at.After(t) {
			break
		}
		if tm.at.After(e.clock) {
			e.clock = tm.at
		}
		outs = append(outs, e.fire(tm)...)
	}
	if t.After(e.clock) {
		e.clock = t
	}
	return outs
}

func (e *Engine) service(name string) *service {
	s := e.services[name]
	if s == nil {
		s = &service{Name: name}
		e.services[name] = s
	}
	return s
}

func (e *Engine) attempt(a *events.Attempt, at time.Time, cause string) []Output {
	svc := e.service(a.Service)
	// A cancelled attempt (our own shutdown) and a call the breaker refused
	// say nothing about the service itself.
	if a.Outcome == events.OutcomeCanceled || a.ErrorCategory == events.CategoryCircuitOpen {
		return e.evaluate(svc, at, cause)
	}
	failed := a.Outcome == events.OutcomeFailure
	slow := time.Duration(a.LatencyMs)*time.Millisecond > e.cfg.Latency
	svc.Window.add(e.span, e.clock, a.Time, func(b *bucket) {
		b.Attempts++
		if failed {
			b.Failures++
		}
		if slow {
			b.Slow++
		}
	})
	var outs []Output
	if failed {
		svc.ConsecFailures++
		svc.ConsecSuccesses = 0
		if a.ErrorCategory == events.CategoryPermanent {
			cause := permanentCause(a.ErrorCode, a.StatusCode)
			outs = append(outs, e.occur(occurrence{
				rule: RulePermanentFailure, service: a.Service, severity: events.SeverityCritical,
				labels:  permanentLabels(a),
				summary: a.Service + ": permanent failure: " + firstClause(cause),
				message: joinNonEmpty(": ", cause, a.Message),
				at:      at, cause: a.ID, callID: a.CallID,
			})...)
		}
	} else {
		svc.ConsecSuccesses++
		svc.ConsecFailures = 0
		// A success proves the service answers, whatever the probes say.
		svc.HealthFailures = 0
		why := "an attempt succeeded"
		if a.CallID != "" {
			why += " on " + a.CallID
		}
		outs = append(outs, e.resolveRule(RulePermanentFailure, a.Service, at, why)...)
		outs = append(outs, e.resolveRule(RuleRetriesExhausted, a.Service, at, why)...)
	}
	return append(outs, e.evaluate(svc, at, cause)...)
}

func (e *Engine) breaker(b *events.Breaker, at time.Time, cause string) []Output {
	svc := e.service(b.Service)
	svc.Breaker = b.To
	svc.BreakerSince = at
	if svc.Breakers == nil {
		svc.Breakers = map[string]string{}
	}
	// Only breakers that are not closed are kept per caller, so the map does
	// not grow with every caller that ever ran.
	if b.To == events.BreakerClosed {
		delete(svc.Breakers, b.Source)
	} else {
		svc.Breakers[b.Source] = b.To
	}
	var outs []Output
	switch b.To {
	case events.BreakerOpen:
		fp := e.fingerprint(RuleBreakerOpen, b.Service)
		// A peer adopting a transition echoes it: it opens an episode only
		// if the original was missed, and is not counted again.
		if b.Origin == "" || e.alerts[fp] == nil {
			msg := joinNonEmpty("; ", b.Message, reasonText(b.Reason))
			if b.OpenUntil != nil {
				msg = joinNonEmpty("; ", msg, "calls are skipped until "+b.OpenUntil.UTC().Format(time.RFC3339))
			}
			outs = e.occur(occurrence{
				rule: RuleBreakerOpen, service: b.Service, severity: events.SeverityCritical,
				summary: b.Service + " circuit breaker opened",
				message: msg,
				at:      at, cause: b.ID,
			})
		}
	case events.BreakerClosed:
		svc.ConsecFailures = 0
		outs = e.resolveRule(RuleBreakerOpen, b.Service, at, "")
	}
	return append(outs, e.evaluate(svc, at, cause)...)
}

func reasonText(r string) string {
	if r == "" {
		return ""
	}
	return "reason: " + r
}

func (e *Engine) call(c *events.Call, at time.Time, cause string) []Output {
	if c.Service == "" {
		return nil
	}
	svc := e.service(c.Service)
	var outs []Output
	if c.Outcome == events.CallFailed && c.Reason == "retries_exhausted" {
		msg := "call " + c.CallID + " failed"
		if c.Attempt > 0 {
			msg = fmt.Sprintf("call %s (contact attempt %d) failed", c.CallID, c.Attempt)
		}
		if c.StatusCode != 0 {
			msg += fmt.Sprintf(" with HTTP %d", c.StatusCode)
		}
		outs = e.occur(occurrence{
			rule: RuleRetriesExhausted, service: c.Service, severity: events.SeverityWarning,
			message: joinNonEmpty(": ", msg+" after every retry", c.Message),
			at:      at, cause: c.ID, callID: c.CallID,
		})
	}
	return append(outs, e.evaluate(svc, at, cause)...)
}

// evaluate re-derives a service's status and checks its rate rules.
func (e *Engine) evaluate(svc *service, at time.Time, cause string) []Output {
	svc.Window.prune(e.span, at)
	r := svc.Window.sum(e.span, at)
	outs := e.restatus(svc, r, at, cause)
	return append(outs, e.rates(svc, r, at, cause)...)
}

func (e *Engine) restatus(svc *service, r rates, at time.Time, cause string) []Output {
	to, why := svc.derive(r, e.cfg)
	svc.Reason = why
	if to == svc.Status {
		return nil
	}
	from := svc.Status
	svc.Status, svc.Since = to, at
	outs := []Output{{Cause: cause, Status: &events.Status{
		Header:  events.Header{ID: statusID(svc.Name, from, to, at, cause), Time: at},
		Service: svc.Name, From: from, To: to, Message: why,
	}}}
	switch {
	case to == events.StatusDown:
		svc.DownSince = at
	case from == events.StatusDown:
		svc.DownSince = time.Time{}
		outs = append(outs, e.resolveRule(RuleServiceDown, svc.Name, at, svc.Name+" is "+to+" again: "+why)...)
	}
	return outs
}

func (e *Engine) rates(svc *service, r rates, at time.Time, cause string) []Output {
	enough := r.Attempts > 0 && r.Attempts >= e.cfg.RateMinRequests
	checks := [...]struct {
		rule      string
		on        bool
		rate, max float64
	}{
		{RuleErrorRate, enough && r.errorRate() > e.cfg.ErrorRate, r.errorRate(), e.cfg.ErrorRate},
		{RuleRetryRate, enough && r.retryRate() > e.cfg.RetryRate, r.retryRate(), e.cfg.RetryRate},
		{RuleLatency, enough && r.slowRate() > LatencyShare, r.slowRate(), LatencyShare},
	}
	var outs []Output
	for _, c := range checks {
		fp := e.fingerprint(c.rule, svc.Name)
		active := e.alerts[fp] != nil
		switch {
		case c.on && !active:
			summary := fmt.Sprintf("%s %s %s above %s", svc.Name, strings.ReplaceAll(c.rule, "_", " "), percent(c.rate), percent(c.max))
			if c.rule == RuleLatency {
				summary = fmt.Sprintf("%s p90 latency above %s", svc.Name, e.cfg.Latency)
			}
			outs = append(outs, e.occur(occurrence{
				rule: c.rule, service: svc.Name, severity: events.SeverityWarning,
				summary: summary, message: e.rateText(c.rule, r), at: at, cause: cause,
			})...)
		case !c.on && active:
			outs = append(outs, e.resolveRule(c.rule, svc.Name, at, e.rateText(c.rule, r))...)
		}
	}
	return outs
}

// rateText says what a rate rule counted, for its notifications.
func (e *Engine) rateText(rule string, r rates) string {
	window := e.cfg.RateWindow.String()
	switch rule {
	case RuleErrorRate:
		return fmt.Sprintf("%d of %d attempts failed over %s", r.Failures, r.Attempts, window)
	case RuleRetryRate:
		return fmt.Sprintf("%d retries for %d attempts over %s", r.Retries, r.Attempts, window)
	}
	return fmt.Sprintf("%d of %d attempts slower than %s over %s", r.Slow, r.Attempts, e.cfg.Latency, window)
}

// occurrence is one thing an alert rule saw.
type occurrence struct {
	rule, service, severity string
	labels                  map[string]string
	summary, message        string
	at                      time.Time
	// startsAt, when set, is an earlier start of the problem than at (a
	// service down since then).
	startsAt time.Time
	cause    string
	callID   string
}

// occur records an occurrence: it opens an episode and a group, joins the
// group waiting to be sent, or is counted into the next reminder (dedup).
func (e *Engine) occur(o occurrence) []Output {
	fp := e.fingerprint(o.rule, o.service)
	if len(o.labels) > 0 {
		fp = Fingerprint(o.rule, o.service, o.labels)
	}
	a := e.alerts[fp]
	if a == nil {
		starts := o.at
		if !o.startsAt.IsZero() {
			starts = o.startsAt
		}
		a = &alert{
			Fingerprint: fp, Rule: o.rule, Service: o.service, Labels: o.labels,
			StartsAt: starts, Cause: o.cause, PendingSince: o.at,
		}
		e.alerts[fp] = a
	}
	a.Count++
	a.Total++
	if events.SeverityRank(o.severity) > events.SeverityRank(a.Severity) {
		a.Severity = o.severity
	}
	if o.summary != "" {
		a.Summary = o.summary
	}
	if o.message != "" {
		a.Message = o.message
	}
	if o.callID != "" && !slices.Contains(a.CallIDs, o.callID) && len(a.CallIDs) < MaxCallIDs {
		a.CallIDs = append(a.CallIDs, o.callID)
	}
	if e.cfg.GroupWait <= 0 && !a.PendingSince.IsZero() {
		return []Output{e.notify(a, o.at)}
	}
	return nil
}

// notify sends the firing notification of an alert: its group, or a reminder.
func (e *Engine) notify(a *alert, at time.Time) Output {
	a.Sent++
	if a.Rule == RuleRetriesExhausted {
		// Calls failing while the service is down are an outage, not a blip.
		if s := e.services[a.Service]; s != nil && s.Status == events.StatusDown {
			a.Severity = events.SeverityCritical
		}
	}
	ev := &events.Alert{
		Header:      events.Header{ID: alertID(a.Fingerprint, events.AlertFiring, a.StartsAt, a.Sent), Time: at},
		Fingerprint: a.Fingerprint, Rule: a.Rule, Severity: a.Severity, Status: events.AlertFiring,
		Service: a.Service, Summary: a.summary(), Message: a.Message, StartsAt: a.StartsAt,
		Labels: maps.Clone(a.Labels), Count: a.Count, CallIDs: a.CallIDs,
	}
	a.LastSent = at
	a.PendingSince = time.Time{}
	a.Count = 0
	a.CallIDs = nil
	return Output{Alert: ev, Cause: a.Cause}
}

// resolveRule resolves every active alert of rule for service (all its
// label sets), sending first a group that was still waiting, so that a
// problem that healed within the group wait is still reported.
func (e *Engine) resolveRule(rule, service string, at time.Time, why string) []Output {
	var fps []string
	for fp, a := range e.alerts {
		if a.Rule == rule && a.Service == service {
			fps = append(fps, fp)
		}
	}
	slices.Sort(fps)
	var outs []Output
	for _, fp := range fps {
		a := e.alerts[fp]
		if !a.PendingSince.IsZero() {
			outs = append(outs, e.notify(a, at))
		}
		end := at
		outs = append(outs, Output{Cause: a.Cause, Alert: &events.Alert{
			Header:      events.Header{ID: alertID(fp, events.AlertResolved, a.StartsAt, 0), Time: at},
			Fingerprint: fp, Rule: a.Rule, Severity: a.Severity, Status: events.AlertResolved,
			Service: a.Service, Summary: a.resolvedSummary(), Message: why,
			StartsAt: a.StartsAt, EndsAt: &end, Labels: maps.Clone(a.Labels), Count: a.Total,
		}})
		delete(e.alerts, fp)
	}
	return outs
}

// Timer kinds, in the order timers due at the same instant fire.
const (
	timerFlush = iota
	timerDown
	timerExpiry
	timerRepeat
)

type timer struct {
	at   time.Time
	kind int
	key  string
}

func (t timer) before(u timer) bool {
	if c := t.at.Compare(u.at); c != 0 {
		return c < 0
	}
	if t.kind != u.kind {
		return t.kind < u.kind
	}
	return t.key < u.key
}

func (e *Engine) nextTimer() (timer, bool) {
	var best timer
	found := false
	consider := func(t timer) {
		if !found || t.before(best) {
			best, found = t, true
		}
	}
	for fp, a := range e.alerts {
		switch {
		case !a.PendingSince.IsZero():
			consider(timer{a.PendingSince.Add(max(e.cfg.GroupWait, 0)), timerFlush, fp})
		case a.Sent > 0 && e.cfg.RepeatInterval > 0:
			consider(timer{a.LastSent.Add(e.cfg.RepeatInterval), timerRepeat, fp})
		}
	}
	for name, s := range e.services {
		if !s.DownSince.IsZero() && e.alerts[e.fingerprint(RuleServiceDown, name)] == nil {
			consider(timer{s.DownSince.Add(e.cfg.DownFor), timerDown, name})
		}
		if t := s.Window.nextExpiry(e.span); !t.IsZero() {
			consider(timer{t, timerExpiry, name})
		}
	}
	return best, found
}

// fire fires one timer, dated by its due time even when the clock has passed
// it, for the same reason as Apply.
func (e *Engine) fire(t timer) []Output {
	at := t.at
	switch t.kind {
	case timerFlush, timerRepeat:
		return []Output{e.notify(e.alerts[t.key], at)}
	case timerDown:
		s := e.services[t.key]
		return e.occur(occurrence{
			rule: RuleServiceDown, service: s.Name, severity: events.SeverityCritical,
			summary:  fmt.Sprintf("%s down for more than %s", s.Name, e.cfg.DownFor),
			message:  fmt.Sprintf("down since %s: %s", s.DownSince.UTC().Format(time.RFC3339), s.Reason),
			at:       at,
			startsAt: s.DownSince,
		})
	case timerExpiry:
		return e.evaluate(e.services[t.key], at, "")
	}
	return nil
}

// Fingerprint identifies an alert: the same rule, service and labels give
// the same fingerprint, so repeats are recognised and a resolution finds what
// it resolves.
func Fingerprint(rule, service string, labels map[string]string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s", rule, service)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(h, "\x00%s=%s", k, labels[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// fingerprint is Fingerprint without labels, cached.
func (e *Engine) fingerprint(rule, service string) string {
	k := fpKey{rule, service}
	fp, ok := e.fps[k]
	if !ok {
		if e.fps == nil {
			e.fps = map[fpKey]string{}
		}
		fp = Fingerprint(rule, service, nil)
		e.fps[k] = fp
	}
	return fp
}

// alertID is the event id of a notification: the nth firing notification of
// the episode that started at startsAt, or (n = 0) its resolution.
func alertID(fp, status string, startsAt time.Time, n int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "alert\x00%s\x00%s\x00%d\x00%d", fp, status, startsAt.UnixNano(), n))
	return hex.EncodeToString(sum[:16])
}

func statusID(service, from, to string, at time.Time, cause string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "status\x00%s\x00%s\x00%s\x00%d\x00%s", service, from, to, at.UnixNano(), cause))
	return hex.EncodeToString(sum[:16])
}

func firstClause(s string) string {
	if i := strings.IndexAny(s, ":;"); i > 0 {
		return s[:i]
	}
	return s
}
