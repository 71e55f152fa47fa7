package backoff_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/callagent/agent/backoff"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"absent", nil, 0},
		{"seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "1.5"}, 1500 * time.Millisecond},
		{"http date", map[string]string{"Retry-After": now.Add(30 * time.Second).Format(http.TimeFormat)}, 30 * time.Second},
		{"http date in the past", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"milliseconds header", map[string]string{"Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"milliseconds preferred", map[string]string{"Retry-After-Ms": "1200", "Retry-After": "2"}, 1200 * time.Millisecond},
		{"bad milliseconds falls back", map[string]string{"Retry-After-Ms": "soon", "Retry-After": "2"}, 2 * time.Second},
		{"zero", map[string]string{"Retry-After": "0"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"garbage", map[string]string{"Retry-After": "tomorrow"}, 0},
		{"absurdly large", map[string]string{"Retry-After": "99999999999999999999"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			if got := backoff.RetryAfter(h, now); got != tt.want {
				t.Errorf("RetryAfter(%v) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}

func TestSeconds(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, " 3 ": 3 * time.Second, "0.25": 250 * time.Millisecond, "x": 0,
		now.Add(5 * time.Second).Format(http.TimeFormat): 5 * time.Second,
	} {
		if got := backoff.Seconds(v, now); got != want {
			t.Errorf("Seconds(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestExponential(t *testing.T) {
	tests := []struct {
		name         string
		n            int
		initial, max time.Duration
		factor       float64
		want         time.Duration
	}{
		{"first", 1, time.Second, time.Minute, 2, time.Second},
		{"below one counts as first", 0, time.Second, time.Minute, 2, time.Second},
		{"second doubles", 2, time.Second, time.Minute, 2, 2 * time.Second},
		{"seed 5s 10s 20s", 3, 5 * time.Second, time.Minute, 2, 20 * time.Second},
		{"capped", 7, time.Second, time.Minute, 2, time.Minute},
		{"huge n does not overflow", 1 << 30, time.Second, time.Minute, 2, time.Minute},
		{"fractional factor", 3, 100 * time.Millisecond, time.Minute, 1.5, 225 * time.Millisecond},
		{"factor below one is constant", 5, time.Second, time.Minute, 0.5, time.Second},
		{"max below initial", 3, time.Second, 0, 2, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := backoff.Exponential(tt.n, tt.initial, tt.max, tt.factor); got != tt.want {
				t.Errorf("Exponential(%d, %v, %v, %v) = %v, want %v", tt.n, tt.initial, tt.max, tt.factor, got, tt.want)
			}
		})
	}
}
