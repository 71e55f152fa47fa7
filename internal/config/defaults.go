package config

import "time"

// Per-sink defaults, filled by Sink.WithDefaults into the zero fields of each
// sink (a list item cannot take defaults from a merge the way a section can).
const (
	defaultSinkKind        = "alert"
	defaultSinkMinSeverity = "info"
	defaultSinkBatchSize   = 100
	defaultSinkMaxAttempts = 5
	defaultSinkBackoff     = time.Second
	defaultSinkMaxBackoff  = time.Minute
	defaultSinkTimeout     = 10 * time.Second
	defaultLogSinkSubjects = "agent.>"
)

// Default returns the configuration used where neither the file, the
// environment nor a flag says otherwise. Every call returns fresh maps, so a
// caller may change the result freely.
func Default() Config {
	return Config{
		NATS: NATS{
			URL: "nats://127.0.0.1:4222",
			Embedded: Embedded{
				ConfigFile: "nats.conf",
				StoreDir:   "./var/nats",
				Host:       "127.0.0.1",
				Port:       4222,
			},
			Streams: Streams{
				Calls:  Stream{Replicas: 1, Storage: "file", MaxAge: 7 * 24 * time.Hour, DuplicateWindow: 2 * time.Minute},
				Events: Stream{Replicas: 1, Storage: "file", MaxAge: 7 * 24 * time.Hour, DuplicateWindow: 2 * time.Minute},
				Alerts: Stream{Replicas: 1, Storage: "file", MaxAge: 30 * 24 * time.Hour, DuplicateWindow: 2 * time.Minute},
			},
			Buckets:        Buckets{Replicas: 1},
			ConnectTimeout: 5 * time.Second,
		},
		Services: map[string]Service{
			ServiceLLM:        defaultService(30 * time.Second),
			ServiceElevenLabs: defaultService(30 * time.Second),
			ServiceTelephony:  defaultService(15 * time.Second),
			ServiceCRM:        defaultService(10 * time.Second),
		},
		Dispatcher: Dispatcher{
			Campaign:           "default",
			DefaultRegion:      "US",
			DefaultTimezone:    "UTC",
			CallingWindow:      "08:00-21:00",
			MaxAttempts:        3,
			NoAnswerRetryDelay: 4 * time.Hour,
			StateBucket:        "campaigns",
		},
		Caller: Caller{
			Concurrency:      4,
			FleetMaxInFlight: 64,
			AckWait:          30 * time.Second,
			ShutdownGrace:    30 * time.Second,
			CallTimeout:      10 * time.Minute,
			Consumer:         "callers",
		},
		Observer: Observer{
			HTTP: HTTP{Addr: "127.0.0.1:8080"},
			Rules: Rules{
				DownFor:         5 * time.Minute,
				ErrorRate:       0.10,
				RetryRate:       0.30,
				RateWindow:      5 * time.Minute,
				RateMinRequests: 10,
				Latency:         5 * time.Second,
				RepeatInterval:  4 * time.Hour,
				GroupWait:       10 * time.Second,
			},
			PluginDir: "./bin/plugins",
			Consumer:  "observer",
			Lease:     Lease{TTL: 10 * time.Second},
		},
		Media: Media{
			HTTP:        HTTP{Addr: "127.0.0.1:8090"},
			AudioMaxAge: 24 * time.Hour,
			URLTTL:      time.Hour,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// defaultService is the policy every external API starts from: the seed
// scenario's 5 s, 10 s, 20 s backoff (before jitter), a breaker that opens
// after five failures in a row, and a probe every 15 s.
func defaultService(timeout time.Duration) Service {
	return Service{
		Timeout: timeout,
		Retry: Retry{
			MaxRetries:   3,
			InitialDelay: 5 * time.Second,
			Multiplier:   2,
			MaxDelay:     60 * time.Second,
			Jitter:       0.1,
			Budget:       0.2,
			BudgetWindow: time.Minute,
		},
		Breaker: Breaker{
			FailureThreshold: 5,
			RecoveryTimeout:  30 * time.Second,
			HalfOpenRequests: 1,
			FailureRate:      0.5,
			Window:           60 * time.Second,
			MinRequests:      10,
		},
		Health: Health{Enabled: true, Interval: 15 * time.Second, Timeout: 5 * time.Second},
	}
}

// WithDefaults returns s with its zero fields set to the per-sink defaults:
// kind alert, min_severity info, every agent subject for a log sink, batches
// of up to 100 gathered adaptively (batch_wait 0: see below), 5 attempts, backoff 1s up to 1m, a 10s timeout.
// Validate applies it to every sink; code that builds a Sink by hand (the
// observer's delivery, tests) calls it so that a zero field means the same
// there. A negative number is left as it is, for Validate to report.
//
// batch_wait stays 0 unless set: the observer then batches adaptively, like
// Nagle's algorithm. An idle sink gets a record at once; while a delivery is
// in flight the records that come gather into the next batch. A fixed wait
// made every alert wait for it even when nothing else was coming, and
// capped a busy log sink at one batch per wait. A positive batch_wait
// still gathers for that long, for a channel that wants few, full batches
// (a rate-limited API).
func (s Sink) WithDefaults() Sink {
	if s.Kind == "" {
		s.Kind = defaultSinkKind
	}
	if s.MinSeverity == "" {
		s.MinSeverity = defaultSinkMinSeverity
	}
	if s.Kind == "log" && len(s.Subjects) == 0 {
		s.Subjects = []string{defaultLogSinkSubjects}
	}
	if s.BatchSize == 0 {
		s.BatchSize = defaultSinkBatchSize
	}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = defaultSinkMaxAttempts
	}
	if s.Backoff == 0 {
		s.Backoff = defaultSinkBackoff
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = defaultSinkMaxBackoff
	}
	if s.Timeout == 0 {
		s.Timeout = defaultSinkTimeout
	}
	return s
}
