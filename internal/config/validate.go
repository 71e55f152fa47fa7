package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	// token is a sink name: a lower-case NATS subject token and durable
	// consumer name that the environment can address (AGENT_SINKS__<NAME>__...).
	tokenRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	// nameRe is a JetStream consumer or bucket name.
	nameRe   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	sha256Re = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	regionRe = regexp.MustCompile(`^[A-Z]{2}$`)
)

func isToken(s string) bool { return tokenRe.MatchString(s) }

// Validate checks every key and fills the per-sink defaults (kind alert,
// min_severity info, batch_size 100, batch_wait 0 (adaptive), max_attempts
// 5, backoff 1s, max_backoff 1m, timeout 10s, subjects [agent.>] for a log
// sink). It
// returns every problem at once, each a *KeyError naming the key, joined with
// errors.Join. Load calls it; a Config built in Go should too.
func (c *Config) Validate() error {
	var p problems
	c.NATS.validate(&p)
	for _, name := range keysOf(c.Services) {
		key := "services." + name
		if !slices.Contains(Services, name) {
			p.add(key, fmt.Errorf("%w (known: %s)", ErrUnknownService, strings.Join(Services, ", ")))
			continue
		}
		c.Services[name].validate(&p, key)
	}
	c.Dispatcher.validate(&p)
	// A re-queue is a message schedule stored on CALLS: one older than the
	// stream's max_age would be dropped before it fires.
	if age := c.NATS.Streams.Calls.MaxAge; age > 0 {
		for key, d := range map[string]time.Duration{
			"dispatcher.no_answer_retry_delay": c.Dispatcher.NoAnswerRetryDelay,
			"dispatcher.skipped_retry_delay":   c.Dispatcher.SkippedRetryDelay,
		} {
			if d >= age {
				p.addf(key, "must be shorter than nats.streams.calls.max_age (%s): the re-queue is stored on CALLS, got %s", age, d)
			}
		}
	}
	c.Caller.validate(&p)
	c.Observer.validate(&p)
	c.Media.validate(&p)
	names := map[string]int{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		*s = s.WithDefaults()
		key := sinkKey(i, s.Name)
		if _, dup := names[s.Name]; dup {
			key = fmt.Sprintf("sinks[%d]", i)
		}
		s.validate(&p, key, names)
		names[s.Name] = i
	}
	c.Log.validate(&p)
	return p.err()
}

// RequireServices reports every known service without a base_url: the caller
// cannot run without them, while the dispatcher and observer never call out.
func (c *Config) RequireServices() error {
	var p problems
	for _, name := range Services {
		if c.Services[name].BaseURL == "" {
			p.addf("services."+name+".base_url", "required")
		}
	}
	return p.err()
}

// For returns n with the credentials of role when nats.roles has any for it
// (a role with a password and no user is the user of that name, as in
// nats.conf); otherwise n as it is.
func (n NATS) For(role string) NATS {
	c, ok := n.Roles[role]
	if !ok || c == (Credentials{}) {
		return n
	}
	if c.User == "" && c.Password != "" {
		c.User = role
	}
	n.User, n.Password, n.Creds = c.User, c.Password, c.Creds
	return n
}

func (n NATS) validate(p *problems) {
	if n.URL == "" && !n.Embedded.Enabled {
		p.addf("nats.url", "required unless nats.embedded.enabled is true")
	}
	if n.URL != "" {
		for _, u := range strings.Split(n.URL, ",") {
			if err := natsURL(strings.TrimSpace(u)); err != "" {
				p.addf("nats.url", "%s", err)
				break
			}
		}
	}
	validCredentials(p, "nats", Credentials{User: n.User, Password: n.Password, Creds: n.Creds}, true)
	for _, role := range keysOf(n.Roles) {
		key := "nats.roles." + role
		if !slices.Contains(Roles, role) {
			p.add(key, fmt.Errorf("%w (known: %s)", ErrUnknownRole, strings.Join(Roles, ", ")))
			continue
		}
		validCredentials(p, key, n.Roles[role], false)
	}
	positive(p, "nats.connect_timeout", n.ConnectTimeout)
	if e := n.Embedded; e.Enabled {
		if e.Port < 0 || e.Port > 65535 {
			p.addf("nats.embedded.port", "must be 0 (any free port) to 65535, got %d", e.Port)
		}
		if e.StoreDir == "" {
			p.addf("nats.embedded.store_dir", "required when nats.embedded.enabled is true")
		}
	}
	n.Streams.Calls.validate(p, "nats.streams.calls")
	n.Streams.Events.validate(p, "nats.streams.events")
	n.Streams.Alerts.validate(p, "nats.streams.alerts")
	if r := n.Buckets.Replicas; r < 1 || r > 5 {
		p.addf("nats.buckets.replicas", "must be 1 to 5, got %d", r)
	}
}

// natsURL returns what is wrong with one server URL, or "".
func natsURL(s string) string {
	if s == "" {
		return "empty server in the list"
	}
	if !strings.Contains(s, "://") {
		s = "nats://" + s // nats.go takes host:port as well
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("%q is not a URL", redactURL(s))
	}
	if !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
		return fmt.Sprintf("scheme %q is not nats, tls, ws or wss", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Sprintf("%q has no host", redactURL(s))
	}
	return ""
}

// validCredentials checks one set of credentials; a role's user may be left
// out (For makes it the role's name), the top-level one may not.
func validCredentials(p *problems, key string, c Credentials, needUser bool) {
	if c.Creds != "" && (c.User != "" || c.Password != "") {
		p.addf(key, "set creds or user and password, not both")
	}
	if c.Password != "" && c.User == "" && needUser {
		p.addf(key+".user", "required with a password")
	}
}

func (s Stream) validate(p *problems, key string) {
	if s.Replicas < 1 || s.Replicas > 5 {
		p.addf(key+".replicas", "must be 1 to 5, got %d", s.Replicas)
	}
	if s.Storage != "file" && s.Storage != "memory" {
		p.addf(key+".storage", "must be file or memory, got %q", s.Storage)
	}
	notNegative(p, key+".max_age", s.MaxAge)
	if s.MaxBytes < -1 {
		p.addf(key+".max_bytes", "must be 0 or -1 (no limit) or more, got %d", s.MaxBytes)
	}
	notNegative(p, key+".duplicate_window", s.DuplicateWindow)
	if s.MaxAge > 0 && s.DuplicateWindow > s.MaxAge {
		p.addf(key+".duplicate_window", "must not exceed max_age (%s), got %s", formatDuration(s.MaxAge), formatDuration(s.DuplicateWindow))
	}
}

func (s Service) validate(p *problems, key string) {
	if s.BaseURL != "" && !httpURL(s.BaseURL) {
		p.addf(key+".base_url", "not an http(s) URL")
	}
	positive(p, key+".timeout", s.Timeout)

	r, rk := s.Retry, key+".retry"
	if r.MaxRetries < 0 {
		p.addf(rk+".max_retries", "must be 0 or more, got %d", r.MaxRetries)
	}
	if r.MaxRetries > 0 {
		positive(p, rk+".initial_delay", r.InitialDelay)
		positive(p, rk+".max_delay", r.MaxDelay)
	}
	if r.Multiplier < 1 {
		p.addf(rk+".multiplier", "must be at least 1, got %v", r.Multiplier)
	}
	if r.MaxDelay > 0 && r.MaxDelay < r.InitialDelay {
		p.addf(rk+".max_delay", "must be at least initial_delay (%s), got %s", formatDuration(r.InitialDelay), formatDuration(r.MaxDelay))
	}
	share(p, rk+".jitter", r.Jitter)
	share(p, rk+".budget", r.Budget)
	if r.Budget > 0 {
		positive(p, rk+".budget_window", r.BudgetWindow)
	}

	b, bk := s.Breaker, key+".breaker"
	atLeastOne(p, bk+".failure_threshold", b.FailureThreshold)
	positive(p, bk+".recovery_timeout", b.RecoveryTimeout)
	atLeastOne(p, bk+".half_open_requests", b.HalfOpenRequests)
	share(p, bk+".failure_rate", b.FailureRate)
	if b.FailureRate > 0 {
		positive(p, bk+".window", b.Window)
		atLeastOne(p, bk+".min_requests", b.MinRequests)
	}

	if h, hk := s.Health, key+".health"; h.Enabled {
		positive(p, hk+".interval", h.Interval)
		positive(p, hk+".timeout", h.Timeout)
		if h.Interval > 0 && h.Timeout > h.Interval {
			p.addf(hk+".timeout", "must not exceed interval (%s), got %s", formatDuration(h.Interval), formatDuration(h.Timeout))
		}
	}
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (d Dispatcher) validate(p *problems) {
	if !nameRe.MatchString(d.Campaign) {
		p.addf("dispatcher.campaign", "must be letters, digits, - and _ (it is a subject token), got %q", d.Campaign)
	}
	if !regionRe.MatchString(d.DefaultRegion) {
		p.addf("dispatcher.default_region", "must be a two-letter upper-case region code like US or IN, got %q", d.DefaultRegion)
	}
	if _, err := d.Location(); err != nil {
		p.addf("dispatcher.default_timezone", "unknown time zone %q (use an IANA name like Europe/Berlin)", d.DefaultTimezone)
	}
	if _, _, err := d.CallingHours(); err != nil {
		p.addf("dispatcher.calling_window", "%v", err)
	}
	atLeastOne(p, "dispatcher.max_attempts", d.MaxAttempts)
	notNegative(p, "dispatcher.skipped_retry_delay", d.SkippedRetryDelay)
	positive(p, "dispatcher.no_answer_retry_delay", d.NoAnswerRetryDelay)
	if d.MaxCallsPerSecond < 0 {
		p.addf("dispatcher.max_calls_per_second", "must not be negative (0 is no limit), got %d", d.MaxCallsPerSecond)
	}
	if d.MaxConcurrentCalls < 0 {
		p.addf("dispatcher.max_concurrent_calls", "must not be negative (0 is no limit), got %d", d.MaxConcurrentCalls)
	}
	if !nameRe.MatchString(d.StateBucket) {
		p.addf("dispatcher.state_bucket", "must be letters, digits, - and _, got %q", d.StateBucket)
	}
}

// Location loads DefaultTimezone.
func (d Dispatcher) Location() (*time.Location, error) {
	if d.DefaultTimezone == "" {
		return nil, fmt.Errorf("config: empty time zone")
	}
	return time.LoadLocation(d.DefaultTimezone)
}

// CallingHours parses CallingWindow ("08:00-21:00") into offsets from local
// midnight. to is before from when the window spans midnight ("22:00-06:00").
func (d Dispatcher) CallingHours() (from, to time.Duration, err error) {
	a, b, ok := strings.Cut(d.CallingWindow, "-")
	if ok {
		from, err = clock(a)
		if err == nil {
			to, err = clock(b)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("must be HH:MM-HH:MM like 08:00-21:00, got %q", d.CallingWindow)
	}
	if from == to {
		return 0, 0, fmt.Errorf("is empty: %q starts and ends at the same time", d.CallingWindow)
	}
	return from, to, nil
}

func clock(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("not HH:MM")
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	// 24:00 ends a window at midnight.
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("not HH:MM")
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

func (c Caller) validate(p *problems) {
	atLeastOne(p, "caller.concurrency", c.Concurrency)
	atLeastOne(p, "caller.fleet_max_in_flight", c.FleetMaxInFlight)
	positive(p, "caller.ack_wait", c.AckWait)
	notNegative(p, "caller.shutdown_grace", c.ShutdownGrace)
	positive(p, "caller.call_timeout", c.CallTimeout)
	if !nameRe.MatchString(c.Consumer) {
		p.addf("caller.consumer", "must be letters, digits, - and _, got %q", c.Consumer)
	}
}

func (m Media) validate(p *problems) {
	if _, port, err := net.SplitHostPort(m.HTTP.Addr); err != nil {
		p.addf("media.http.addr", "must be host:port like 127.0.0.1:8090, got %q", m.HTTP.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.addf("media.http.addr", "port must be 0 to 65535, got %q", port)
	}
	if m.PublicURL != "" && !httpURL(m.PublicURL) {
		p.addf("media.public_url", "must be an http or https URL, got %q", m.PublicURL)
	}
	positive(p, "media.audio_max_age", m.AudioMaxAge)
	positive(p, "media.url_ttl", m.URLTTL)
}

func (o Observer) validate(p *problems) {
	if _, port, err := net.SplitHostPort(o.HTTP.Addr); err != nil {
		p.addf("observer.http.addr", "must be host:port like 127.0.0.1:8080, got %q", o.HTTP.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.addf("observer.http.addr", "port must be 0 to 65535, got %q", port)
	}
	r := o.Rules
	positive(p, "observer.rules.down_for", r.DownFor)
	rate(p, "observer.rules.error_rate", r.ErrorRate)
	rate(p, "observer.rules.retry_rate", r.RetryRate)
	positive(p, "observer.rules.rate_window", r.RateWindow)
	atLeastOne(p, "observer.rules.rate_min_requests", r.RateMinRequests)
	positive(p, "observer.rules.latency", r.Latency)
	positive(p, "observer.rules.repeat_interval", r.RepeatInterval)
	notNegative(p, "observer.rules.group_wait", r.GroupWait)
	if !nameRe.MatchString(o.Consumer) {
		p.addf("observer.consumer", "must be letters, digits, - and _, got %q", o.Consumer)
	}
	// JetStream's per-message TTL is at least a second.
	if o.Lease.TTL < time.Second {
		p.addf("observer.lease.ttl", "must be at least 1s, got %s", o.Lease.TTL)
	}
}

func (s Sink) validate(p *problems, key string, seen map[string]int) {
	switch {
	case s.Name == "":
		p.addf(key+".name", "required")
	case !isToken(s.Name):
		p.addf(key+".name", "must be lower-case letters, digits, - and _, starting with a letter or digit, got %q", s.Name)
	default:
		if j, dup := seen[s.Name]; dup {
			p.addf(key+".name", "%q is already the name of sinks[%d]", s.Name, j)
		}
	}
	if s.Plugin == "" {
		p.addf(key+".plugin", "required: a plugin binary's path or a name under observer.plugin_dir")
	}
	if s.SHA256 != "" && !sha256Re.MatchString(s.SHA256) {
		p.addf(key+".sha256", "must be 64 hex characters, got %d characters", len(s.SHA256))
	}
	if s.Kind != "alert" && s.Kind != "log" {
		p.addf(key+".kind", "must be alert or log, got %q", s.Kind)
	}
	if !slices.Contains([]string{"info", "warning", "critical"}, s.MinSeverity) {
		p.addf(key+".min_severity", "must be info, warning or critical, got %q", s.MinSeverity)
	}
	for i, subj := range s.Subjects {
		if subj == "" || strings.ContainsAny(subj, " \t\r\n") || !strings.HasPrefix(subj, "agent.") {
			p.addf(fmt.Sprintf("%s.subjects[%d]", key, i), "must be a subject under agent. without spaces, got %q", subj)
		}
	}
	atLeastOne(p, key+".batch_size", s.BatchSize)
	notNegative(p, key+".batch_wait", s.BatchWait)
	atLeastOne(p, key+".max_attempts", s.MaxAttempts)
	positive(p, key+".backoff", s.Backoff)
	positive(p, key+".max_backoff", s.MaxBackoff)
	if s.MaxBackoff > 0 && s.MaxBackoff < s.Backoff {
		p.addf(key+".max_backoff", "must be at least backoff (%s), got %s", formatDuration(s.Backoff), formatDuration(s.MaxBackoff))
	}
	positive(p, key+".timeout", s.Timeout)
	if _, _, err := s.StartFrom(time.Now()); err != nil {
		p.addf(key+".start", "%v", err)
	}
}

func (l Log) validate(p *problems) {
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, l.Level) {
		p.addf("log.level", "must be debug, info, warn or error, got %q", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		p.addf("log.format", "must be text or json, got %q", l.Format)
	}
}

func positive(p *problems, key string, d time.Duration) {
	if d <= 0 {
		p.addf(key, "must be more than 0, got %s", formatDuration(d))
	}
}

func notNegative(p *problems, key string, d time.Duration) {
	if d < 0 {
		p.addf(key, "must not be negative, got %s", formatDuration(d))
	}
}

func atLeastOne(p *problems, key string, n int) {
	if n < 1 {
		p.addf(key, "must be at least 1, got %d", n)
	}
}

// share is a fraction from 0 to 1 where 0 turns the feature off.
func share(p *problems, key string, f float64) {
	if f < 0 || f > 1 {
		p.addf(key, "must be 0 to 1, got %v", f)
	}
}

// rate is an alert threshold: 0 would fire on every request.
func rate(p *problems, key string, f float64) {
	if f <= 0 || f > 1 {
		p.addf(key, "must be more than 0 and at most 1, got %v", f)
	}
}
