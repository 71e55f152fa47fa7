package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogHandler(t *testing.T) {
	tests := []struct {
		log        Log
		debugShown bool
		prefix     string
	}{
		{Log{Level: "info", Format: "text"}, false, "time="},
		{Log{Level: "debug", Format: "json"}, true, "{"},
		{Log{Level: "error", Format: "json"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.log.Level+"/"+tt.log.Format, func(t *testing.T) {
			var b bytes.Buffer
			log := slog.New(tt.log.Handler(&b))
			log.Debug("debug line")
			if got := strings.Contains(b.String(), "debug line"); got != tt.debugShown {
				t.Errorf("debug shown = %v, want %v: %q", got, tt.debugShown, b.String())
			}
			log.Error("error line")
			if !strings.HasPrefix(b.String(), tt.prefix) || !strings.Contains(b.String(), "error line") {
				t.Errorf("output %q, want it to start with %q", b.String(), tt.prefix)
			}
		})
	}
}
