package events_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/callagent/agent/events"
)

// BenchmarkDecode decodes each golden event; the attempt event is what the
// observer's pipeline sees most.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"attempt", "call_completed", "breaker", "alert"} {
		data, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := events.Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
