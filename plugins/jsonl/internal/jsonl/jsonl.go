// Package jsonl is a log sink that appends one JSON line per event to a file,
// in the seeds' log schema (events.LogRecord: timestamp, service,
// error_category, retry_count, circuit_breaker_state, message, plus the
// event's id and type).
//
// Delivery is at least once from the bus, but lines are not duplicated
// within a window: the sink remembers the ids of the last Dedupe events it
// wrote, reading them back from the end of the file when it starts, so a
// batch redelivered after a lost acknowledgement or a plugin restart is
// recognised and not written again.
package jsonl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/plugins/internal/conf"
	"github.com/callagent/agent/sink"
)

// DefaultDedupe is how many recent event ids are remembered.
const DefaultDedupe = 10000

// tailBytes bounds how much of an existing file is read back at start to
// recover recent ids: enough for DefaultDedupe lines of a typical size.
const tailBytes = 8 << 20

// Config is the sink's configuration section.
type Config struct {
	// Path of the file; created (with its directory) when missing.
	Path string `json:"path"`
	// Dedupe is how many recent event ids are remembered to drop duplicate
	// deliveries; default DefaultDedupe, -1 disables it.
	Dedupe int `json:"dedupe"`
}

// Sink writes JSON lines. Its zero value is ready for Configure.
type Sink struct {
	// Log is where the sink logs; default slog.Default().
	Log *slog.Logger

	mu     sync.Mutex
	cfg    Config
	f      *os.File
	recent *ring
}

var _ sink.Sink = (*Sink)(nil)

// Configure opens (or re-opens) the file and recovers the recent ids.
func (s *Sink) Configure(_ context.Context, raw []byte) error {
	var c Config
	if err := conf.Decode(raw, &c); err != nil {
		return err
	}
	if err := conf.Required("path", c.Path); err != nil {
		return err
	}
	if c.Dedupe == 0 {
		c.Dedupe = DefaultDedupe
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o750); err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	f, err := os.OpenFile(c.Path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	recent := newRing(max(c.Dedupe, 0))
	if err := recent.load(f); err != nil {
		f.Close()
		return fmt.Errorf("jsonl: read back %s: %w", c.Path, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
	}
	s.cfg, s.f, s.recent = c, f, recent
	return nil
}

func (s *Sink) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// line is what one event becomes in the file.
func line(ev events.Event) ([]byte, error) {
	b, err := json.Marshal(events.LogRecordOf(ev))
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Deliver appends the batch's new events with one write and one fsync.
func (s *Sink) Deliver(_ context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil, fmt.Errorf("jsonl: %w: not configured", sink.ErrUnavailable)
	}
	if err := s.reopenIfMoved(); err != nil {
		return nil, err
	}
	results := make([]sink.Result, len(batch))
	var buf bytes.Buffer
	var written []int // indexes of the records in buf
	inBatch := map[string]bool{}
	for i, rec := range batch {
		results[i] = sink.Result{ID: rec.ID, Status: sink.Delivered}
		if s.recent.has(rec.ID) || inBatch[rec.ID] {
			results[i].Reason = "duplicate: already written"
			continue
		}
		ev, err := events.Decode(rec.Data)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		b, err := line(ev)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		buf.Write(b)
		written = append(written, i)
		inBatch[rec.ID] = true
	}
	if buf.Len() == 0 {
		return results, nil
	}
	if err := s.append(buf.Bytes()); err != nil {
		s.log().Error("jsonl write failed", "path", s.cfg.Path, "error", err.Error())
		for _, i := range written {
			results[i] = sink.Result{ID: batch[i].ID, Status: sink.Retryable, Reason: err.Error()}
		}
		return results, nil
	}
	for _, i := range written {
		s.recent.add(batch[i].ID)
	}
	return results, nil
}

// reopenIfMoved follows log rotation: when the path no longer names the
// open file (moved or deleted by logrotate), it opens the path anew. The
// recent ids are kept, since the old file still holds those lines.
func (s *Sink) reopenIfMoved() error {
	onDisk, err := os.Stat(s.cfg.Path)
	if err == nil {
		open, err := s.f.Stat()
		if err == nil && os.SameFile(onDisk, open) {
			return nil
		}
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("jsonl: reopen after rotation: %w", err)
	}
	s.f.Close()
	s.f = f
	s.log().Info("jsonl file reopened", "path", s.cfg.Path)
	return nil
}

// append writes b at the end of the file and syncs it. On failure it cuts
// the file back to where it was, so a half-written batch does not leave a
// broken line for the retry to append to.
func (s *Sink) append(b []byte) error {
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	if _, err := s.f.Write(b); err != nil {
		if terr := s.f.Truncate(st.Size()); terr != nil {
			return fmt.Errorf("%w (and truncate: %w)", err, terr)
		}
		return err
	}
	return s.f.Sync()
}

// Health reports whether the file can be written to.
func (s *Sink) Health(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return fmt.Errorf("jsonl: not configured")
	}
	// The directory, not the file: a file just moved away by log rotation
	// is recreated by the next Deliver.
	if _, err := os.Stat(filepath.Dir(s.cfg.Path)); err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	return nil
}

// ring remembers the last n ids.
type ring struct {
	ids  []string
	next int
	set  map[string]int // id -> how many times it is in ids
}

func newRing(n int) *ring { return &ring{ids: make([]string, n), set: make(map[string]int, n)} }

func (r *ring) has(id string) bool { return r.set[id] > 0 }

func (r *ring) add(id string) {
	if len(r.ids) == 0 {
		return
	}
	if old := r.ids[r.next]; old != "" {
		if r.set[old]--; r.set[old] <= 0 {
			delete(r.set, old)
		}
	}
	r.ids[r.next] = id
	r.set[id]++
	r.next = (r.next + 1) % len(r.ids)
}

// load reads the event ids of the last lines of f, oldest first.
func (r *ring) load(f *os.File) error {
	if len(r.ids) == 0 {
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	off := max(st.Size()-tailBytes, 0)
	sc := bufio.NewScanner(io.NewSectionReader(f, off, st.Size()-off))
	sc.Buffer(make([]byte, 64<<10), events.MaxSize*2)
	first := off > 0
	for sc.Scan() {
		if first {
			first = false // probably cut in the middle
			continue
		}
		var l struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.EventID != "" {
			r.add(l.EventID)
		}
	}
	return sc.Err()
}
