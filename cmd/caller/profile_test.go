package main

import (
	"os"
	"path/filepath"
	"testing"
)

// --cpu-profile writes a profile go tool pprof reads (gzipped protobuf)
// once stopped; a path that cannot be created is an error at start.
func TestStartCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "caller.prof")
	stop, err := startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile is not gzipped protobuf: % x", b[:min(len(b), 8)])
	}
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "no", "such", "dir", "p")); err == nil {
		t.Error("no error for a path that cannot be created")
	}
}
