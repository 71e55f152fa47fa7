package config

import (
	"errors"
	"fmt"
)

// Sentinel errors carried by a KeyError, for errors.Is.
var (
	// ErrUnknownKey: the key is not one the configuration knows.
	ErrUnknownKey = errors.New("unknown key")
	// ErrUnknownService: a services.<name> that is not in Services.
	ErrUnknownService = errors.New("unknown service")
	// ErrUnknownRole: a nats.roles.<name> that is not in Roles.
	ErrUnknownRole = errors.New("unknown role")
	// ErrWrongType: the value cannot be read as the key's type.
	ErrWrongType = errors.New("wrong type")
	// ErrInvalid: the value has the right type but is not allowed.
	ErrInvalid = errors.New("invalid value")
)

// KeyError is one problem with one configuration key. Load and Validate
// return every KeyError they find joined with errors.Join, so a user can fix
// them all in one go; errors.As finds the first.
type KeyError struct {
	// Key is the koanf key path as a user writes it in the file, the
	// environment or --set: "services.elevenlabs.timeout", "sinks.telegram.kind"
	// (a sink without a usable name is "sinks[2]").
	Key string
	// Err says what is wrong; it wraps one of the sentinel errors above.
	Err error
	// Source names where the value came from when it was not the file: the
	// environment variable or the flag.
	Source string
}

func (e *KeyError) Error() string {
	msg := e.Key + ": " + e.Err.Error()
	if e.Source != "" {
		msg += " (set by " + e.Source + ")"
	}
	return msg
}

func (e *KeyError) Unwrap() error { return e.Err }

// invalid is an ErrInvalid with its own message: the message reads well on its
// own ("must be at least 1, got 0.5") and errors.Is still finds the sentinel.
type invalid struct{ msg string }

func (e *invalid) Error() string        { return e.msg }
func (e *invalid) Is(target error) bool { return target == ErrInvalid }

// typeError says a value cannot be read as a key's type.
type typeError struct {
	value any
	want  string // "a duration", "an integer", ...
	hint  string
}

func (e *typeError) Error() string {
	msg := fmt.Sprintf("%s is not %s", showValue(e.value), e.want)
	if e.hint != "" {
		msg += " (" + e.hint + ")"
	}
	return msg
}

func (e *typeError) Is(target error) bool { return target == ErrWrongType }

// showValue quotes strings and names sections and lists rather than dumping
// them: a wrong value may be a secret put under the wrong key.
func showValue(v any) string {
	switch v := v.(type) {
	case string:
		if len(v) > 40 {
			return fmt.Sprintf("%q", v[:37]+"...")
		}
		return fmt.Sprintf("%q", v)
	case map[string]any:
		return "a section"
	case []any:
		return "a list"
	case nil:
		return "an empty value"
	default:
		return fmt.Sprintf("%v", v)
	}
}

// problems collects KeyErrors in the order they are found.
type problems []error

func (p *problems) add(key string, err error) {
	*p = append(*p, &KeyError{Key: key, Err: err})
}

func (p *problems) addf(key, format string, args ...any) {
	p.add(key, &invalid{msg: fmt.Sprintf(format, args...)})
}

func (p problems) err() error { return errors.Join(p...) }

// keyErrors flattens a tree of joined errors into its KeyErrors.
func keyErrors(err error) []*KeyError {
	var out []*KeyError
	var walk func(error)
	walk = func(err error) {
		if ke, ok := err.(*KeyError); ok {
			out = append(out, ke)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
		if w, ok := err.(interface{ Unwrap() error }); ok && w.Unwrap() != nil {
			walk(w.Unwrap()) // mapstructure wraps its joined errors once
		}
	}
	walk(err)
	return out
}
