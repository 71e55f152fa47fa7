package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Services the simulator speaks: four providers and four receivers.
const (
	ServiceElevenLabs = "elevenlabs"
	ServiceLLM        = "llm"
	ServiceCRM        = "crm"
	ServiceTelephony  = "telephony"
	ServiceTelegram   = "telegram"
	ServiceWebhook    = "webhook"
	ServiceSheets     = "sheets"
	ServiceSMTP       = "smtp"
)

// Providers are the call flow's external APIs; Receivers are the demo's sinks.
var (
	Providers = []string{ServiceLLM, ServiceElevenLabs, ServiceTelephony, ServiceCRM}
	Receivers = []string{ServiceTelegram, ServiceWebhook, ServiceSheets, ServiceSMTP}
)

// FaultKind names what a fault does to a request.
type FaultKind string

// Fault kinds. "Before the backend" kinds answer without doing the work (no
// side effect); "after the backend" kinds do the work, so its side effect is
// counted, and then spoil the delivery of the answer.
const (
	// KindStatus answers Status with the service's error body (before).
	KindStatus FaultKind = "status"
	// KindSlow waits Delay before doing the work and answering (after: the work
	// is done even when the client gave up waiting).
	KindSlow FaultKind = "slow"
	// KindStall sends the headers and half the body, waits Delay (0: until the
	// client leaves) and sends the rest (after).
	KindStall FaultKind = "stall"
	// KindRefuse closes the connection at once with a TCP reset, before any
	// response (before).
	KindRefuse FaultKind = "refuse"
	// KindReset sends the headers and half the body, then resets the
	// connection (after).
	KindReset FaultKind = "reset"
	// KindMalformed answers with the normal status and a body that is not JSON
	// (after).
	KindMalformed FaultKind = "malformed"
	// KindTruncated answers with the first half of the normal body, with a
	// matching Content-Length, so the HTTP exchange is complete but the JSON or
	// audio is cut (after).
	KindTruncated FaultKind = "truncated"
	// KindHTML502 answers 502 with an HTML page from a proxy (before).
	KindHTML502 FaultKind = "html502"
	// KindEmptyBody answers with the normal status and headers and no body
	// (after).
	KindEmptyBody FaultKind = "empty_body"
	// KindLostResponse does the work and hangs up without answering, after
	// Delay (after: the side effect is counted, the client sees no response).
	KindLostResponse FaultKind = "lost_response"
	// KindConcurrency answers 429 (Status) when Limit matching requests are
	// already in flight, including ones another fault is answering slowly;
	// the requests it admits are held for Delay (before).
	KindConcurrency FaultKind = "concurrency"
	// KindBurst answers 429 (Status) once Limit requests were counted in the
	// rolling Window (before). Every matching request it does not refuse
	// counts, even one that another fault answered; the LLM's
	// x-ratelimit-* and the CRM's X-HubSpot-RateLimit-* headers show it.
	KindBurst FaultKind = "burst"
	// KindFlap fails every Every-th request (the 1st, 1+Every-th, ...) or, with
	// Period, alternates failing and healthy periods (before).
	KindFlap FaultKind = "flap"
)

// FaultKinds lists every kind, in documentation order.
var FaultKinds = []FaultKind{
	KindStatus, KindSlow, KindStall, KindRefuse, KindReset, KindMalformed, KindTruncated,
	KindHTML502, KindEmptyBody, KindLostResponse, KindConcurrency, KindBurst, KindFlap,
}

// Endpoints a fault applies to.
const (
	// EndpointData (the default) is the service's working API: TTS, chat
	// completions, CRM objects, calls, sendMessage, append, webhook POST.
	EndpointData = "data"
	// EndpointHealth is the service's health endpoint (/v1/user, /v1/models,
	// account details). A data fault leaves health OK: shallow health.
	EndpointHealth = "health"
	// EndpointAll fails health requests too while the fault is active; only
	// data requests use up Count, so a background prober does not change when
	// the service recovers.
	EndpointAll = "all"
)

// Telephony call outcomes, the final status a call reaches.
const (
	OutcomeCompleted = "completed"
	OutcomeBusy      = "busy"
	OutcomeNoAnswer  = "no-answer"
	OutcomeFailed    = "failed"
	OutcomeCanceled  = "canceled"
)

var outcomes = []string{OutcomeCompleted, OutcomeBusy, OutcomeNoAnswer, OutcomeFailed, OutcomeCanceled}

// Errors returned by ParseScenario and LoadScenario, matched with errors.Is.
var (
	ErrInvalidScenario = errors.New("invalid scenario")
	ErrUnknownService  = errors.New("unknown service")
	ErrUnknownFault    = errors.New("unknown fault kind")
)

// Scenario scripts the simulator's faults. It is data: a YAML (or JSON) file
// chosen at start and replaceable while running (PUT /admin/scenario).
type Scenario struct {
	Name        string `json:"name" yaml:"name"`
	Description string `json:"description,omitempty" yaml:"description"`
	// Latency is added to every provider request (llm, elevenlabs, telephony,
	// crm); 0 means none. A service's own Latency replaces it.
	Latency  Duration           `json:"latency,omitempty" yaml:"latency"`
	Services map[string]Service `json:"services,omitempty" yaml:"services"`
}

// Service scripts one service. Faults apply to every service; the other
// fields apply where their comment says.
type Service struct {
	// Faults are tried in order; the first that applies to a request decides
	// what happens to it.
	Faults []Fault `json:"faults,omitempty" yaml:"faults"`
	// Latency replaces the scenario's Latency for this service.
	Latency Duration `json:"latency,omitempty" yaml:"latency"`
	// APIKey, when set, is the only credential accepted (xi-api-key, Bearer
	// token, telephony auth token, Telegram bot token); switching it at run time
	// models a key rotation. Empty accepts any non-empty credential.
	APIKey string `json:"api_key,omitempty" yaml:"api_key"`

	// Outcomes (telephony) maps a To number to its final call status:
	// completed, busy, no-answer, failed, canceled. Default completed.
	Outcomes map[string]string `json:"outcomes,omitempty" yaml:"outcomes"`
	// CallDuration (telephony) of a completed call; default 30s.
	CallDuration Duration `json:"call_duration,omitempty" yaml:"call_duration"`
	// Rings (telephony) is how many status polls see the call ringing or in
	// progress before its final status.
	Rings int `json:"rings,omitempty" yaml:"rings"`
	// RealTime (telephony) makes a completed call last its CallDuration in
	// wall time, as a real one does: once answered it stays in-progress
	// until CallDuration has passed since it was placed, however often it
	// is polled. Without it the call ends after Rings polls.
	RealTime bool `json:"real_time,omitempty" yaml:"real_time"`

	// UniqueProperty (crm) makes creating a second record with the same value
	// of this property a 409 CONFLICT, as a HubSpot unique property does.
	UniqueProperty string `json:"unique_property,omitempty" yaml:"unique_property"`

	// Secret (webhook) turns on signature checks: X-Agent-Signature must be
	// "sha256=" + hex HMAC-SHA256(secret, X-Agent-Timestamp + "." + body).
	Secret string `json:"secret,omitempty" yaml:"secret"`

	// Username and Password (smtp), when set, are required through AUTH
	// before MAIL FROM; otherwise any credentials (or none) are accepted.
	Username string `json:"username,omitempty" yaml:"username"`
	Password string `json:"password,omitempty" yaml:"password"`
}

// Fault is one scripted misbehaviour. Count, Match and Endpoint select the
// requests it applies to; the other fields shape what it does.
type Fault struct {
	Kind FaultKind `json:"kind" yaml:"kind"`
	// Status is the HTTP status of status, concurrency, burst and flap faults
	// (defaults: 429 for concurrency and burst, 503 for flap). For smtp it is
	// the SMTP reply code (4xx or 5xx).
	Status int `json:"status,omitempty" yaml:"status"`
	// Code is the provider's error code ("system_busy", "insufficient_quota",
	// "20429", "RESOURCE_EXHAUSTED", ...); each service has a default per status.
	Code string `json:"code,omitempty" yaml:"code"`
	// Message replaces the default error message.
	Message string `json:"message,omitempty" yaml:"message"`
	// Count applies the fault to the first Count matching requests, then the
	// service recovers; 0 means always.
	Count int `json:"count,omitempty" yaml:"count"`
	// Match, when set, restricts the fault to requests whose method and path,
	// body or any header value contains it (a contact name, a voice id, "/search").
	Match string `json:"match,omitempty" yaml:"match"`
	// Endpoint is data (default), health or all.
	Endpoint string `json:"endpoint,omitempty" yaml:"endpoint"`
	// RetryAfter is sent as Retry-After: seconds ("7"), an HTTP date, or
	// "date+7s" for the date seven seconds after the response. For Telegram
	// it is parameters.retry_after in the body.
	RetryAfter string `json:"retry_after,omitempty" yaml:"retry_after"`
	// Delay is how long slow waits before answering, stall stalls midway,
	// lost_response waits before hanging up, and concurrency holds each
	// admitted request.
	Delay Duration `json:"delay,omitempty" yaml:"delay"`
	// Limit is the concurrency fault's in-flight limit (default 5) and the
	// burst fault's requests per Window (default 100; sheets 60).
	Limit int `json:"limit,omitempty" yaml:"limit"`
	// Window is the burst fault's rolling window (default 10s; sheets 1m).
	Window Duration `json:"window,omitempty" yaml:"window"`
	// Every makes a flap fault fail the 1st, (1+Every)th, (1+2·Every)th ...
	// matching request (default 2: fail, succeed, fail, ...).
	Every int `json:"every,omitempty" yaml:"every"`
	// Period, when set, makes a flap fault time-based instead: failing for one
	// Period, healthy for the next, starting with failure when the scenario is set.
	Period Duration `json:"period,omitempty" yaml:"period"`
	// Policy is the CRM 429's policyName: TEN_SECONDLY_ROLLING (default) or DAILY.
	Policy string `json:"policy,omitempty" yaml:"policy"`
	// Headers are added to the faulty response (x-should-retry: "false", ...).
	Headers map[string]string `json:"headers,omitempty" yaml:"headers"`
}

// Duration is a time.Duration written as "250ms", "7s" or "1m" in scenario
// files; a bare number means seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func parseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number of seconds or a Go duration such as 250ms or 7s", s)
	}
	return Duration(d), nil
}

// UnmarshalYAML reads a duration string or a number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a scalar", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.D().String(), nil }

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.D().String()) }

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("load scenario: %w", err)
	}
	sc, err := ParseScenario(data)
	if err != nil {
		return Scenario{}, fmt.Errorf("load scenario %s: %w", path, err)
	}
	return sc, nil
}

// ParseScenario parses a YAML or JSON scenario and validates it: unknown
// services, fault kinds and keys are errors that name where they are.
func ParseScenario(data []byte) (Scenario, error) {
	var sc Scenario
	if len(bytes.TrimSpace(data)) == 0 {
		return sc, fmt.Errorf("%w: empty document", ErrInvalidScenario)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&sc); err != nil {
		return Scenario{}, fmt.Errorf("%w: %v", ErrInvalidScenario, err)
	}
	if err := sc.Validate(); err != nil {
		return Scenario{}, err
	}
	return sc, nil
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// Validate reports the first thing wrong with sc, naming its place.
func (sc Scenario) Validate() error {
	if sc.Latency < 0 {
		return fmt.Errorf("%w: latency: negative", ErrInvalidScenario)
	}
	for _, name := range sortedKeys(sc.Services) {
		if err := sc.Services[name].validate(name); err != nil {
			return err
		}
	}
	return nil
}

func knownService(name string) bool {
	return slices.Contains(Providers, name) || slices.Contains(Receivers, name)
}

func (svc Service) validate(name string) error {
	if !knownService(name) {
		return fmt.Errorf("%w: services.%s: %w (known: %s, %s)", ErrInvalidScenario, name, ErrUnknownService,
			strings.Join(Providers, ", "), strings.Join(Receivers, ", "))
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: services.%s.%s: %s", ErrInvalidScenario, name, field, fmt.Sprintf(format, args...))
	}
	if svc.Latency < 0 {
		return bad("latency", "negative")
	}
	if len(svc.Outcomes) > 0 && name != ServiceTelephony {
		return bad("outcomes", "only telephony has call outcomes")
	}
	for _, to := range sortedKeys(svc.Outcomes) {
		if !e164.MatchString(to) {
			return bad("outcomes", "%q is not an E.164 number", to)
		}
		if !slices.Contains(outcomes, svc.Outcomes[to]) {
			return bad("outcomes", "%s: %q is not one of %s", to, svc.Outcomes[to], strings.Join(outcomes, ", "))
		}
	}
	if svc.Rings < 0 || svc.CallDuration < 0 {
		return bad("rings", "negative")
	}
	if svc.Secret != "" && name != ServiceWebhook {
		return bad("secret", "only the webhook receiver checks signatures")
	}
	if (svc.Username != "" || svc.Password != "") && name != ServiceSMTP {
		return bad("username", "only smtp takes a username and password")
	}
	for i, f := range svc.Faults {
		if err := f.validate(name); err != nil {
			return fmt.Errorf("%w: services.%s.faults[%d].%w", ErrInvalidScenario, name, i, err)
		}
	}
	return nil
}

func (f Fault) validate(service string) error {
	if !slices.Contains(FaultKinds, f.Kind) {
		names := make([]string, len(FaultKinds))
		for i, k := range FaultKinds {
			names[i] = string(k)
		}
		return fmt.Errorf("kind: %w %q (known: %s)", ErrUnknownFault, f.Kind, strings.Join(names, ", "))
	}
	if service == ServiceSMTP {
		if f.Kind != KindStatus && f.Kind != KindSlow {
			return fmt.Errorf("kind: %s does not apply to smtp (status and slow do)", f.Kind)
		}
		if f.Kind == KindStatus && (f.Status < 400 || f.Status > 599) {
			return fmt.Errorf("status: smtp needs a 4xx or 5xx reply code, got %d", f.Status)
		}
	} else {
		if f.Kind == KindStatus && f.Status == 0 {
			return errors.New("status: required for a status fault")
		}
		if f.Status != 0 && (f.Status < 200 || f.Status > 599) {
			return fmt.Errorf("status: %d is not an HTTP status", f.Status)
		}
	}
	switch {
	case f.Count < 0:
		return errors.New("count: negative")
	case f.Limit < 0:
		return errors.New("limit: negative")
	case f.Every < 0:
		return errors.New("every: negative")
	case f.Delay < 0 || f.Window < 0 || f.Period < 0:
		return errors.New("delay, window and period must not be negative")
	}
	switch f.Endpoint {
	case "", EndpointData, EndpointHealth, EndpointAll:
	default:
		return fmt.Errorf("endpoint: %q is not one of data, health, all", f.Endpoint)
	}
	switch f.Policy {
	case "", "TEN_SECONDLY_ROLLING", "DAILY", "SECONDLY":
	default:
		return fmt.Errorf("policy: %q is not one of TEN_SECONDLY_ROLLING, DAILY, SECONDLY", f.Policy)
	}
	if service == ServiceTelephony && f.Code != "" {
		if _, err := strconv.Atoi(f.Code); err != nil {
			return fmt.Errorf("code: telephony error codes are numbers (20429, 21211), got %q", f.Code)
		}
	}
	if f.RetryAfter != "" {
		if _, err := retryAfterValue(f.RetryAfter, time.Now()); err != nil {
			return fmt.Errorf("retry_after: %w", err)
		}
	}
	return nil
}

// retryAfterValue resolves a scenario's retry_after to the header value at now.
func retryAfterValue(s string, now time.Time) (string, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "date+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return "", fmt.Errorf("%q: want date+<duration>, such as date+7s", s)
		}
		return now.Add(d).UTC().Format(http.TimeFormat), nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return s, nil
	}
	if _, err := http.ParseTime(s); err == nil {
		return s, nil
	}
	return "", fmt.Errorf("%q: want seconds, an HTTP date or date+<duration>", s)
}

// retryAfterSeconds resolves retry_after to whole seconds (Telegram's form).
func retryAfterSeconds(s string, now time.Time) int {
	v, err := retryAfterValue(s, now)
	if err != nil {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return max(0, int(t.Sub(now).Round(time.Second)/time.Second))
}

// redacted returns a copy of sc with credentials replaced, for display.
func (sc Scenario) redacted() Scenario {
	out := sc
	out.Services = make(map[string]Service, len(sc.Services))
	for name, svc := range sc.Services {
		for _, p := range []*string{&svc.APIKey, &svc.Secret, &svc.Password} {
			if *p != "" {
				*p = "<redacted>"
			}
		}
		out.Services[name] = svc
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
