package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// writeConfig writes a YAML file into a fresh temporary directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadNothingIsDefault(t *testing.T) {
	got, err := Load(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with nothing set differs from Default():\n got %s\nwant %s", got, want)
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	timeouts := map[string]time.Duration{ServiceLLM: 30 * time.Second, ServiceElevenLabs: 30 * time.Second, ServiceTelephony: 15 * time.Second, ServiceCRM: 10 * time.Second}
	for _, name := range Services {
		s, ok := d.Services[name]
		if !ok {
			t.Fatalf("service %s missing from Default()", name)
		}
		if s.Timeout != timeouts[name] {
			t.Errorf("%s timeout = %s, want %s", name, s.Timeout, timeouts[name])
		}
		if s.Retry.InitialDelay != 5*time.Second || s.Retry.Multiplier != 2 || s.Retry.MaxRetries != 3 {
			t.Errorf("%s retry = %+v, want the seed's 3 retries from 5s doubling", name, s.Retry)
		}
	}
	if d.NATS.Streams.Events.MaxAge != 7*24*time.Hour || d.NATS.Streams.Alerts.MaxAge != 30*24*time.Hour {
		t.Errorf("stream max ages = %s, %s", d.NATS.Streams.Events.MaxAge, d.NATS.Streams.Alerts.MaxAge)
	}
	// Fresh maps on every call: a caller changing one must not change the next.
	d.Services[ServiceLLM] = Service{}
	if Default().Services[ServiceLLM].Timeout == 0 {
		t.Error("Default() shares its services map between calls")
	}
}

// TestLoadPrecedence sets one key in several layers: the highest wins.
func TestLoadPrecedence(t *testing.T) {
	file := writeConfig(t, `
caller:
  concurrency: 5
services:
  elevenlabs:
    base_url: http://file.example/el
    retry:
      initial_delay: 2s
`)
	tests := []struct {
		name        string
		args        []string
		env         []string
		concurrency int
		baseURL     string
		delay       time.Duration
	}{
		{name: "defaults", concurrency: 4, baseURL: "", delay: 5 * time.Second},
		{name: "file over defaults", args: []string{"--config", file}, concurrency: 5, baseURL: "http://file.example/el", delay: 2 * time.Second},
		{name: "file named by AGENT_CONFIG", env: []string{"AGENT_CONFIG=" + file}, concurrency: 5, baseURL: "http://file.example/el", delay: 2 * time.Second},
		{
			name:        "env over file",
			args:        []string{"--config", file},
			env:         []string{"AGENT_CALLER__CONCURRENCY=6", "AGENT_SERVICES__ELEVENLABS__BASE_URL=http://env.example/el"},
			concurrency: 6, baseURL: "http://env.example/el", delay: 2 * time.Second,
		},
		{
			name:        "env over defaults",
			env:         []string{"AGENT_SERVICES__ELEVENLABS__RETRY__INITIAL_DELAY=750ms"},
			concurrency: 4, delay: 750 * time.Millisecond,
		},
		{
			name:        "flag over env over file",
			args:        []string{"--config", file, "--set", "caller.concurrency=8", "--set", "services.elevenlabs.base_url=http://flag.example/el"},
			env:         []string{"AGENT_CALLER__CONCURRENCY=6", "AGENT_SERVICES__ELEVENLABS__BASE_URL=http://env.example/el"},
			concurrency: 8, baseURL: "http://flag.example/el", delay: 2 * time.Second,
		},
		{
			name:        "later --set wins",
			args:        []string{"--set", "caller.concurrency=8", "--set=caller.concurrency=9"},
			concurrency: 9, delay: 5 * time.Second,
		},
		{
			name:        "--config flag over AGENT_CONFIG",
			args:        []string{"--config", file},
			env:         []string{"AGENT_CONFIG=/nonexistent/agent.yaml"},
			concurrency: 5, baseURL: "http://file.example/el", delay: 2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(LoadOptions{Args: tt.args, Environ: tt.env})
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Caller.Concurrency; got != tt.concurrency {
				t.Errorf("caller.concurrency = %d, want %d", got, tt.concurrency)
			}
			el := cfg.Services[ServiceElevenLabs]
			if el.BaseURL != tt.baseURL {
				t.Errorf("services.elevenlabs.base_url = %q, want %q", el.BaseURL, tt.baseURL)
			}
			if el.Retry.InitialDelay != tt.delay {
				t.Errorf("services.elevenlabs.retry.initial_delay = %s, want %s", el.Retry.InitialDelay, tt.delay)
			}
			// A partial section keeps the defaults of the keys it leaves out.
			if el.Timeout != 30*time.Second || el.Retry.MaxRetries != 3 || el.Breaker.FailureThreshold != 5 {
				t.Errorf("services.elevenlabs lost its defaults: %s", el)
			}
		})
	}
}

func TestLoadEnvMapping(t *testing.T) {
	tests := []struct {
		env  string
		get  func(Config) any
		want any
	}{
		{"AGENT_SERVICES__ELEVENLABS__BASE_URL=http://127.0.0.1:8900/elevenlabs", func(c Config) any { return c.Services[ServiceElevenLabs].BaseURL }, "http://127.0.0.1:8900/elevenlabs"},
		{"AGENT_CALLER__CONCURRENCY=12", func(c Config) any { return c.Caller.Concurrency }, 12},
		{"AGENT_CALLER__FLEET_MAX_IN_FLIGHT=7", func(c Config) any { return c.Caller.FleetMaxInFlight }, 7},
		{"AGENT_NATS__EMBEDDED__ENABLED=true", func(c Config) any { return c.NATS.Embedded.Enabled }, true},
		{"AGENT_NATS__STREAMS__EVENTS__MAX_AGE=48h", func(c Config) any { return c.NATS.Streams.Events.MaxAge }, 48 * time.Hour},
		{"AGENT_NATS__ROLES__CALLER__PASSWORD=pw", func(c Config) any { return c.NATS.For(RoleCaller).Password }, "pw"},
		{"AGENT_SERVICES__CRM__RETRY__JITTER=0.25", func(c Config) any { return c.Services[ServiceCRM].Retry.Jitter }, 0.25},
		{"AGENT_SERVICES__TELEPHONY__OPTIONS__FROM_NUMBER=+15005550006", func(c Config) any { return c.Services[ServiceTelephony].Options["from_number"] }, "+15005550006"},
		{"AGENT_OBSERVER__HTTP__ADDR=127.0.0.1:9090", func(c Config) any { return c.Observer.HTTP.Addr }, "127.0.0.1:9090"},
		{"AGENT_LOG__FORMAT=json", func(c Config) any { return c.Log.Format }, "json"},
		{"AGENT_DISPATCHER__CALLING_WINDOW=09:00-17:30", func(c Config) any { return c.Dispatcher.CallingWindow }, "09:00-17:30"},
	}
	for _, tt := range tests {
		name, _, _ := strings.Cut(tt.env, "=")
		t.Run(name, func(t *testing.T) {
			// Variables without the prefix are not configuration.
			cfg, err := Load(LoadOptions{Environ: []string{tt.env, "HOME=/root", "CALLER__CONCURRENCY=99"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadSinkOverrides(t *testing.T) {
	file := writeConfig(t, `
sinks:
  - name: telegram
    plugin: telegram
    config:
      chat_id: "42"
  - name: jsonl
    plugin: jsonl
    kind: log
`)
	tests := []struct {
		name  string
		args  []string
		env   []string
		check func(t *testing.T, sinks []Sink)
	}{
		{
			name: "env by name keeps the file's keys",
			env:  []string{"AGENT_SINKS__TELEGRAM__CONFIG__BOT_TOKEN=123:abc"},
			check: func(t *testing.T, s []Sink) {
				if len(s) != 2 || s[0].Config["bot_token"] != "123:abc" || s[0].Config["chat_id"] != "42" {
					t.Errorf("sinks = %v", s)
				}
			},
		},
		{
			name: "--set by index",
			args: []string{"--set", "sinks.1.batch_size=7"},
			check: func(t *testing.T, s []Sink) {
				if s[1].BatchSize != 7 || s[1].Name != "jsonl" {
					t.Errorf("sinks[1] = %v", s[1])
				}
			},
		},
		{
			name: "a new name adds a sink",
			env:  []string{"AGENT_SINKS__WEBHOOK__PLUGIN=webhook", "AGENT_SINKS__WEBHOOK__CONFIG__URL=http://127.0.0.1:1/hook"},
			check: func(t *testing.T, s []Sink) {
				if len(s) != 3 || s[2].Name != "webhook" || s[2].Plugin != "webhook" || s[2].Kind != "alert" {
					t.Errorf("sinks = %v", s)
				}
			},
		},
		{
			name: "subjects from a comma list",
			args: []string{"--set", "sinks.jsonl.subjects=agent.call.>,agent.alert.>"},
			check: func(t *testing.T, s []Sink) {
				if want := []string{"agent.call.>", "agent.alert.>"}; !reflect.DeepEqual(s[1].Subjects, want) {
					t.Errorf("subjects = %q, want %q", s[1].Subjects, want)
				}
			},
		},
		{
			name: "the whole list as YAML",
			env:  []string{"AGENT_SINKS=[{name: only, plugin: jsonl, kind: log}]"},
			check: func(t *testing.T, s []Sink) {
				if len(s) != 1 || s[0].Name != "only" || s[0].BatchSize != 100 {
					t.Errorf("sinks = %v", s)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(LoadOptions{Args: append([]string{"--config", file}, tt.args...), Environ: tt.env})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg.Sinks)
		})
	}
}

// TestLoadErrors checks that each bad input names its key, and the source when
// the value did not come from the file.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		args     []string
		env      []string
		key      string
		sentinel error
		contains []string
	}{
		{
			name: "duration in the file", file: "services:\n  elevenlabs:\n    timeout: abc\n",
			key: "services.elevenlabs.timeout", sentinel: ErrWrongType,
			contains: []string{`services.elevenlabs.timeout: "abc" is not a duration`},
		},
		{
			name: "bare number is not a duration", file: "caller:\n  ack_wait: 30\n",
			key: "caller.ack_wait", sentinel: ErrWrongType, contains: []string{"30 is not a duration", `"30s"`},
		},
		{
			name: "integer from the environment", env: []string{"AGENT_CALLER__CONCURRENCY=lots"},
			key: "caller.concurrency", sentinel: ErrWrongType,
			contains: []string{`caller.concurrency: "lots" is not an integer`, "AGENT_CALLER__CONCURRENCY"},
		},
		{
			name: "bool from --set", args: []string{"--set", "nats.embedded.enabled=maybe"},
			key: "nats.embedded.enabled", sentinel: ErrWrongType, contains: []string{"not true or false", "--set nats.embedded.enabled"},
		},
		{
			name: "number in a sink", file: "sinks:\n  - name: log\n    plugin: jsonl\n    batch_size: big\n",
			key: "sinks.log.batch_size", sentinel: ErrWrongType, contains: []string{`"big" is not an integer`},
		},
		{
			name: "scalar for a section", file: "observer:\n  rules: strict\n",
			key: "observer.rules", sentinel: ErrWrongType, contains: []string{"is not a section", "down_for"},
		},
		{
			name: "unknown top-level key", file: "callers:\n  concurrency: 3\n",
			key: "callers", sentinel: ErrUnknownKey, contains: []string{"callers: unknown key (known: nats, services"},
		},
		{
			name: "unknown key in a section", file: "services:\n  crm:\n    retry:\n      max_retry: 2\n",
			key: "services.crm.retry.max_retry", sentinel: ErrUnknownKey, contains: []string{"known: max_retries"},
		},
		{
			name: "unknown key in a sink", file: "sinks:\n  - name: mail\n    plugin: email\n    severity: warning\n",
			key: "sinks.mail.severity", sentinel: ErrUnknownKey, contains: []string{"min_severity"},
		},
		{
			name: "unknown key from the environment", env: []string{"AGENT_CALLER__CONCURENCY=3"},
			key: "caller.concurency", sentinel: ErrUnknownKey, contains: []string{"AGENT_CALLER__CONCURENCY"},
		},
		{
			name: "unknown service", file: "services:\n  openai:\n    base_url: http://127.0.0.1:1\n",
			key: "services.openai", sentinel: ErrUnknownService,
			contains: []string{"services.openai: unknown service (known: llm, elevenlabs, telephony, crm)"},
		},
		{
			name: "unknown role", env: []string{"AGENT_NATS__ROLES__WORKER__PASSWORD=x"},
			key: "nats.roles.worker", sentinel: ErrUnknownRole, contains: []string{"known: admin, dispatcher, caller, observer, tail"},
		},
		{
			name: "invalid value is validated", args: []string{"--set", "services.elevenlabs.retry.multiplier=0.5"},
			key: "services.elevenlabs.retry.multiplier", sentinel: ErrInvalid,
			contains: []string{"services.elevenlabs.retry.multiplier: must be at least 1, got 0.5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeConfig(t, tt.file)}, args...)
			}
			_, err := Load(LoadOptions{Args: args, Environ: tt.env})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("no *KeyError in %v", err)
			}
			if ke.Key != tt.key {
				t.Errorf("key = %q, want %q (error: %v)", ke.Key, tt.key, err)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.sentinel)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			// Messages name koanf keys, never mapstructure's 'services[crm].x'.
			if strings.ContainsAny(err.Error(), "['") {
				t.Errorf("error reads like a Go field path: %v", err)
			}
		})
	}
}

// TestLoadReportsEverything: one run shows all problems, each once.
func TestLoadReportsEverything(t *testing.T) {
	file := writeConfig(t, `
caller:
  concurrency: x
  ack_wait: soon
services:
  crm:
    base_url: "crm.example.com"
    retry:
      jitter: 2
  telegram: {}
bogus: 1
`)
	_, err := Load(LoadOptions{Args: []string{"--config", file}})
	want := []string{
		"bogus", "caller.concurrency", "caller.ack_wait",
		"services.crm.base_url", "services.crm.retry.jitter", "services.telegram",
	}
	got := map[string]int{}
	for _, ke := range keyErrors(err) {
		got[ke.Key]++
	}
	for _, key := range want {
		if got[key] != 1 {
			t.Errorf("%s reported %d times, want once; error:\n%v", key, got[key], err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("reported keys %v, want %v", got, want)
	}
}

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantErr string
	}{
		{name: "no file at all", args: nil},
		{name: "missing --config file", args: []string{"--config", "/nonexistent/agent.yaml"}, wantErr: "no such file"},
		{name: "missing AGENT_CONFIG file", env: []string{"AGENT_CONFIG=/nonexistent/agent.yaml"}, wantErr: "no such file"},
		{name: "not YAML", args: []string{"--config", writeConfig(t, "caller: [1, 2\n")}, wantErr: "config file"},
		{name: "empty file", args: []string{"--config", writeConfig(t, "")}},
		{name: "not a flag", args: []string{"--cofnig", "x.yaml"}, wantErr: "flag provided but not defined"},
		{name: "--set without =", args: []string{"--set", "caller.concurrency"}, wantErr: "key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(LoadOptions{Args: tt.args, Environ: tt.env})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadCommandFlags: a command's own flags, positional arguments and
// FlagKeys bindings live beside --config and --set.
func TestLoadCommandFlags(t *testing.T) {
	newFS := func() (*flag.FlagSet, *int, *bool) {
		fs := flag.NewFlagSet("caller", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.Int("concurrency", 0, "calls at once"), fs.Bool("fast", false, "scale delays down")
	}
	t.Run("bound flag given", func(t *testing.T) {
		fs, _, fast := newFS()
		cfg, err := Load(LoadOptions{
			Args:     []string{"--fast", "--concurrency", "3", "contacts.csv"},
			Environ:  []string{"AGENT_CALLER__CONCURRENCY=6"},
			FlagSet:  fs,
			FlagKeys: map[string]string{"concurrency": "caller.concurrency"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Caller.Concurrency != 3 || !*fast || fs.Arg(0) != "contacts.csv" {
			t.Errorf("concurrency %d, fast %v, args %q", cfg.Caller.Concurrency, *fast, fs.Args())
		}
	})
	t.Run("bound flag left out", func(t *testing.T) {
		fs, _, _ := newFS()
		cfg, err := Load(LoadOptions{
			Environ:  []string{"AGENT_CALLER__CONCURRENCY=6"},
			FlagSet:  fs,
			FlagKeys: map[string]string{"concurrency": "caller.concurrency"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Caller.Concurrency != 6 {
			t.Errorf("concurrency = %d, want the environment's 6", cfg.Caller.Concurrency)
		}
	})
	t.Run("--set beats a bound flag", func(t *testing.T) {
		fs, _, _ := newFS()
		cfg, err := Load(LoadOptions{
			Args:     []string{"--set", "caller.concurrency=9", "--concurrency", "3"},
			FlagSet:  fs,
			FlagKeys: map[string]string{"concurrency": "caller.concurrency"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Caller.Concurrency != 9 {
			t.Errorf("concurrency = %d, want 9", cfg.Caller.Concurrency)
		}
	})
	t.Run("binding an undefined flag", func(t *testing.T) {
		fs, _, _ := newFS()
		_, err := Load(LoadOptions{FlagSet: fs, FlagKeys: map[string]string{"workers": "caller.concurrency"}})
		if err == nil || !strings.Contains(err.Error(), "workers") {
			t.Errorf("err = %v, want one naming the flag", err)
		}
	})
	t.Run("command defines --config", func(t *testing.T) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.String("config", "", "")
		if _, err := Load(LoadOptions{FlagSet: fs}); err == nil {
			t.Error("Load accepted a flag set that already defines --config")
		}
	})
	t.Run("help", func(t *testing.T) {
		fs, _, _ := newFS()
		if _, err := Load(LoadOptions{Args: []string{"-h"}, FlagSet: fs}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("err = %v, want flag.ErrHelp", err)
		}
	})
}

// TestYAMLLoadsBack: what YAML() prints (without secrets) loads back as the
// same configuration.
func TestYAMLLoadsBack(t *testing.T) {
	want := Default()
	want.Services[ServiceCRM] = func() Service {
		s := want.Services[ServiceCRM]
		s.BaseURL = "http://127.0.0.1:8900/crm"
		s.Options = map[string]string{"portal_id": "123", "note": "a: b, c"}
		return s
	}()
	want.Sinks = []Sink{{Name: "jsonl", Plugin: "jsonl", Kind: "log", Config: map[string]any{"path": "./x.jsonl", "rotate": true, "max": 3}}}
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := want.YAML()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(LoadOptions{Args: []string{"--config", writeConfig(t, string(b))}})
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	// A printed empty section ({}) loads back empty rather than nil.
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("loaded back differs (-want +got):\n%s", diff)
	}
}

func TestEnvKey(t *testing.T) {
	tests := map[string]string{
		"AGENT_SERVICES__ELEVENLABS__BASE_URL": "services.elevenlabs.base_url",
		"AGENT_CALLER__CONCURRENCY":            "caller.concurrency",
		"AGENT_LOG":                            "log",
		"AGENT_":                               "",
		"OTHER_CALLER__CONCURRENCY":            "",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := envKey(in); got != want {
				t.Errorf("envKey(%q) = %q, want %q", in, got, want)
			}
		})
	}
}

// TestLoadFreeForm: options are strings whatever YAML type they are written
// as; a sink's config is handed on with its YAML types.
func TestLoadFreeForm(t *testing.T) {
	file := writeConfig(t, `
services:
  elevenlabs:
    options:
      streaming: true
      stability: 0.5
      voice_id: abc
      optimize_streaming_latency: 3
sinks:
  - name: mail
    plugin: email
    config:
      port: 2525
      starttls: true
      to: [a@example.com, b@example.com]
      nested: {deep: {key: v}}
`)
	cfg, err := Load(LoadOptions{Args: []string{"--config", file}})
	if err != nil {
		t.Fatal(err)
	}
	wantOpts := map[string]string{"streaming": "true", "stability": "0.5", "voice_id": "abc", "optimize_streaming_latency": "3"}
	if got := cfg.Services[ServiceElevenLabs].Options; !reflect.DeepEqual(got, wantOpts) {
		t.Errorf("options = %q, want %q", got, wantOpts)
	}
	wantConfig := map[string]any{
		"port": 2525, "starttls": true, "to": []any{"a@example.com", "b@example.com"},
		"nested": map[string]any{"deep": map[string]any{"key": "v"}},
	}
	if got := cfg.Sinks[0].Config; !reflect.DeepEqual(got, wantConfig) {
		t.Errorf("sink config = %#v, want %#v", got, wantConfig)
	}
	bad := writeConfig(t, "services:\n  crm:\n    options:\n      scopes: {read: true}\n")
	_, err = Load(LoadOptions{Args: []string{"--config", bad}})
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "services.crm.options.scopes" || !errors.Is(err, ErrWrongType) {
		t.Errorf("a section under options: err = %v, want a wrong type at services.crm.options.scopes", err)
	}
}
