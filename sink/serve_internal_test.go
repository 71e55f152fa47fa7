package sink

import (
	"os"
	"testing"
	"time"
)

// A plugin whose host is gone (its parent is no longer the process that
// started it) is told so at the next check; one started by init or a
// reaper has no host to watch.
func TestWatchHost(t *testing.T) {
	tests := []struct {
		name string
		host int
		gone bool
	}{
		{"host replaced by another parent", os.Getppid() + 1, true},
		{"no host", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := make(chan struct{})
			returned := make(chan struct{})
			go func() {
				defer close(returned)
				watchHost(tt.host, time.Millisecond, func() { close(gone) })
			}()
			select {
			case <-returned:
			case <-time.After(5 * time.Second):
				t.Fatal("watchHost did not return")
			}
			select {
			case <-gone:
				if !tt.gone {
					t.Error("gone called, want not")
				}
			default:
				if tt.gone {
					t.Error("gone not called")
				}
			}
		})
	}
}
