package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// TypeRequest marks a call request on agent.dispatch.<campaign>. It is not an
// event: it is the work item, and the only message that holds the full phone number.
const TypeRequest Type = "request"

// CallRequest asks a caller to call one contact.
type CallRequest struct {
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Time      time.Time `json:"time"`
	Source    string    `json:"source"`
	V         int       `json:"v"`
	CallID    string    `json:"call_id"`
	Campaign  string    `json:"campaign"`
	ContactID string    `json:"contact_id"`
	// Phone is the full E.164 number. It never leaves this message.
	Phone string `json:"phone"`
	Name  string `json:"name,omitempty"`
	// Timezone is the callee's IANA time zone, for calling windows.
	Timezone string `json:"timezone,omitempty"`
	// Vars are the contact file's extra columns, offered to the script.
	Vars map[string]string `json:"vars,omitempty"`
	// Attempt is the campaign-level attempt number for this contact (1-based).
	Attempt int `json:"attempt"`
	// MaxAttempts is the campaign's per-contact attempt cap.
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// Subject is agent.dispatch.<campaign>.
func (r *CallRequest) Subject() string { return DispatchSubject(r.Campaign) }

// Masked returns the request's phone number masked for events and logs.
func (r *CallRequest) Masked() string { return MaskPhone(r.Phone) }

// Ref returns the masked reference events carry for this call.
func (r *CallRequest) Ref() CallRef {
	return CallRef{CallID: r.CallID, Campaign: r.Campaign, ContactID: r.ContactID, Contact: r.Masked()}
}

// Validate checks a call request.
func (r *CallRequest) Validate() error {
	return firstErr(
		required("id", r.ID),
		oneOf("type", string(r.Type), string(TypeRequest)),
		requiredTime("time", r.Time),
		required("source", r.Source),
		requestVersion(r.V),
		required("call_id", r.CallID),
		token("campaign", r.Campaign),
		required("contact_id", r.ContactID),
		e164("phone", r.Phone),
		positive("attempt", r.Attempt),
		nonNegative("max_attempts", int64(r.MaxAttempts)),
	)
}

// requestVersion accepts an absent version, which EncodeRequest fills in, but
// refuses a version this build does not understand.
func requestVersion(v int) error {
	if v != 0 && v != Version {
		return invalid("v", "schema version %d, want %d", v, Version)
	}
	return nil
}

// EncodeRequest validates and encodes a call request.
func EncodeRequest(r *CallRequest) ([]byte, error) {
	if r.Type == "" {
		r.Type = TypeRequest
	}
	if r.V == 0 {
		r.V = Version
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode call request: %w", err)
	}
	return json.Marshal(r)
}

// DecodeRequest parses and validates a call request.
func DecodeRequest(data []byte) (*CallRequest, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxSize)
	}
	if err := objectStart(data); err != nil {
		return nil, fmt.Errorf("call request: %w", err)
	}
	var r CallRequest
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("call request: %w: %v", ErrMalformed, err)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("call request: %w", err)
	}
	return &r, nil
}

// e164 checks the shape of an E.164 number: '+' then 8 to 15 digits, no leading zero.
// The dispatcher validates numbers fully with libphonenumber; this guards the wire.
func e164(field, v string) error {
	if v == "" {
		return missing(field)
	}
	if len(v) < 9 || len(v) > 16 || v[0] != '+' || v[1] == '0' {
		return invalid(field, "not an E.164 number")
	}
	for _, c := range v[1:] {
		if c < '0' || c > '9' {
			return invalid(field, "not an E.164 number")
		}
	}
	return nil
}

// MaskPhone keeps the country code and prefix and the last three digits of an
// E.164 number: +918881234882 becomes +91888****882. At least four digits are
// always hidden, so shorter numbers keep a shorter prefix (+14155552671 becomes
// +1415****671). Anything that is not a plausible number is masked entirely.
func MaskPhone(p string) string {
	if e164("phone", p) != nil {
		return "****"
	}
	digits := p[1:]
	const shown, hidden = 3, 4
	keep := min(5, len(digits)-shown-hidden)
	return "+" + digits[:keep] + "****" + digits[len(digits)-shown:]
}
