package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

// requiredFields is the contract's list of required fields per type, written
// out here so that a change to Validate shows up as a failing test.
var requiredFields = map[events.Type][]string{
	events.TypeCall:     {"id", "type", "time", "source", "v", "call_id", "outcome"},
	events.TypeAttempt:  {"id", "type", "time", "source", "v", "service", "attempt", "outcome"},
	events.TypeRetry:    {"id", "type", "time", "source", "v", "service", "attempt"},
	events.TypeBreaker:  {"id", "type", "time", "source", "v", "service", "from", "to", "breaker_state"},
	events.TypeHealth:   {"id", "type", "time", "source", "v", "service", "outcome"},
	events.TypeStatus:   {"id", "type", "time", "source", "v", "service", "to"},
	events.TypeAlert:    {"id", "type", "time", "source", "v", "fingerprint", "rule", "severity", "status", "summary", "starts_at"},
	events.TypeDelivery: {"id", "type", "time", "source", "v", "sink", "outcome", "ref_id"},
}

// edit returns the golden file name with field set to value, or deleted when
// value is the deleted marker.
func edit(t testing.TB, name string, changes map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readGolden(t, name), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range changes {
		if v == deleted {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return marshal(t, m)
}

type deletedMarker struct{}

var deleted = deletedMarker{}

type decodeCase struct {
	name  string
	data  []byte
	err   error  // matched with errors.Is
	field string // the field a *FieldError names, if any
	// schemaBlind marks what JSON Schema cannot say: the zero time is a valid
	// date-time, which Go reads as absent.
	schemaBlind bool
}

func decodeCases(t *testing.T) []decodeCase {
	attempt := readGolden(t, "attempt")
	set := func(name, field string, v any) []byte { return edit(t, name, map[string]any{field: v}) }
	cases := []decodeCase{
		{"empty", nil, events.ErrMalformed, "", false},
		{"whitespace", []byte(" \n\t "), events.ErrMalformed, "", false},
		{"malformed", []byte(`{"type":"attempt",}`), events.ErrMalformed, "", false},
		{"unquoted key", []byte(`{type:"attempt"}`), events.ErrMalformed, "", false},
		{"truncated", attempt[:len(attempt)/2], events.ErrMalformed, "", false},
		{"truncated by one byte", bytes.TrimSpace(attempt)[:len(bytes.TrimSpace(attempt))-1], events.ErrMalformed, "", false},
		{"trailing garbage", append(bytes.TrimSpace(attempt), 'x'), events.ErrMalformed, "", false},
		{"two objects", append(bytes.Clone(attempt), attempt...), events.ErrMalformed, "", false},
		{"array", []byte(`[` + string(attempt) + `]`), events.ErrMalformed, "", false},
		{"string", []byte(`"attempt"`), events.ErrMalformed, "", false},
		{"number", []byte(`42`), events.ErrMalformed, "", false},
		{"null", []byte(`null`), events.ErrMalformed, "", false},
		{"true", []byte(`true`), events.ErrMalformed, "", false},
		{"deep nesting", []byte(`{"type":"attempt","x":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`), events.ErrMalformed, "", false},
		{"invalid utf-8 key", []byte("{\"type\":\"attempt\",\xff}"), events.ErrMalformed, "", false},

		{"unknown type", set("attempt", "type", "bogus"), events.ErrUnknownType, "", false},
		{"type of another case", set("attempt", "type", "Attempt"), events.ErrUnknownType, "", false},
		{"request is not an event", set("attempt", "type", "request"), events.ErrUnknownType, "", false},
		{"missing type", set("attempt", "type", deleted), events.ErrMissing, "type", false},
		{"empty type", set("attempt", "type", ""), events.ErrMissing, "type", false},
		{"null type", set("attempt", "type", nil), events.ErrMissing, "type", false},

		{"invalid outcome", set("attempt", "outcome", "maybe"), events.ErrInvalid, "outcome", false},
		{"invalid error_category", set("attempt", "error_category", "flaky"), events.ErrInvalid, "error_category", false},
		{"invalid breaker_state", set("attempt", "breaker_state", "ajar"), events.ErrInvalid, "breaker_state", false},
		{"canceled is no health outcome", set("health", "outcome", events.OutcomeCanceled), events.ErrInvalid, "outcome", false},
		{"invalid call outcome", set("call", "outcome", "success"), events.ErrInvalid, "outcome", false},
		{"invalid breaker to", set("breaker", "to", "sideways"), events.ErrInvalid, "to", false},
		{"invalid status from", set("status", "from", "sideways"), events.ErrInvalid, "from", false},
		{"invalid severity", set("alert", "severity", "fatal"), events.ErrInvalid, "severity", false},
		{"invalid alert status", set("alert", "status", "pending"), events.ErrInvalid, "status", false},
		{"invalid delivery outcome", set("delivery", "outcome", "lost"), events.ErrInvalid, "outcome", false},
		{"invalid ref_type", set("delivery", "ref_type", "request"), events.ErrInvalid, "ref_type", false},
		{"schema version 2", set("attempt", "v", 2), events.ErrInvalid, "v", false},
		{"schema version 0", set("attempt", "v", 0), events.ErrMissing, "v", false},
		{"id too long", set("attempt", "id", strings.Repeat("a", 129)), events.ErrInvalid, "id", false},
		{"attempt zero", set("attempt", "attempt", 0), events.ErrMissing, "attempt", false},
		{"attempt negative", set("attempt", "attempt", -1), events.ErrInvalid, "attempt", false},
		{"latency negative", set("attempt", "latency_ms", -1), events.ErrInvalid, "latency_ms", false},
		{"audio size negative", set("call", "audio_bytes", -1), events.ErrInvalid, "audio_bytes", false},
		{"status code negative", set("retry", "status_code", -503), events.ErrInvalid, "status_code", false},
		{"retry delay negative", set("retry", "retry_in_ms", -10), events.ErrInvalid, "retry_in_ms", false},
		{"zero time", set("attempt", "time", "0001-01-01T00:00:00Z"), events.ErrMissing, "time", true},
		{"zero starts_at", set("alert", "starts_at", "0001-01-01T00:00:00Z"), events.ErrMissing, "starts_at", true},
		{"service with a dot", set("attempt", "service", "eleven.labs"), events.ErrInvalid, "service", false},
		{"service with a space", set("health", "service", "eleven labs"), events.ErrInvalid, "service", false},
		{"service wildcard", set("breaker", "service", "*"), events.ErrInvalid, "service", false},
		{"service full wildcard", set("status", "service", ">"), events.ErrInvalid, "service", false},
		{"service with a newline", set("retry", "service", "llm\r\nPUB x 1"), events.ErrInvalid, "service", false},
		{"sink with a tab", set("delivery", "sink", "web\thook"), events.ErrInvalid, "sink", false},
		{"alert service with a dot", set("alert", "service", "a.b"), events.ErrInvalid, "service", false},
		{"full phone number as contact", set("attempt", "contact", "+918881234882"), events.ErrInvalid, "contact", false},

		{"string where number", set("attempt", "attempt", "2"), events.ErrMalformed, "", false},
		{"string latency", set("attempt", "latency_ms", "812"), events.ErrMalformed, "", false},
		{"string version", set("attempt", "v", "1"), events.ErrMalformed, "", false},
		{"fractional attempt", set("attempt", "attempt", 1.5), events.ErrMalformed, "", false},
		{"number type", set("attempt", "type", 5), events.ErrMalformed, "", false},
		{"number service", set("attempt", "service", 5), events.ErrMalformed, "", false},
		{"object id", set("attempt", "id", map[string]any{"id": "x"}), events.ErrMalformed, "", false},
		{"unparsable time", set("attempt", "time", "yesterday"), events.ErrMalformed, "", false},
		{"time without zone", set("attempt", "time", "2025-03-14T09:26:53"), events.ErrMalformed, "", false},
		{"unix time", set("attempt", "time", 1741944413), events.ErrMalformed, "", false},
		{"labels not an object", set("alert", "labels", []string{"a"}), events.ErrMalformed, "", false},
		{"label not a string", set("alert", "labels", map[string]any{"n": 1}), events.ErrMalformed, "", false},
		{"call_ids not a list", set("alert", "call_ids", "call-1"), events.ErrMalformed, "", false},
		{"open_until a number", set("breaker", "open_until", 5), events.ErrMalformed, "", false},

		{"oversize", set("attempt", "message", strings.Repeat("x", events.MaxSize)), events.ErrTooLarge, "", false},
	}
	for typ, fields := range requiredFields {
		for _, f := range fields {
			cases = append(cases, decodeCase{fmt.Sprintf("%s without %s", typ, f), set(string(typ), f, deleted), events.ErrMissing, f, false})
		}
	}
	return cases
}

func TestDecodeErrors(t *testing.T) {
	schemas := map[events.Type]compiledSchema{}
	for _, typ := range events.Types {
		schemas[typ] = compileSchema(t, typ)
	}
	for _, tc := range decodeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := events.Decode(tc.data)
			if err == nil {
				t.Fatalf("decoded %#v, want an error", ev)
			}
			if ev != nil {
				t.Errorf("returned an event beside the error %v", err)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %q, want errors.Is %q", err, tc.err)
			}
			if tc.field != "" {
				var fe *events.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("error %q does not name field %q", err, tc.field)
				}
				if !strings.Contains(err.Error(), `"`+tc.field+`"`) {
					t.Errorf("message %q does not name field %q", err, tc.field)
				}
			}
			// What Decode refuses, the schema of the golden's type refuses too, so a
			// plugin that checks its output against the schema is never refused.
			// Size is not the schema's business.
			if tc.schemaBlind || tc.err == events.ErrTooLarge || !json.Valid(tc.data) || !events.IsJSONObject(tc.data) {
				return
			}
			var probe struct{ Type events.Type }
			_ = json.Unmarshal(tc.data, &probe)
			typ := events.TypeAttempt
			if schemas[probe.Type].Schema != nil {
				typ = probe.Type
			}
			if err := schemas[typ].check(t, tc.data); err == nil {
				t.Errorf("the %s schema accepts what Decode refuses: %s", typ, tc.data)
			}
		})
	}
}

// TestDecodeTruncated: every strict prefix of every golden file is refused as
// malformed, never accepted and never a panic.
func TestDecodeTruncated(t *testing.T) {
	for name := range goldens() {
		data := bytes.TrimSpace(readGolden(t, name))
		for n := range len(data) {
			if ev, err := events.Decode(data[:n]); !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("%s cut at %d bytes: %v, %v; want ErrMalformed", name, n, ev, err)
			}
		}
	}
}

func TestDecodeLimit(t *testing.T) {
	pad := events.MaxSize - len(edit(t, "attempt", map[string]any{"message": ""}))
	exact := edit(t, "attempt", map[string]any{"message": strings.Repeat("x", pad)})
	if len(exact) != events.MaxSize {
		t.Fatalf("built %d bytes, want %d", len(exact), events.MaxSize)
	}
	if _, err := events.Decode(exact); err != nil {
		t.Errorf("an event of exactly MaxSize bytes: %v", err)
	}
	over := append(exact, ' ')
	if _, err := events.Decode(over); !errors.Is(err, events.ErrTooLarge) {
		t.Errorf("MaxSize+1 bytes: %v, want ErrTooLarge", err)
	}
	if _, err := events.DecodeRequest(over); !errors.Is(err, events.ErrTooLarge) {
		t.Errorf("request of MaxSize+1 bytes: %v, want ErrTooLarge", err)
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	data := edit(t, "attempt", map[string]any{"x_future": []any{1, "two", nil}, "region": "eu"})
	ev, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ev, goldens()["attempt"]) {
		t.Errorf("decoded %#v", ev)
	}
}

func TestDecodeAs(t *testing.T) {
	a, err := events.DecodeAs[*events.Attempt](readGolden(t, "attempt"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Service != "elevenlabs" || a.Attempt != 2 {
		t.Errorf("decoded %+v", a)
	}
	if _, err := events.DecodeAs[*events.Retry](readGolden(t, "attempt")); !errors.Is(err, events.ErrUnknownType) {
		t.Errorf("attempt as retry: %v, want ErrUnknownType", err)
	}
	if _, err := events.DecodeAs[*events.Retry]([]byte(`{`)); !errors.Is(err, events.ErrMalformed) {
		t.Errorf("malformed: %v, want ErrMalformed", err)
	}
}

func TestEncodeValidates(t *testing.T) {
	tests := []struct {
		name  string
		ev    events.Event
		err   error
		field string
	}{
		{"not stamped", &events.Health{Service: "llm", Outcome: events.OutcomeSuccess}, events.ErrMissing, "id"},
		{"missing service", stamped(&events.Attempt{Attempt: 1, Outcome: events.OutcomeSuccess}), events.ErrMissing, "service"},
		{"full phone number", stamped(&events.Call{CallRef: events.CallRef{CallID: "c", Contact: "+14155550101"}, Outcome: events.CallStarted}), events.ErrInvalid, "contact"},
		{"negative failures", stamped(&events.Breaker{Service: "llm", From: "closed", To: "open", BreakerState: "open", Failures: -1}), events.ErrInvalid, "failures"},
		{"negative count", stamped(&events.Alert{Fingerprint: "f", Rule: "r", Severity: "info", Status: "firing", Summary: "s", StartsAt: at(0), Count: -1}), events.ErrInvalid, "count"},
		{"negative attempts", stamped(&events.Delivery{Sink: "email", Outcome: "delivered", RefID: "r", Attempts: -1}), events.ErrInvalid, "attempts"},
		{"negative call attempt", stamped(&events.Call{CallRef: events.CallRef{CallID: "c"}, Outcome: events.CallStarted, Attempt: -1}), events.ErrInvalid, "attempt"},
		{"wrong header type", func() events.Event {
			ev := stamped(&events.Status{Service: "llm", To: "up"})
			ev.Head().Type = events.TypeHealth
			return ev
		}(), events.ErrInvalid, "type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := events.Encode(tc.ev)
			var fe *events.FieldError
			if !errors.Is(err, tc.err) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Encode = %s, %v; want %v on %q", b, err, tc.err, tc.field)
			}
		})
	}
}

func stamped(ev events.Event) events.Event { return events.Stamp(ev, "test-1", at(0)) }

func TestStamp(t *testing.T) {
	local := time.Date(2025, 3, 14, 14, 56, 53, 0, time.FixedZone("IST", 5*3600+1800))
	ev := events.Stamp(&events.Health{Service: "crm", Outcome: events.OutcomeSuccess}, "caller-9", local)
	h := ev.Head()
	if len(h.ID) != 32 || h.Type != events.TypeHealth || h.Source != "caller-9" || h.V != events.Version {
		t.Fatalf("stamped header %+v", h)
	}
	if !h.Time.Equal(local) || h.Time.Location() != time.UTC {
		t.Errorf("time %v, want %v in UTC", h.Time, local)
	}
	first := *h
	// A republish keeps id, time and source, so JetStream deduplicates it.
	events.Stamp(ev, "caller-10", local.Add(time.Minute))
	if *ev.Head() != first {
		t.Errorf("restamped header %+v, want %+v", *ev.Head(), first)
	}
	if _, err := events.Encode(ev); err != nil {
		t.Fatal(err)
	}
	if a, b := events.NewID(), events.NewID(); a == b {
		t.Errorf("NewID repeated %s", a)
	}
}

func TestSeverityRank(t *testing.T) {
	if !(events.SeverityRank(events.SeverityInfo) < events.SeverityRank(events.SeverityWarning) &&
		events.SeverityRank(events.SeverityWarning) < events.SeverityRank(events.SeverityCritical)) {
		t.Error("severities are not ordered info < warning < critical")
	}
	if r := events.SeverityRank("fatal"); r != -1 {
		t.Errorf("unknown severity ranks %d, want -1", r)
	}
}

func TestIsJSONObject(t *testing.T) {
	for in, want := range map[string]bool{`{}`: true, ` {"a":1} `: true, `{`: false, `[]`: false, `null`: false, ``: false, `"{}"`: false} {
		if got := events.IsJSONObject([]byte(in)); got != want {
			t.Errorf("IsJSONObject(%q) = %v", in, got)
		}
	}
}
