package events_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/callagent/agent/events"
)

// fuzzSeeds are inputs beside the golden files that lead the fuzzer to the
// decoder's corners: JSON that encoding/json reads leniently, zones, nulls.
var fuzzSeeds = []string{
	``, `{`, `}`, `null`, `[]`, `"call"`, `{}`, `{"type":null}`, `{"type":""}`, `{"type":"bogus"}`,
	`{"type":"request"}`, `{"type":"attempt"}`, `{"type":"attempt"`, `{"type":"attempt"}x`,
	`{"type":"health","id":"h","time":"2025-03-14T09:26:53+00:00","source":"s","v":1,"service":"crm","outcome":"success","latency_ms":3}`,
	`{"TYPE":"health","ID":"h","Time":"2025-03-14T09:26:53.1234567891+05:30","SOURCE":"s","V":1,"Service":"crm","outcome":"failure"}`,
	`{"type":"call","id":"c","time":"2025-03-14T09:26:53Z","source":"s","v":1,"call_id":"c1","outcome":"started","Type":null}`,
	`{"labels":{"type":"alert"},"type":"call","id":"c","time":"2025-03-14T09:26:53Z","source":"s","v":1,"call_id":"c1","outcome":"started"}`,
	`{"type" : "call","id":"c","time":"2025-03-14T09:26:53Z","source":"s","v":1,"call_id":"c1","outcome":"bogus"}`,
	`{"type":"health","type":"status","id":"h","time":"2025-03-14T09:26:53Z","source":"s","v":1,"service":"crm","to":"up"}`,
	`{"type":"alert","id":"a","time":"2025-03-14T09:26:53Z","source":"s","v":1,"fingerprint":"f","rule":"r","severity":"info","status":"firing","summary":"\u00e9\ud83d\ude00","starts_at":"0000-01-01T00:30:00+01:00","labels":{},"call_ids":[],"ends_at":null}`,
	`{"type":"breaker","id":"b","time":"9999-12-31T23:59:59-23:59","source":"s","v":1,"service":"llm","from":"open","to":"half_open","breaker_state":"half_open","open_until":"0001-01-01T00:00:00Z"}`,
	"{\"type\":\"delivery\",\"id\":\"d\",\"time\":\"2025-03-14T09:26:53Z\",\"source\":\"s\",\"v\":1,\"sink\":\"email\",\"outcome\":\"delivered\",\"ref_id\":\"\xff\xfe\",\"message\":\"<b>&amp;</b>\"}",
	`{"type":"call","id":"c","time":"2025-03-14T09:26:53Z","source":"s","v":1,"call_id":"c1","outcome":"started","attempt":-0,"contact":"+91888****882"}`,
	`{"type":"request","id":"r","time":"2025-03-14T09:26:53Z","source":"d","call_id":"c","campaign":"spring","contact_id":"k","phone":"+12345678","attempt":1,"vars":{}}`,
}

// FuzzDecode: Decode never panics; what it refuses it classifies with one of
// the package's errors (the bus terminates exactly those messages); what it
// accepts re-encodes and decodes again to an equal event with a publishable
// subject. DecodeRequest is held to the same.
func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := events.Decode(data)
		sameAsProbed(t, data, ev, err)
		if err != nil {
			classified(t, err)
			if ev != nil {
				t.Fatalf("Decode returned %#v beside %v", ev, err)
			}
		} else {
			eventRoundTrip(t, ev)
		}

		r, err := events.DecodeRequest(data)
		if err != nil {
			classified(t, err)
			if r != nil {
				t.Fatalf("DecodeRequest returned %#v beside %v", r, err)
			}
		} else {
			requestRoundTrip(t, r)
		}
	})
}

// sameAsProbed holds Decode's one-parse path to the two-parse decoder:
// the same event, or the same error.
func sameAsProbed(t *testing.T, data []byte, ev events.Event, err error) {
	t.Helper()
	if len(data) > events.MaxSize || !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
		return // refused before either parses
	}
	want, wantErr := events.DecodeProbed(data)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("Decode error %v, the probed decoder's %v", err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(ev, want) {
		t.Fatalf("Decode = %#v, the probed decoder's %#v", ev, want)
	}
}

func classified(t *testing.T, err error) {
	t.Helper()
	for _, sentinel := range []error{events.ErrMalformed, events.ErrUnknownType, events.ErrMissing, events.ErrInvalid, events.ErrTooLarge} {
		if errors.Is(err, sentinel) {
			return
		}
	}
	t.Fatalf("unclassified error %v", err)
}

// same compares by meaning: times by instant, and an empty map or list equal
// to an absent one (encoding omits both).
var same = cmp.Options{cmpopts.EquateEmpty()}

func eventRoundTrip(t *testing.T, ev events.Event) {
	t.Helper()
	if ev == nil {
		t.Fatal("Decode returned neither an event nor an error")
	}
	enc, err := events.Encode(ev)
	if err != nil {
		t.Fatalf("accepted event does not encode: %v\n%#v", err, ev)
	}
	again, err := events.Decode(enc)
	if err != nil {
		t.Fatalf("re-encoded event does not decode: %v\n%s", err, enc)
	}
	if reflect.TypeOf(again) != reflect.TypeOf(ev) {
		t.Fatalf("decoded a %T, then a %T", ev, again)
	}
	if diff := cmp.Diff(ev, again, same); diff != "" {
		t.Fatalf("round trip changed the event (-first +second):\n%s", diff)
	}
	if enc2, err := events.Encode(again); err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable: %v\n%s\n%s", err, enc, enc2)
	}
	subject(t, ev.Subject())
	if rec := events.LogRecordOf(ev); !rec.Timestamp.Equal(ev.Head().Time) || rec.Message == "" {
		t.Fatalf("log record %+v of %#v", rec, ev)
	}
}

func requestRoundTrip(t *testing.T, r *events.CallRequest) {
	t.Helper()
	enc, err := events.EncodeRequest(r)
	if err != nil {
		t.Fatalf("accepted request does not encode: %v\n%#v", err, r)
	}
	again, err := events.DecodeRequest(enc)
	if err != nil {
		t.Fatalf("re-encoded request does not decode: %v\n%s", err, enc)
	}
	if diff := cmp.Diff(r, again, same); diff != "" {
		t.Fatalf("round trip changed the request (-first +second):\n%s", diff)
	}
	subject(t, r.Subject())
	if m := r.Masked(); strings.Contains(m, r.Phone) || events.MaskPhone(m) != "****" {
		t.Fatalf("phone %q masked as %q", r.Phone, m)
	}
}

// subject checks that s can be published: agent.<kind>.<token>.
func subject(t *testing.T, s string) {
	t.Helper()
	tokens := strings.Split(s, ".")
	if len(tokens) != 3 || tokens[0] != events.Root {
		t.Fatalf("subject %q is not agent.<kind>.<token>", s)
	}
	for _, tok := range tokens {
		if err := events.ValidToken(tok); err != nil {
			t.Fatalf("subject %q: %v", s, err)
		}
	}
}
