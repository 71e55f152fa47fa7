// Package clitest helps tests run a command whole: a buffer the command may
// write to while the test reads it.
package clitest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer safe for a command writing while a test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
