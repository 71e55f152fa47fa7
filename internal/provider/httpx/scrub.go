package httpx

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/callagent/agent/events"
)

// MaxMessage bounds an error message in runes; a provider's message is for a
// person reading an alert, not a dump of its answer.
const MaxMessage = 300

// redacted replaces a secret in a message.
const redacted = "[redacted]"

// e164 finds numbers written the E.164 way inside a text. Providers echo the
// number they were given ("The 'To' number +15551234567 is not valid").
var e164 = regexp.MustCompile(`\+[1-9][0-9]{6,14}`)

// Scrub makes a provider's message safe to publish: every E.164 number is
// masked with events.MaskPhone, each secret (an API key, a full phone number
// without its '+') is replaced, control characters become spaces, and the
// text is cut to MaxMessage runes. Secrets shorter than four characters are
// ignored: replacing "a" everywhere would make any message unreadable and
// such a key protects nothing anyway.
func Scrub(msg string, secrets ...string) string {
	// Numbers first: a number's digits may also be given as a secret, and
	// masked is more useful to a reader than redacted.
	msg = MaskPhones(msg)
	for _, s := range secrets {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	msg = strings.TrimSpace(msg)
	if utf8.RuneCountInString(msg) > MaxMessage {
		r := []rune(msg)
		msg = string(r[:MaxMessage-1]) + "…"
	}
	return msg
}

// MaskPhones masks every E.164 number in s with events.MaskPhone and leaves
// the rest as it is.
func MaskPhones(s string) string { return e164.ReplaceAllStringFunc(s, events.MaskPhone) }
