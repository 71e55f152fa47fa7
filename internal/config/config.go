// Package config owns the one configuration file every process reads. It is the
// only package that imports koanf: defaults, then the YAML file, then AGENT_
// environment variables (with "__" between levels), then command-line flags.
package config

import (
	"fmt"
	"strings"
	"time"
)

// Service names the caller knows. A services section with any other name is an error.
const (
	ServiceLLM        = "llm"
	ServiceElevenLabs = "elevenlabs"
	ServiceTelephony  = "telephony"
	ServiceCRM        = "crm"
)

// Services lists the known services in call-flow order.
var Services = []string{ServiceLLM, ServiceElevenLabs, ServiceTelephony, ServiceCRM}

// NATS roles, one user each in nats.conf. A nats.roles entry with any other name
// is an error.
const (
	RoleAdmin      = "admin"
	RoleDispatcher = "dispatcher"
	RoleCaller     = "caller"
	RoleObserver   = "observer"
	RoleTail       = "tail"
	// RoleMedia reads the call audio bucket for cmd/media.
	RoleMedia = "media"
	// RoleOperator manages silences (observer silence); it reads and writes
	// the silences bucket only.
	RoleOperator = "operator"
)

// Roles lists the known NATS roles.
var Roles = []string{RoleAdmin, RoleDispatcher, RoleCaller, RoleObserver, RoleTail, RoleMedia, RoleOperator}

// Config is the whole configuration.
type Config struct {
	NATS       NATS               `koanf:"nats"`
	Services   map[string]Service `koanf:"services"`
	Dispatcher Dispatcher         `koanf:"dispatcher"`
	Caller     Caller             `koanf:"caller"`
	Observer   Observer           `koanf:"observer"`
	Media      Media              `koanf:"media"`
	Sinks      []Sink             `koanf:"sinks"`
	Log        Log                `koanf:"log"`
}

// NATS says how to reach the bus and how its streams are shaped.
type NATS struct {
	// URL of the NATS server or cluster (comma-separated). Empty with Embedded
	// set means the process that starts the embedded server.
	URL string `koanf:"url"`
	// User and Password authenticate this process's role (see nats.conf).
	User     string `koanf:"user"`
	Password string `koanf:"password"`
	// Creds is a path to a NATS credentials file, an alternative to User/Password.
	Creds string `koanf:"creds"`
	// Embedded runs nats-server in-process (single-host mode).
	Embedded Embedded `koanf:"embedded"`
	// Streams shapes CALLS, EVENTS and ALERTS.
	Streams Streams `koanf:"streams"`
	// Buckets shapes the key-value and object store buckets (bus.Buckets,
	// call_audio) where they are created.
	Buckets Buckets `koanf:"buckets"`
	// ConnectTimeout bounds the first connection.
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// Roles holds one set of credentials per role (admin, dispatcher, caller,
	// observer, tail) so that one file serves every process; For picks one.
	Roles map[string]Credentials `koanf:"roles"`
}

// Credentials authenticate one NATS role: User and Password, or Creds (a path
// to a credentials file).
type Credentials struct {
	User     string `koanf:"user"`
	Password string `koanf:"password"`
	Creds    string `koanf:"creds"`
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	Enabled bool `koanf:"enabled"`
	// ConfigFile is a nats-server configuration file, normally nats.conf.
	ConfigFile string `koanf:"config_file"`
	// StoreDir is the JetStream file store.
	StoreDir string `koanf:"store_dir"`
	// Host and Port override the listen address of ConfigFile (default 127.0.0.1:4222).
	Host string `koanf:"host"`
	Port int    `koanf:"port"`
}

// Streams holds one Stream per contract stream.
type Streams struct {
	Calls  Stream `koanf:"calls"`
	Events Stream `koanf:"events"`
	Alerts Stream `koanf:"alerts"`
}

// Buckets shapes every key-value and object store bucket.
type Buckets struct {
	// Replicas is how many servers keep each bucket: 1 on one host, 3 in
	// a cluster, as the streams.
	Replicas int `koanf:"replicas"`
}

// Stream shapes one JetStream stream.
type Stream struct {
	Replicas int `koanf:"replicas"`
	// Storage is "file" or "memory".
	Storage         string        `koanf:"storage"`
	MaxAge          time.Duration `koanf:"max_age"`
	MaxBytes        int64         `koanf:"max_bytes"`
	DuplicateWindow time.Duration `koanf:"duplicate_window"`
}

// Service configures one external API.
type Service struct {
	BaseURL string        `koanf:"base_url"`
	APIKey  string        `koanf:"api_key"`
	Timeout time.Duration `koanf:"timeout"`
	Retry   Retry         `koanf:"retry"`
	Breaker Breaker       `koanf:"breaker"`
	Health  Health        `koanf:"health"`
	// Options holds provider-specific settings: voice_id, model, account_sid,
	// from_number, and so on.
	Options map[string]string `koanf:"options"`
}

// Retry is an exponential backoff policy.
type Retry struct {
	// MaxRetries is how many retries follow the first attempt.
	MaxRetries   int           `koanf:"max_retries"`
	InitialDelay time.Duration `koanf:"initial_delay"`
	Multiplier   float64       `koanf:"multiplier"`
	MaxDelay     time.Duration `koanf:"max_delay"`
	// Jitter is the random share of each delay, 0 to 1.
	Jitter float64 `koanf:"jitter"`
	// Budget caps retries at a share of requests over BudgetWindow (0 disables).
	Budget       float64       `koanf:"budget"`
	BudgetWindow time.Duration `koanf:"budget_window"`
}

// Breaker configures a circuit breaker.
type Breaker struct {
	FailureThreshold int           `koanf:"failure_threshold"`
	RecoveryTimeout  time.Duration `koanf:"recovery_timeout"`
	HalfOpenRequests int           `koanf:"half_open_requests"`
	// FailureRate trips the breaker when the share of failures over Window
	// exceeds it with at least MinRequests calls (0 disables).
	FailureRate float64       `koanf:"failure_rate"`
	Window      time.Duration `koanf:"window"`
	MinRequests int           `koanf:"min_requests"`
}

// Health configures background health probes.
type Health struct {
	Enabled  bool          `koanf:"enabled"`
	Interval time.Duration `koanf:"interval"`
	Timeout  time.Duration `koanf:"timeout"`
}

// Dispatcher configures cmd/dispatcher.
type Dispatcher struct {
	Campaign      string `koanf:"campaign"`
	DefaultRegion string `koanf:"default_region"`
	// DefaultTimezone applies to contacts without a timezone column.
	DefaultTimezone string `koanf:"default_timezone"`
	// CallingWindow is local hours, "08:00-21:00".
	CallingWindow string `koanf:"calling_window"`
	// MaxAttempts is the per-contact attempt cap across re-queues.
	MaxAttempts int `koanf:"max_attempts"`
	// SkippedRetryDelay re-queues a skipped contact (breaker open); 0 means the
	// breaker's recovery time carried on the skipped event.
	SkippedRetryDelay time.Duration `koanf:"skipped_retry_delay"`
	// NoAnswerRetryDelay re-queues busy and no-answer contacts much later.
	NoAnswerRetryDelay time.Duration `koanf:"no_answer_retry_delay"`
	// StateBucket is the key-value bucket that holds campaign state.
	StateBucket string `koanf:"state_bucket"`
	// MaxCallsPerSecond and MaxConcurrentCalls are the pacing a campaign
	// starts with when `dispatcher run` first sees it (it has no control
	// record yet); `dispatcher pace` changes it later. 0 is no limit.
	MaxCallsPerSecond  int `koanf:"max_calls_per_second"`
	MaxConcurrentCalls int `koanf:"max_concurrent_calls"`
}

// Caller configures cmd/caller.
type Caller struct {
	// Concurrency is how many calls this caller runs at once.
	Concurrency int `koanf:"concurrency"`
	// FleetMaxInFlight caps calls in flight across all callers (the shared
	// consumer's MaxAckPending).
	FleetMaxInFlight int `koanf:"fleet_max_in_flight"`
	// AckWait is how long a request may go without a sign of life before
	// another caller takes it.
	AckWait time.Duration `koanf:"ack_wait"`
	// ShutdownGrace is how long SIGTERM waits for in-flight calls.
	ShutdownGrace time.Duration `koanf:"shutdown_grace"`
	// CallTimeout bounds one whole call flow.
	CallTimeout time.Duration `koanf:"call_timeout"`
	Consumer    string        `koanf:"consumer"`
	// Name identifies this caller in events' source; defaults to host-pid.
	Name string `koanf:"name"`
}

// Media configures where call audio is kept and how the telephony provider
// fetches it: cmd/media serves it, the caller stores it.
type Media struct {
	// HTTP is where cmd/media listens.
	HTTP HTTP `koanf:"http"`
	// PublicURL is the base the telephony provider reaches cmd/media at,
	// such as https://media.example.com; the call's TwiML is at
	// PublicURL/twiml/<call_id>. Empty keeps services.telephony.options.twiml_url.
	PublicURL string `koanf:"public_url"`
	// AudioMaxAge is how long a call's audio is kept in the call_audio bucket.
	AudioMaxAge time.Duration `koanf:"audio_max_age"`
	// SigningKey, when set, signs the TwiML and audio URLs (HMAC-SHA256
	// over the call id and an expiry) so that audio cannot be enumerated;
	// the caller and cmd/media must share it.
	SigningKey string `koanf:"signing_key"`
	// URLTTL is how long a signed URL is valid.
	URLTTL time.Duration `koanf:"url_ttl"`
}

// Observer configures cmd/observer.
type Observer struct {
	HTTP  HTTP  `koanf:"http"`
	Rules Rules `koanf:"rules"`
	// PluginDir is where plugin binaries named by sinks[].plugin are found.
	PluginDir string `koanf:"plugin_dir"`
	Consumer  string `koanf:"consumer"`
	// Lease elects the one active observer among those sharing Consumer.
	Lease Lease `koanf:"lease"`
}

// Lease is the observers' lease in the bucket observer_lease: the active
// observer renews it every TTL/3; a standby takes over once it has not been
// renewed for TTL.
type Lease struct {
	TTL time.Duration `koanf:"ttl"`
}

// HTTP is a listen address.
type HTTP struct {
	Addr string `koanf:"addr"`
}

// Rules holds the alert thresholds.
type Rules struct {
	DownFor         time.Duration `koanf:"down_for"`
	ErrorRate       float64       `koanf:"error_rate"`
	RetryRate       float64       `koanf:"retry_rate"`
	RateWindow      time.Duration `koanf:"rate_window"`
	RateMinRequests int           `koanf:"rate_min_requests"`
	Latency         time.Duration `koanf:"latency"`
	RepeatInterval  time.Duration `koanf:"repeat_interval"`
	GroupWait       time.Duration `koanf:"group_wait"`
}

// Sink configures one alert or log sink plugin.
type Sink struct {
	Name string `koanf:"name"`
	// Plugin is the plugin binary: a path, or a name under observer.plugin_dir.
	Plugin string `koanf:"plugin"`
	// SHA256 pins the plugin binary's checksum (hex); empty skips the check.
	SHA256 string `koanf:"sha256"`
	// Kind is "alert" (consumes ALERTS) or "log" (consumes EVENTS).
	Kind        string `koanf:"kind"`
	MinSeverity string `koanf:"min_severity"`
	// Subjects narrows a log sink to some event subjects (default agent.>).
	Subjects    []string      `koanf:"subjects"`
	BatchSize   int           `koanf:"batch_size"`
	BatchWait   time.Duration `koanf:"batch_wait"`
	MaxAttempts int           `koanf:"max_attempts"`
	Backoff     time.Duration `koanf:"backoff"`
	MaxBackoff  time.Duration `koanf:"max_backoff"`
	Timeout     time.Duration `koanf:"timeout"`
	// Start is where a new sink's durable consumer begins: "now" (the
	// default: only what is published from then on), "all" (the stream's
	// whole history), a duration such as "24h" (that long ago) or an RFC 3339
	// time. A sink whose consumer exists keeps its position; see StartFrom.
	Start string `koanf:"start"`
	// Config is handed to the plugin as it is; keys named like secrets
	// (token, password, secret, api_key, credentials) are redacted when printed.
	Config map[string]any `koanf:"config"`
}

// StartFrom reads Start: all is true for "all"; otherwise from is the
// time a new consumer starts at, zero for "now" (new messages only).
func (s Sink) StartFrom(now time.Time) (all bool, from time.Time, err error) {
	switch v := strings.TrimSpace(s.Start); v {
	case "", "now":
		return false, time.Time{}, nil
	case "all":
		return true, time.Time{}, nil
	default:
		if d, derr := time.ParseDuration(v); derr == nil {
			if d <= 0 {
				return false, time.Time{}, fmt.Errorf("a duration must be more than 0, got %q", v)
			}
			return false, now.Add(-d), nil
		}
		if t, terr := time.Parse(time.RFC3339, v); terr == nil {
			return false, t, nil
		}
		return false, time.Time{}, fmt.Errorf(`want "now", "all", a duration such as "24h" or an RFC 3339 time such as "2026-01-02T15:04:05Z", got %q`, v)
	}
}

// Log configures the process's own structured log.
type Log struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}
