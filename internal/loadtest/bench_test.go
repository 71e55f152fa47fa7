package loadtest

import (
	"strings"
	"testing"
)

// benchRate reads the figures `nats bench` (natscli v0.3.0) prints: one
// client's stats line, or the aggregate line above each client's.
func TestBenchRate(t *testing.T) {
	tests := []struct {
		name, out string
		want      float64
		wantErr   bool
	}{
		{"one publisher", "12:00:00 Starting JetStream benchmark [subject=bench.ceiling, ...]\n\nNATS JetStream asynchronous publisher stats: 30,906 msgs/sec ~ 8.1 MiB/sec ~ 32.35us\n", 30906, false},
		{"aggregate", "NATS JetStream durable consumer (callback) aggregated stats: 118,066 msgs/sec ~ 31 MiB/sec\n  [1] 59,033 msgs/sec ~ 15 MiB/sec ~ 16.94us (50,000 msgs)\n  [2] 59,101 msgs/sec ~ 15 MiB/sec ~ 16.92us (50,000 msgs)\n", 118066, false},
		{"under a thousand", "NATS JetStream asynchronous publisher stats: 987 msgs/sec ~ 266 KiB/sec ~ 1013.17us\n", 987, false},
		{"no figure", "nats: error: context deadline exceeded\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := benchRate(tt.out)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("benchRate = %v, %v; want %v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The table shows each figure with its ceiling and ratio, and says which
// goals were met and which figures were not measured.
func TestBenchTable(t *testing.T) {
	r := &BenchReport{Options: BenchOptions{Messages: 1000, Calls: 10, AlertSamples: 5, AlertRate: 5}, Size: 276, Rows: []BenchRow{
		{Name: "observer ingest", Value: 30000, Unit: "ev/s", Ceiling: 60000, CeilingName: "durable consume", Goal: ">= 60 %", Met: "no"},
		{Name: "alert p99", Value: 13.9, Unit: "ms", Goal: "<= 50 ms", Met: "yes"},
		{Name: "replay", Unit: "not measured", Met: "-"},
	}, Failed: []string{"calls: 3 missing"}}
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"30,000 ev/s", "60,000 durable consume", "50 %", "13.9 ms", "| yes", "not measured", "NOT MEASURED: calls: 3 missing"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if r.OK() {
		t.Error("a report with a failed figure is OK")
	}
}
