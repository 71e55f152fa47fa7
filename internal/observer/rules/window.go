package rules

import (
	"slices"
	"time"
)

// windowBuckets is how many buckets one rate window is cut into. Rates are
// counted per bucket so the state stays small and serialisable, and a bucket
// leaves the window at a fixed instant (its end plus the window), which makes
// "the rate fell back" happen at the same event time in a live run and in a
// replay, however often the clock is advanced.
const windowBuckets = 30

// bucket counts one slice of time. Index is the bucket's start divided by
// the bucket width.
type bucket struct {
	Index    int64 `json:"i"`
	Attempts int   `json:"a,omitempty"`
	Failures int   `json:"f,omitempty"`
	Retries  int   `json:"r,omitempty"`
	Slow     int   `json:"s,omitempty"`
}

// window is a sliding window of buckets, oldest first.
type window struct {
	Buckets []bucket `json:"buckets,omitempty"`
}

// rates are the sums over a window.
type rates struct {
	Attempts, Failures, Retries, Slow int
}

func (r rates) errorRate() float64 { return ratio(r.Failures, r.Attempts) }
func (r rates) retryRate() float64 { return ratio(r.Retries, r.Attempts) }
func (r rates) slowRate() float64  { return ratio(r.Slow, r.Attempts) }

func ratio(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// span says how a window is cut: Width per bucket, N buckets.
type span struct {
	Width time.Duration
	N     int64
}

func newSpan(window time.Duration) span {
	w := window / windowBuckets
	if w < time.Millisecond {
		w = time.Millisecond
	}
	n := int64((window + w - 1) / w)
	return span{Width: w, N: n}
}

func (s span) index(t time.Time) int64 {
	ns := t.UnixNano()
	w := int64(s.Width)
	if ns < 0 {
		return (ns - w + 1) / w
	}
	return ns / w
}

// expiry is when bucket i leaves the window.
func (s span) expiry(i int64) time.Time {
	return time.Unix(0, (i+s.N)*int64(s.Width)).UTC()
}

// add counts into the bucket of t, unless t is already outside the window
// at clock (a very late event).
func (w *window) add(s span, clock, t time.Time, f func(*bucket)) {
	i := s.index(t)
	if i <= s.index(clock)-s.N {
		return
	}
	n := len(w.Buckets)
	if n > 0 && w.Buckets[n-1].Index == i {
		f(&w.Buckets[n-1])
		return
	}
	pos, found := slices.BinarySearchFunc(w.Buckets, i, func(b bucket, i int64) int {
		switch {
		case b.Index < i:
			return -1
		case b.Index > i:
			return 1
		}
		return 0
	})
	if !found {
		w.Buckets = slices.Insert(w.Buckets, pos, bucket{Index: i})
	}
	f(&w.Buckets[pos])
}

// prune drops the buckets that have left the window at clock.
func (w *window) prune(s span, clock time.Time) {
	low := s.index(clock) - s.N
	k := 0
	for k < len(w.Buckets) && w.Buckets[k].Index <= low {
		k++
	}
	if k > 0 {
		w.Buckets = slices.Delete(w.Buckets, 0, k)
	}
}

// sum adds up the buckets inside the window at clock.
func (w *window) sum(s span, clock time.Time) rates {
	low := s.index(clock) - s.N
	var r rates
	for _, b := range w.Buckets {
		if b.Index <= low {
			continue
		}
		r.Attempts += b.Attempts
		r.Failures += b.Failures
		r.Retries += b.Retries
		r.Slow += b.Slow
	}
	return r
}

// nextExpiry is when the oldest bucket leaves the window; zero when empty.
func (w *window) nextExpiry(s span) time.Time {
	if len(w.Buckets) == 0 {
		return time.Time{}
	}
	return s.expiry(w.Buckets[0].Index)
}
