package loadtest

import (
	"testing"
	"time"
)

func TestStallsEndAtTheNextKill(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ms := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Millisecond) }
	progress := []time.Time{ms(0), ms(100), ms(3000), ms(3100), ms(3200), ms(9000), ms(9100)}
	got := Stalls(progress, []time.Time{ms(150), ms(3250)}, 15*time.Second)
	want := []time.Duration{2900 * time.Millisecond, 5800 * time.Millisecond}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Stalls = %v, want %v: the second gap is the second kill's", got, want)
	}
}

func TestStall(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name     string
		progress []time.Time
		kill     int // ms
		want     time.Duration
	}{
		{"steady", at(0, 100, 200, 300, 400, 500), 250, 100 * time.Millisecond},
		{"the gap the kill fell in", at(0, 100, 200, 2200, 2300), 250, 2 * time.Second},
		{"a longer gap after recovery", at(0, 100, 900, 1000, 4000, 4100), 150, 3 * time.Second},
		{"unsorted", at(2200, 0, 200, 100, 2300), 250, 2 * time.Second},
		{"a gap starting inside the window", at(0, 100, 200, 300, 20000), 150, 19700 * time.Millisecond},
		{"a gap starting after the window is not the kill's", at(0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 30000), 500, time.Second},
		{"the campaign ends within the window", at(0, 100, 1100), 150, time.Second},
		{"no progress after the kill", at(0, 100), 500, 10*time.Second + 400*time.Millisecond},
		{"no progress before the kill", at(1000, 1100), 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Stall(tt.progress, t0.Add(time.Duration(tt.kill)*time.Millisecond), 10*time.Second)
			if got != tt.want {
				t.Errorf("Stall = %s, want %s", got, tt.want)
			}
		})
	}
}
