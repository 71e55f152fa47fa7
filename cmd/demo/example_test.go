package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/sink"
)

// TestExampleSinksConfigure starts every sink plugin of config.example.yaml
// with the configuration section the example gives it: a key the plugin does
// not know would make the observer refuse the sink at start.
func TestExampleSinksConfigure(t *testing.T) {
	bin := buildAll(t)
	cfg, err := config.Load(config.LoadOptions{Args: []string{"--config", filepath.Join(repoRoot, "config.example.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sinks) == 0 {
		t.Fatal("the example has no sinks")
	}
	for _, s := range cfg.Sinks {
		t.Run(s.Name, func(t *testing.T) {
			c := s.Config
			// Secrets are left empty in the example, to be set from the
			// environment; stand in for them as an operator would.
			for k, v := range c {
				if config.IsSecretKey(k) && v == "" && !strings.HasSuffix(k, "_file") {
					c[k] = "example-secret"
				}
			}
			if s.Plugin == "jsonl" {
				c["path"] = filepath.Join(t.TempDir(), "events.jsonl")
			}
			data, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			p, err := sink.Start(ctx, sink.PluginSpec{Name: s.Name, Path: filepath.Join(bin, "plugins", s.Plugin), Config: data, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("plugin %s refuses the example's config: %v", s.Plugin, err)
			}
			p.Kill()
		})
	}
}
