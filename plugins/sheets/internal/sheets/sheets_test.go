package sheets

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		n      int
		jitter time.Duration
		want   time.Duration
	}{
		{0, 0, time.Second},
		{0, 999 * time.Millisecond, 1999 * time.Millisecond},
		{3, 250 * time.Millisecond, 8250 * time.Millisecond},
		{5, 999 * time.Millisecond, 32999 * time.Millisecond},
		{6, 0, MaxBackoff},
		{40, 500 * time.Millisecond, MaxBackoff},
	}
	for _, tt := range tests {
		if got := throttleWait(tt.n, tt.jitter); got != tt.want {
			t.Errorf("throttleWait(%d, %v) = %v, want %v", tt.n, tt.jitter, got, tt.want)
		}
	}
}

func TestTextUnderUserEntered(t *testing.T) {
	for in, want := range map[string]string{"=SUM(A1)": "'=SUM(A1)", "+1": "'+1", "-x": "'-x", "@me": "'@me", "ok": "ok", "": ""} {
		if got := text(in, InputUserEntered); got != want {
			t.Errorf("text(%q) = %q, want %q", in, got, want)
		}
		if got := text(in, InputRaw); got != in {
			t.Errorf("RAW text(%q) = %q", in, got)
		}
	}
}
