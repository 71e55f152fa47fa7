// Package backoff owns the project's two answers to "how long to wait
// before trying again": exponential backoff, and the wait a server asks for
// in Retry-After. Callers, the bus's redelivery policy, the observer's
// delivery worker, the plugin supervisor and the sink plugins all use these
// two functions, so every retry in the product grows and honours servers the
// same way. It is public, with no dependencies, so that plugin authors can
// use it too (the plugin SDK re-exports RetryAfter as sink.RetryAfter).
package backoff

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Exponential is the n-th wait of a backoff (n from 1): initial, then
// multiplied by factor for every further wait, capped at max. An n below 1
// counts as 1, a factor below 1 as 1 (a constant wait), and a max below
// initial as initial. It never overflows.
func Exponential(n int, initial, max time.Duration, factor float64) time.Duration {
	if max < initial {
		max = initial
	}
	if factor < 1 {
		factor = 1
	}
	d := float64(initial)
	for i := 1; i < n && d < float64(max); i++ {
		d *= factor
	}
	return time.Duration(min(d, float64(max)))
}

// RetryAfter returns the wait a response asks for, 0 when it asks for none
// or the value cannot be read. It reads Retry-After-Ms (milliseconds, sent by
// OpenAI-compatible servers, preferred for its precision), then Retry-After
// as delay-seconds (RFC 9110 says an integer; fractions such as "1.5" are
// accepted, as some servers send them) or as an HTTP date measured from now.
// A date in the past is 0. The result is not capped beyond a week, so that a
// broken header cannot overflow: the caller caps it with its own maximum.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && ms < maxSeconds*1000 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	return Seconds(h.Get("Retry-After"), now)
}

// Seconds reads one Retry-After value (delay-seconds or an HTTP date), for
// APIs that carry it outside an HTTP header, such as a JSON body's
// retry_after. It returns 0 for an empty, unreadable or past value.
func Seconds(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || s >= maxSeconds {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// maxSeconds bounds a parsed delay so a hostile or broken header cannot
// overflow time.Duration; a week is far beyond any retry's cap.
const maxSeconds = 7 * 24 * 3600
