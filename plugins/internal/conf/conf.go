// Package conf decodes a sink plugin's configuration section strictly, so
// that a misspelt key or a bad value stops the observer at start with a
// message naming the key, instead of a sink that silently ignores it.
package conf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/callagent/agent/sink"
)

// Decode unmarshals raw (the section as JSON; empty means {}) into v,
// refusing unknown keys. Errors wrap sink.ErrConfig.
func Decode(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", sink.ErrConfig, err)
	}
	return nil
}

// Errorf returns a configuration error about key.
func Errorf(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", sink.ErrConfig, key, fmt.Sprintf(format, args...))
}

// Required returns a configuration error when value is empty.
func Required(key, value string) error {
	if value == "" {
		return Errorf(key, "is required")
	}
	return nil
}

// Duration is a duration written as a Go duration string ("10s", "1m30s")
// or as a number of seconds, the two ways a YAML file spells one.
type Duration time.Duration

// UnmarshalJSON accepts "10s" or 10.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("bad duration %s: want a string like \"10s\" or seconds", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// Or returns d, or def when d is zero or negative.
func (d Duration) Or(def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}
