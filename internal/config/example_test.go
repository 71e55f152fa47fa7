package config

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

const examplePath = "../../config.example.yaml"

func loadExample(t *testing.T) Config {
	t.Helper()
	cfg, err := Load(LoadOptions{Args: []string{"--config", examplePath}})
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	return cfg
}

// TestExampleConfig: the example loads, validates, and shows what it says it
// shows.
func TestExampleConfig(t *testing.T) {
	cfg := loadExample(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.RequireServices(); err != nil {
		t.Fatal(err)
	}
	for _, name := range Services {
		s := cfg.Services[name]
		if want := "http://127.0.0.1:8900/" + name; s.BaseURL != want {
			t.Errorf("services.%s.base_url = %q, want the simulator's %q", name, s.BaseURL, want)
		}
		// The seed scenario: 503 -> retry (5s) -> retry (10s) -> retry (20s) -> failed.
		var delays []time.Duration
		d := s.Retry.InitialDelay
		for range s.Retry.MaxRetries {
			delays = append(delays, min(d, s.Retry.MaxDelay))
			d = time.Duration(float64(d) * s.Retry.Multiplier)
		}
		if want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}; !slices.Equal(delays, want) || s.Retry.Jitter != 0 {
			t.Errorf("services.%s retries %v with jitter %v, want exactly %v", name, delays, s.Retry.Jitter, want)
		}
	}
	// nats.conf's hashes are of these development passwords.
	for _, role := range Roles {
		if got := cfg.NATS.For(role); got.User != role || got.Password != role+"-dev-password" {
			t.Errorf("nats.roles.%s: user %q", role, got.User)
		}
	}
	var names []string
	for _, s := range cfg.Sinks {
		names = append(names, s.Name)
		// A long outage of a log sink must not dead-letter every event.
		if s.Kind == "log" && s.MaxAttempts < 50 {
			t.Errorf("sinks.%s.max_attempts = %d, want at least 50 for a log sink", s.Name, s.MaxAttempts)
		}
	}
	if want := []string{"email", "telegram", "webhook", "sheets", "jsonl"}; !slices.Equal(names, want) {
		t.Errorf("sinks = %q, want %q", names, want)
	}
}

// TestExampleIsTheDefaults: outside the keys it exists to show (addresses,
// credentials, options and sinks), the example
// holds exactly the defaults, so copying it changes nothing by surprise.
func TestExampleIsTheDefaults(t *testing.T) {
	got := loadExample(t)
	want := Default()
	want.NATS.Roles = got.NATS.Roles
	for _, name := range Services {
		s := want.Services[name]
		s.BaseURL = got.Services[name].BaseURL
		s.Options = got.Services[name].Options
		s.Retry.Jitter = 0
		want.Services[name] = s
	}
	want.Sinks = got.Sinks
	// An address, like the base URLs: the example's are one host's.
	want.Media.PublicURL = got.Media.PublicURL
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("config.example.yaml differs from Default() (-default +example):\n%s", diff)
	}
}

// TestExampleHasEveryKey: a key added to Config must be added to the example
// too, where it gets its comment.
func TestExampleHasEveryKey(t *testing.T) {
	ex := koanf.New(".")
	if err := ex.Load(file.Provider(examplePath), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	def := koanf.New(".")
	if err := def.Load(confmap.Provider(toMap(plain(reflect.ValueOf(Default()))).(map[string]any), ""), nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range def.Keys() {
		if def.Get(key) == nil {
			continue // free-form or empty by default: options, roles, sinks
		}
		if !ex.Exists(key) {
			t.Errorf("config.example.yaml lacks %s", key)
		}
	}
	// Every field of a sink appears in at least one example sink.
	for _, key := range fieldKeys(reflect.TypeOf(Sink{})) {
		found := false
		for _, s := range ex.Slices("sinks") {
			found = found || s.Exists(key)
		}
		if !found {
			t.Errorf("no example sink shows %s", key)
		}
	}
}
