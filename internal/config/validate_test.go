package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// service changes one service of a default configuration.
func service(name string, f func(*Service)) func(*Config) {
	return func(c *Config) {
		s := c.Services[name]
		f(&s)
		c.Services[name] = s
	}
}

func validSink() Sink { return Sink{Name: "mail", Plugin: "email"} }

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		key    string // "" means valid
		msg    string
	}{
		{name: "defaults", change: func(*Config) {}},
		{name: "unknown service", change: func(c *Config) { c.Services["foo"] = Default().Services[ServiceCRM] },
			key: "services.foo", msg: "services.foo: unknown service (known: llm, elevenlabs, telephony, crm)"},
		{name: "multiplier below 1", change: service(ServiceElevenLabs, func(s *Service) { s.Retry.Multiplier = 0.5 }),
			key: "services.elevenlabs.retry.multiplier", msg: "services.elevenlabs.retry.multiplier: must be at least 1, got 0.5"},
		{name: "base_url not http", change: service(ServiceCRM, func(s *Service) { s.BaseURL = "ftp://crm.example.com" }),
			key: "services.crm.base_url", msg: "services.crm.base_url: not an http(s) URL"},
		{name: "base_url without scheme", change: service(ServiceCRM, func(s *Service) { s.BaseURL = "crm.example.com/v3" }),
			key: "services.crm.base_url"},
		{name: "base_url https", change: service(ServiceCRM, func(s *Service) { s.BaseURL = "https://api.hubapi.com" })},
		{name: "jitter above 1", change: service(ServiceLLM, func(s *Service) { s.Retry.Jitter = 1.5 }),
			key: "services.llm.retry.jitter", msg: "must be 0 to 1, got 1.5"},
		{name: "jitter negative", change: service(ServiceLLM, func(s *Service) { s.Retry.Jitter = -0.1 }), key: "services.llm.retry.jitter"},
		{name: "jitter 0 is exact delays", change: service(ServiceLLM, func(s *Service) { s.Retry.Jitter = 0 })},
		{name: "negative retries", change: service(ServiceLLM, func(s *Service) { s.Retry.MaxRetries = -1 }), key: "services.llm.retry.max_retries"},
		{name: "no retries needs no delay", change: service(ServiceLLM, func(s *Service) { s.Retry.MaxRetries, s.Retry.InitialDelay = 0, 0 })},
		{name: "zero initial delay", change: service(ServiceLLM, func(s *Service) { s.Retry.InitialDelay = 0 }), key: "services.llm.retry.initial_delay"},
		{name: "max_delay below initial", change: service(ServiceLLM, func(s *Service) { s.Retry.MaxDelay = time.Second }),
			key: "services.llm.retry.max_delay", msg: "must be at least initial_delay (5s), got 1s"},
		{name: "budget above 1", change: service(ServiceLLM, func(s *Service) { s.Retry.Budget = 2 }), key: "services.llm.retry.budget"},
		{name: "budget without window", change: service(ServiceLLM, func(s *Service) { s.Retry.BudgetWindow = 0 }), key: "services.llm.retry.budget_window"},
		{name: "timeout zero", change: service(ServiceTelephony, func(s *Service) { s.Timeout = 0 }),
			key: "services.telephony.timeout", msg: "must be more than 0, got 0s"},
		{name: "failure threshold 0", change: service(ServiceCRM, func(s *Service) { s.Breaker.FailureThreshold = 0 }),
			key: "services.crm.breaker.failure_threshold", msg: "must be at least 1, got 0"},
		{name: "half-open requests 0", change: service(ServiceCRM, func(s *Service) { s.Breaker.HalfOpenRequests = 0 }), key: "services.crm.breaker.half_open_requests"},
		{name: "recovery timeout 0", change: service(ServiceCRM, func(s *Service) { s.Breaker.RecoveryTimeout = 0 }), key: "services.crm.breaker.recovery_timeout"},
		{name: "failure rate above 1", change: service(ServiceCRM, func(s *Service) { s.Breaker.FailureRate = 50 }), key: "services.crm.breaker.failure_rate"},
		{name: "failure rate off needs no window", change: service(ServiceCRM, func(s *Service) { s.Breaker.FailureRate, s.Breaker.Window, s.Breaker.MinRequests = 0, 0, 0 })},
		{name: "health timeout above interval", change: service(ServiceCRM, func(s *Service) { s.Health.Timeout = time.Minute }), key: "services.crm.health.timeout"},
		{name: "health off needs no interval", change: service(ServiceCRM, func(s *Service) { s.Health = Health{} })},
		{name: "nats url missing", change: func(c *Config) { c.NATS.URL = "" }, key: "nats.url"},
		{name: "nats url missing with embedded", change: func(c *Config) { c.NATS.URL, c.NATS.Embedded.Enabled = "", true }},
		{name: "nats cluster urls", change: func(c *Config) { c.NATS.URL = "nats://a:4222, tls://b:4222,c:4222" }},
		{name: "nats url scheme", change: func(c *Config) { c.NATS.URL = "http://127.0.0.1:4222" }, key: "nats.url", msg: `scheme "http"`},
		{name: "nats password without user", change: func(c *Config) { c.NATS.Password = "x" }, key: "nats.user"},
		{name: "nats creds and password", change: func(c *Config) { c.NATS.User, c.NATS.Password, c.NATS.Creds = "u", "p", "/x.creds" }, key: "nats"},
		{name: "known role", change: func(c *Config) { c.NATS.Roles = map[string]Credentials{RoleTail: {Password: "x"}} }},
		{name: "unknown role", change: func(c *Config) { c.NATS.Roles = map[string]Credentials{"worker": {Password: "x"}} },
			key: "nats.roles.worker", msg: "unknown role"},
		{name: "embedded port", change: func(c *Config) { c.NATS.Embedded.Enabled, c.NATS.Embedded.Port = true, 70000 }, key: "nats.embedded.port"},
		{name: "connect timeout", change: func(c *Config) { c.NATS.ConnectTimeout = 0 }, key: "nats.connect_timeout"},
		{name: "replicas 0", change: func(c *Config) { c.NATS.Streams.Calls.Replicas = 0 }, key: "nats.streams.calls.replicas", msg: "must be 1 to 5, got 0"},
		{name: "replicas 6", change: func(c *Config) { c.NATS.Streams.Events.Replicas = 6 }, key: "nats.streams.events.replicas"},
		{name: "replicas 3", change: func(c *Config) { c.NATS.Streams.Events.Replicas = 3 }},
		{name: "storage", change: func(c *Config) { c.NATS.Streams.Alerts.Storage = "disk" }, key: "nats.streams.alerts.storage", msg: "must be file or memory"},
		{name: "memory storage", change: func(c *Config) { c.NATS.Streams.Alerts.Storage = "memory" }},
		{name: "duplicate window past max age", change: func(c *Config) {
			c.NATS.Streams.Calls.MaxAge = time.Minute
			c.Dispatcher.NoAnswerRetryDelay = time.Second
		}, key: "nats.streams.calls.duplicate_window"},
		{name: "calling window", change: func(c *Config) { c.Dispatcher.CallingWindow = "8-21" }, key: "dispatcher.calling_window", msg: "HH:MM-HH:MM"},
		{name: "calling window hour 25", change: func(c *Config) { c.Dispatcher.CallingWindow = "08:00-25:00" }, key: "dispatcher.calling_window"},
		{name: "calling window empty", change: func(c *Config) { c.Dispatcher.CallingWindow = "09:00-09:00" }, key: "dispatcher.calling_window"},
		{name: "calling window over midnight", change: func(c *Config) { c.Dispatcher.CallingWindow = "22:00-06:00" }},
		{name: "calling window to midnight", change: func(c *Config) { c.Dispatcher.CallingWindow = "08:00-24:00" }},
		{name: "time zone", change: func(c *Config) { c.Dispatcher.DefaultTimezone = "Mars/Olympus" }, key: "dispatcher.default_timezone", msg: "unknown time zone"},
		{name: "IANA time zone", change: func(c *Config) { c.Dispatcher.DefaultTimezone = "Asia/Kolkata" }},
		{name: "region", change: func(c *Config) { c.Dispatcher.DefaultRegion = "usa" }, key: "dispatcher.default_region"},
		{name: "campaign with a dot", change: func(c *Config) { c.Dispatcher.Campaign = "spring.sale" }, key: "dispatcher.campaign"},
		{name: "dispatcher attempts", change: func(c *Config) { c.Dispatcher.MaxAttempts = 0 }, key: "dispatcher.max_attempts"},
		{name: "re-queue past CALLS max age", change: func(c *Config) { c.Dispatcher.NoAnswerRetryDelay = 8 * 24 * time.Hour }, key: "dispatcher.no_answer_retry_delay", msg: "nats.streams.calls.max_age"},
		{name: "skip re-queue past CALLS max age", change: func(c *Config) {
			c.NATS.Streams.Calls.MaxAge = 5 * time.Hour
			c.Dispatcher.SkippedRetryDelay = 5 * time.Hour
		}, key: "dispatcher.skipped_retry_delay"},
		{name: "concurrency", change: func(c *Config) { c.Caller.Concurrency = 0 }, key: "caller.concurrency", msg: "must be at least 1, got 0"},
		{name: "ack wait", change: func(c *Config) { c.Caller.AckWait = -time.Second }, key: "caller.ack_wait"},
		{name: "consumer name", change: func(c *Config) { c.Caller.Consumer = "my callers" }, key: "caller.consumer"},
		{name: "http addr", change: func(c *Config) { c.Observer.HTTP.Addr = "8080" }, key: "observer.http.addr"},
		{name: "error rate", change: func(c *Config) { c.Observer.Rules.ErrorRate = 10 }, key: "observer.rules.error_rate"},
		{name: "lease ttl", change: func(c *Config) { c.Observer.Lease.TTL = 500 * time.Millisecond }, key: "observer.lease.ttl"},
		{name: "rate min requests", change: func(c *Config) { c.Observer.Rules.RateMinRequests = 0 }, key: "observer.rules.rate_min_requests"},
		{name: "log level", change: func(c *Config) { c.Log.Level = "verbose" }, key: "log.level"},
		{name: "log format", change: func(c *Config) { c.Log.Format = "xml" }, key: "log.format"},
		{name: "sink", change: func(c *Config) { c.Sinks = []Sink{validSink()} }},
		{name: "sink without name", change: func(c *Config) { c.Sinks = []Sink{{Plugin: "email"}} }, key: "sinks[0].name", msg: "required"},
		{name: "sink name not a token", change: func(c *Config) { c.Sinks = []Sink{{Name: "My Mail", Plugin: "email"}} }, key: "sinks[0].name"},
		{name: "sink name upper case", change: func(c *Config) { c.Sinks = []Sink{{Name: "Mail", Plugin: "email"}} }, key: "sinks[0].name"},
		{name: "sink names unique", change: func(c *Config) { c.Sinks = []Sink{validSink(), validSink()} }, key: "sinks[1].name", msg: "already the name of sinks[0]"},
		{name: "sink plugin", change: func(c *Config) { c.Sinks = []Sink{{Name: "mail"}} }, key: "sinks.mail.plugin", msg: "required"},
		{name: "sink kind", change: func(c *Config) { s := validSink(); s.Kind = "metric"; c.Sinks = []Sink{s} }, key: "sinks.mail.kind", msg: "must be alert or log"},
		{name: "sink severity", change: func(c *Config) { s := validSink(); s.MinSeverity = "error"; c.Sinks = []Sink{s} }, key: "sinks.mail.min_severity"},
		{name: "sink sha256 short", change: func(c *Config) { s := validSink(); s.SHA256 = "abc"; c.Sinks = []Sink{s} }, key: "sinks.mail.sha256", msg: "64 hex"},
		{name: "sink sha256 not hex", change: func(c *Config) { s := validSink(); s.SHA256 = strings.Repeat("g", 64); c.Sinks = []Sink{s} }, key: "sinks.mail.sha256"},
		{name: "sink sha256", change: func(c *Config) { s := validSink(); s.SHA256 = strings.Repeat("aB3", 21) + "f"; c.Sinks = []Sink{s} }},
		{name: "sink batch size", change: func(c *Config) { s := validSink(); s.BatchSize = -1; c.Sinks = []Sink{s} }, key: "sinks.mail.batch_size"},
		{name: "sink max_backoff below backoff", change: func(c *Config) { s := validSink(); s.Backoff = time.Hour; c.Sinks = []Sink{s} }, key: "sinks.mail.max_backoff"},
		{name: "sink start now", change: func(c *Config) { s := validSink(); s.Start = "now"; c.Sinks = []Sink{s} }},
		{name: "sink start all", change: func(c *Config) { s := validSink(); s.Start = "all"; c.Sinks = []Sink{s} }},
		{name: "sink start duration", change: func(c *Config) { s := validSink(); s.Start = "24h"; c.Sinks = []Sink{s} }},
		{name: "sink start time", change: func(c *Config) { s := validSink(); s.Start = "2026-01-02T15:04:05Z"; c.Sinks = []Sink{s} }},
		{name: "sink start word", change: func(c *Config) { s := validSink(); s.Start = "yesterday"; c.Sinks = []Sink{s} }, key: "sinks.mail.start", msg: `want "now", "all", a duration such as "24h" or an RFC 3339 time`},
		{name: "sink start negative", change: func(c *Config) { s := validSink(); s.Start = "-1h"; c.Sinks = []Sink{s} }, key: "sinks.mail.start", msg: "more than 0"},
		{name: "sink subject", change: func(c *Config) {
			s := validSink()
			s.Kind, s.Subjects = "log", []string{"calls.>"}
			c.Sinks = []Sink{s}
		}, key: "sinks.mail.subjects[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(&c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			kes := keyErrors(err)
			if len(kes) != 1 {
				t.Fatalf("want one problem at %s, got %d: %v", tt.key, len(kes), err)
			}
			if kes[0].Key != tt.key {
				t.Errorf("key = %q, want %q (%v)", kes[0].Key, tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), tt.key+": ") {
				t.Errorf("error %q does not start with the key", err)
			}
		})
	}
}

func TestValidateJoinsAll(t *testing.T) {
	c := Default()
	c.Caller.Concurrency = 0
	c.Log.Level = "loud"
	c.Services["sms"] = Service{}
	c.Sinks = []Sink{{Name: "x", Plugin: "p", Kind: "both"}}
	err := c.Validate()
	got := map[string]bool{}
	for _, ke := range keyErrors(err) {
		got[ke.Key] = true
	}
	for _, key := range []string{"caller.concurrency", "log.level", "services.sms", "sinks.x.kind"} {
		if !got[key] {
			t.Errorf("%s not reported in:\n%v", key, err)
		}
	}
	if !errors.Is(err, ErrUnknownService) || !errors.Is(err, ErrInvalid) {
		t.Errorf("joined error does not carry the sentinels: %v", err)
	}
}

func TestValidateFillsSinkDefaults(t *testing.T) {
	c := Default()
	c.Sinks = []Sink{
		{Name: "mail", Plugin: "email"},
		{Name: "log", Plugin: "jsonl", Kind: "log", BatchSize: 10},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	mail, log := c.Sinks[0], c.Sinks[1]
	if mail.Kind != "alert" || mail.MinSeverity != "info" || mail.BatchSize != 100 || mail.BatchWait != 0 ||
		mail.MaxAttempts != 5 || mail.Backoff != time.Second || mail.MaxBackoff != time.Minute || mail.Timeout != 10*time.Second {
		t.Errorf("alert sink defaults: %v", mail)
	}
	if len(mail.Subjects) != 0 {
		t.Errorf("alert sink got subjects %q", mail.Subjects)
	}
	if log.BatchSize != 10 || len(log.Subjects) != 1 || log.Subjects[0] != "agent.>" {
		t.Errorf("log sink defaults: %v", log)
	}
}

func TestSinkWithDefaults(t *testing.T) {
	alert := Sink{Name: "mail", Plugin: "email", Kind: "alert", MinSeverity: "info", BatchSize: 100,
		MaxAttempts: 5, Backoff: time.Second, MaxBackoff: time.Minute, Timeout: 10 * time.Second}
	set := Sink{Name: "log", Plugin: "jsonl", Kind: "log", MinSeverity: "critical", Subjects: []string{"agent.call.>"},
		BatchSize: 7, BatchWait: 2 * time.Second, MaxAttempts: 50, Backoff: 3 * time.Second, MaxBackoff: time.Hour, Timeout: time.Second}
	tests := []struct {
		name string
		in   Sink
		want Sink
	}{
		{"zero fields take the defaults", Sink{Name: "mail", Plugin: "email"}, alert},
		{"a log sink reads every subject", Sink{Name: "log", Plugin: "jsonl", Kind: "log"},
			func() Sink {
				s := alert
				s.Name, s.Plugin, s.Kind, s.Subjects = "log", "jsonl", "log", []string{"agent.>"}
				return s
			}()},
		{"set fields stay", set, set},
		{"negatives stay for Validate", Sink{Name: "mail", Plugin: "email", BatchSize: -1, Timeout: -time.Second},
			func() Sink { s := alert; s.BatchSize, s.Timeout = -1, -time.Second; return s }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			got := tt.in.WithDefaults()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("WithDefaults() =\n%+v\nwant\n%+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.in, in) {
				t.Errorf("WithDefaults changed its receiver: %+v", tt.in)
			}
		})
	}
}

func TestRequireServices(t *testing.T) {
	c := Default()
	err := c.RequireServices()
	if len(keyErrors(err)) != len(Services) {
		t.Fatalf("want every service's base_url required, got %v", err)
	}
	for _, name := range Services {
		service(name, func(s *Service) { s.BaseURL = "http://127.0.0.1:8900/" + name })(&c)
	}
	if err := c.RequireServices(); err != nil {
		t.Fatal(err)
	}
}

func TestFor(t *testing.T) {
	n := NATS{
		URL: "nats://127.0.0.1:4222", User: "shared", Password: "shared-pw",
		Roles: map[string]Credentials{
			RoleCaller:   {User: "caller", Password: "caller-pw"},
			RoleObserver: {Password: "observer-pw"},
			RoleTail:     {Creds: "/etc/agent/tail.creds"},
			RoleAdmin:    {},
		},
	}
	tests := []struct {
		role string
		want Credentials
	}{
		{RoleCaller, Credentials{User: "caller", Password: "caller-pw"}},
		{RoleObserver, Credentials{User: "observer", Password: "observer-pw"}},
		{RoleTail, Credentials{Creds: "/etc/agent/tail.creds"}},
		{RoleAdmin, Credentials{User: "shared", Password: "shared-pw"}},
		{RoleDispatcher, Credentials{User: "shared", Password: "shared-pw"}},
		{"", Credentials{User: "shared", Password: "shared-pw"}},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			got := n.For(tt.role)
			if c := (Credentials{User: got.User, Password: got.Password, Creds: got.Creds}); c != tt.want {
				t.Errorf("For(%q) credentials = %#v, want %#v", tt.role, c.Redacted(), tt.want.Redacted())
			}
			if got.URL != n.URL {
				t.Errorf("For changed the URL to %q", got.URL)
			}
		})
	}
	if n.User != "shared" {
		t.Error("For changed its receiver")
	}
}

func TestCallingHours(t *testing.T) {
	tests := []struct {
		window   string
		from, to time.Duration
		ok       bool
	}{
		{"08:00-21:00", 8 * time.Hour, 21 * time.Hour, true},
		{"22:30-06:15", 22*time.Hour + 30*time.Minute, 6*time.Hour + 15*time.Minute, true},
		{"00:00-24:00", 0, 24 * time.Hour, true},
		{" 09:00 - 17:00 ", 9 * time.Hour, 17 * time.Hour, true},
		{"8:00-21:00", 0, 0, false},
		{"08:00", 0, 0, false},
		{"08:60-21:00", 0, 0, false},
		{"24:30-01:00", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.window, func(t *testing.T) {
			from, to, err := Dispatcher{CallingWindow: tt.window}.CallingHours()
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if from != tt.from || to != tt.to {
				t.Errorf("got %s-%s, want %s-%s", from, to, tt.from, tt.to)
			}
		})
	}
}
