package events_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

func TestMaskPhone(t *testing.T) {
	tests := map[string]string{
		"+918881234882":    "+91888****882",
		"+14155552671":     "+1415****671",
		"+4930123456":      "+493****456",
		"+12345678":        "+1****678",
		"+123456789012345": "+12345****345",
		// Not a plausible E.164 number: nothing of it is shown.
		"":                  "****",
		"8881234882":        "****",
		"918881234882":      "****",
		"+0918881234882":    "****",
		"+91 888 123 4882":  "****",
		"+91-888-123-4882":  "****",
		"+1234567":          "****",
		"+1234567890123456": "****",
		"+91888****882":     "****",
		"garbage":           "****",
		"+":                 "****",
		"+٩١٨٨٨١٢٣٤٨٨٢":     "****",
	}
	for in, want := range tests {
		if got := events.MaskPhone(in); got != want {
			t.Errorf("MaskPhone(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMaskPhoneHides: for every length E.164 allows, at least four digits are
// hidden and the masked form is never itself a phone number.
func TestMaskPhoneHides(t *testing.T) {
	for n := 8; n <= 15; n++ {
		phone := "+9" + strings.Repeat("8", n-1)
		masked := events.MaskPhone(phone)
		shown := strings.Count(masked, "8") + strings.Count(masked, "9")
		if n-shown < 4 || !strings.Contains(masked, "****") {
			t.Errorf("MaskPhone(%q) = %q shows %d of %d digits", phone, masked, shown, n)
		}
		ref := (&events.CallRequest{Phone: phone}).Ref()
		ev := events.Stamp(&events.Attempt{CallRef: ref, Service: "llm", Attempt: 1, Outcome: events.OutcomeSuccess}, "t", at(0))
		if _, err := events.Encode(ev); err != nil {
			t.Errorf("an event with contact %q: %v", ref.Contact, err)
		}
	}
}

func TestCallRequestEncode(t *testing.T) {
	r := goldenRequest()
	r.Type, r.V = "", 0
	data, err := events.EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != events.TypeRequest || r.V != events.Version {
		t.Errorf("EncodeRequest left type %q, v %d", r.Type, r.V)
	}
	got, err := events.DecodeRequest(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, goldenRequest()) {
		t.Errorf("round trip\n%#v\nwant\n%#v", got, goldenRequest())
	}
	if got.Masked() != "+91888****882" {
		t.Errorf("Masked() = %q", got.Masked())
	}
	want := events.CallRef{CallID: "call-7f3a9c2e", Campaign: "spring-renewals", ContactID: "contact-0042", Contact: "+91888****882"}
	if got.Ref() != want {
		t.Errorf("Ref() = %+v, want %+v", got.Ref(), want)
	}
	// An event's decoder never takes a request for an event.
	if _, err := events.Decode(data); !errors.Is(err, events.ErrUnknownType) {
		t.Errorf("Decode(request) = %v, want ErrUnknownType", err)
	}
}

func TestCallRequestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(r *events.CallRequest)
		err   error
		field string
	}{
		{"no id", func(r *events.CallRequest) { r.ID = "" }, events.ErrMissing, "id"},
		{"no type", func(r *events.CallRequest) { r.Type = "" }, events.ErrMissing, "type"},
		{"an event type", func(r *events.CallRequest) { r.Type = events.TypeCall }, events.ErrInvalid, "type"},
		{"no time", func(r *events.CallRequest) { r.Time = time.Time{} }, events.ErrMissing, "time"},
		{"no source", func(r *events.CallRequest) { r.Source = "" }, events.ErrMissing, "source"},
		{"version 2", func(r *events.CallRequest) { r.V = 2 }, events.ErrInvalid, "v"},
		{"no call id", func(r *events.CallRequest) { r.CallID = "" }, events.ErrMissing, "call_id"},
		{"no campaign", func(r *events.CallRequest) { r.Campaign = "" }, events.ErrMissing, "campaign"},
		{"campaign with a dot", func(r *events.CallRequest) { r.Campaign = "spring.2025" }, events.ErrInvalid, "campaign"},
		{"campaign wildcard", func(r *events.CallRequest) { r.Campaign = ">" }, events.ErrInvalid, "campaign"},
		{"no contact id", func(r *events.CallRequest) { r.ContactID = "" }, events.ErrMissing, "contact_id"},
		{"no phone", func(r *events.CallRequest) { r.Phone = "" }, events.ErrMissing, "phone"},
		{"national number", func(r *events.CallRequest) { r.Phone = "08881234882" }, events.ErrInvalid, "phone"},
		{"phone with spaces", func(r *events.CallRequest) { r.Phone = "+91 888 123 4882" }, events.ErrInvalid, "phone"},
		{"masked phone", func(r *events.CallRequest) { r.Phone = "+91888****882" }, events.ErrInvalid, "phone"},
		{"phone too long", func(r *events.CallRequest) { r.Phone = "+9188812348820000" }, events.ErrInvalid, "phone"},
		{"no attempt", func(r *events.CallRequest) { r.Attempt = 0 }, events.ErrMissing, "attempt"},
		{"negative attempt", func(r *events.CallRequest) { r.Attempt = -1 }, events.ErrInvalid, "attempt"},
		{"negative max attempts", func(r *events.CallRequest) { r.MaxAttempts = -1 }, events.ErrInvalid, "max_attempts"},
		{"no version is filled in", func(r *events.CallRequest) { r.V = 0 }, nil, ""},
		{"no optional fields", func(r *events.CallRequest) { r.Name, r.Timezone, r.Vars, r.MaxAttempts = "", "", nil, 0 }, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := goldenRequest()
			tc.edit(r)
			err := r.Validate()
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *events.FieldError
			if !errors.Is(err, tc.err) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Validate() = %v, want %v on %q", err, tc.err, tc.field)
			}
			// The same verdict comes out of DecodeRequest for the same JSON, and
			// out of EncodeRequest, except for the type it fills in.
			if _, decErr := events.DecodeRequest(marshal(t, r)); !errors.Is(decErr, tc.err) {
				t.Errorf("DecodeRequest() = %v, want %v", decErr, tc.err)
			}
			if r.Type == "" {
				return
			}
			if _, encErr := events.EncodeRequest(r); !errors.Is(encErr, tc.err) {
				t.Errorf("EncodeRequest() = %v, want %v", encErr, tc.err)
			}
		})
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	tests := []struct {
		in  string
		err error
	}{
		{``, events.ErrMalformed},
		{`null`, events.ErrMalformed},
		{`[]`, events.ErrMalformed},
		{`{"id":`, events.ErrMalformed},
		{`{"id":"r1","attempt":"1"}`, events.ErrMalformed},
		{`{"id":"r1","phone":4930123456}`, events.ErrMalformed},
		{`{}`, events.ErrMissing},
		{`{"id":"r","type":"request","time":"2025-03-14T09:26:53Z","source":"d","call_id":"c","campaign":"a.b","contact_id":"k","phone":"+918881234882","attempt":1}`, events.ErrInvalid},
	}
	for _, tc := range tests {
		if r, err := events.DecodeRequest([]byte(tc.in)); !errors.Is(err, tc.err) || r != nil {
			t.Errorf("DecodeRequest(%s) = %v, %v; want %v", tc.in, r, err, tc.err)
		}
	}
}
