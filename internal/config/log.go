package config

import (
	"io"
	"log/slog"
)

// Handler returns the slog handler l describes (text or JSON at l.Level),
// writing to w. Call it after Validate: an unknown level reads as info.
func (l Log) Handler(w io.Writer) slog.Handler {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}
