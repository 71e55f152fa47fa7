package events_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the events in golden_test.go")

// at is the golden files' clock: a fixed instant with sub-second precision.
func at(offset time.Duration) time.Time {
	return time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC).Add(offset)
}

func ptr[T any](v T) *T { return &v }

func head(t events.Type, id string, offset time.Duration, source string) events.Header {
	return events.Header{ID: id, Type: t, Time: at(offset), Source: source, V: events.Version}
}

// callRef is the call the golden events are about. The contact is masked, as
// on every event.
func callRef() events.CallRef {
	return events.CallRef{CallID: "call-7f3a9c2e", Campaign: "spring-renewals", ContactID: "contact-0042", Contact: "+91888****882"}
}

// goldens are the events behind testdata/<name>.json. The file name starts with
// the event's type; a suffix after "_" names a variant that shows more fields.
func goldens() map[string]events.Event {
	ref := callRef()
	return map[string]events.Event{
		"call": &events.Call{
			Header: head(events.TypeCall, "0f8e9a3c5b7d41e2a6c4b2d0e8f6a4c2", 41*time.Second, "caller-1"), CallRef: ref,
			Outcome: events.CallFailed, Attempt: 1, Service: "elevenlabs", ErrorCategory: events.CategoryTransient,
			StatusCode: 503, Reason: "retries_exhausted", Message: "elevenlabs: 503 Service Unavailable after 4 attempts",
			LatencyMs: 41230,
		},
		"call_completed": &events.Call{
			Header: head(events.TypeCall, "5a1c7e9b3d2f4a6c8e0b1d3f5a7c9e1b", 95*time.Second, "caller-2"), CallRef: ref,
			Outcome: events.CallCompleted, Attempt: 2, CallStatus: "completed", CRMRecordID: "51000000042", LatencyMs: 64210, AudioBytes: 2150,
		},
		"call_skipped": &events.Call{
			Header: head(events.TypeCall, "9d3b5f7a1c2e4b6d8f0a2c4e6b8d0f2a", 50*time.Second, "caller-1"), CallRef: ref,
			Outcome: events.CallSkipped, Attempt: 1, Service: "elevenlabs", ErrorCategory: events.CategoryCircuitOpen,
			Reason: "circuit_open", Message: "elevenlabs breaker is open", RetryInMs: 28500,
		},
		"call_cancelled": &events.Call{
			Header: head(events.TypeCall, "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e0b", 52*time.Second, "caller-2"), CallRef: ref,
			Outcome: events.CallCancelled, Attempt: 1, Reason: "campaign_cancelled",
			Message: "campaign spring-renewals was cancelled before the contact was rung",
		},
		"call_suppressed": &events.Call{
			Header: head(events.TypeCall, "4d6f8a0c2e1b3d5f7a9c1e3b5d7f9a1c", 53*time.Second, "caller-1"), CallRef: ref,
			Outcome: events.CallSuppressed, Attempt: 1, Reason: "do_not_call",
			Message: "the number is on the do-not-call list",
		},
		"attempt": &events.Attempt{
			Header: head(events.TypeAttempt, "3c5e7a9b1d2f4e6a8c0b2d4f6a8c0e2b", 12*time.Second, "caller-1"), CallRef: ref,
			Service: "elevenlabs", Attempt: 2, MaxAttempts: 4, Outcome: events.OutcomeFailure,
			ErrorCategory: events.CategoryTransient, StatusCode: 503, ErrorCode: "service_unavailable",
			Message: "503 Service Unavailable", LatencyMs: 812, BreakerState: events.BreakerClosed,
		},
		"retry": &events.Retry{
			Header: head(events.TypeRetry, "7b9d1f3a5c6e8a0b2c4d6e8f0a1b3c5d", 12*time.Second+900*time.Millisecond, "caller-1"), CallRef: ref,
			Service: "elevenlabs", Attempt: 2, MaxAttempts: 4, RetryInMs: 10000, ErrorCategory: events.CategoryTransient,
			StatusCode: 503, Message: "503 Service Unavailable", BreakerState: events.BreakerClosed,
		},
		"breaker": &events.Breaker{
			Header:  head(events.TypeBreaker, "1e3a5c7e9b0d2f4a6c8e0a2c4e6a8c0e", 33*time.Second, "caller-1"),
			Service: "elevenlabs", From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen,
			Reason: "failure_threshold", Message: "5 consecutive failures", OpenUntil: ptr(at(63 * time.Second)), Failures: 5,
		},
		"breaker_adopted": &events.Breaker{
			Header:  head(events.TypeBreaker, "2f4b6d8f0a1c3e5a7c9e1b3d5f7a9c1e", 33*time.Second+40*time.Millisecond, "caller-2"),
			Service: "elevenlabs", From: events.BreakerClosed, To: events.BreakerOpen, BreakerState: events.BreakerOpen,
			Reason: "adopted", Origin: "caller-1", OpenUntil: ptr(at(63 * time.Second)),
		},
		"health": &events.Health{
			Header:  head(events.TypeHealth, "4d6f8a0c2e3b5d7f9a1c3e5b7d9f1a3c", 70*time.Second, "caller-1"),
			Service: "elevenlabs", Outcome: events.OutcomeFailure, StatusCode: 503, LatencyMs: 245,
			Message: "probe: 503 Service Unavailable", BreakerState: events.BreakerOpen,
		},
		"status": &events.Status{
			Header:  head(events.TypeStatus, "6a8c0e2b4d5f7a9c1e3b5d7f9a0c2e4b", 34*time.Second, "observer-1"),
			Service: "elevenlabs", From: events.StatusUp, To: events.StatusDown, Message: "breaker open on 2 of 2 callers",
		},
		"alert": &events.Alert{
			Header:      head(events.TypeAlert, "8c0e2a4b6d7f9a1c3e5b7d9f0a2c4e6b", 35*time.Second, "observer-1"),
			Fingerprint: "b7e1c0d2a9f3", Rule: "breaker_open", Severity: events.SeverityCritical, Status: events.AlertFiring,
			Service: "elevenlabs", Summary: "elevenlabs circuit breaker opened",
			Message:  "5 consecutive failures (503 Service Unavailable); calls are skipped until 09:27:56Z",
			StartsAt: at(33 * time.Second), Labels: map[string]string{"campaign": "spring-renewals", "region": "in"},
			Count: 3, CallIDs: []string{"call-7f3a9c2e", "call-81b04d6e", "call-92c15e7f"},
		},
		"alert_resolved": &events.Alert{
			Header:      head(events.TypeAlert, "0e2c4a6b8d9f1a3c5e7b9d1f2a4c6e8b", 140*time.Second, "observer-1"),
			Fingerprint: "b7e1c0d2a9f3", Rule: "breaker_open", Severity: events.SeverityCritical, Status: events.AlertResolved,
			Service: "elevenlabs", Summary: "elevenlabs circuit breaker closed again",
			StartsAt: at(33 * time.Second), EndsAt: ptr(at(138 * time.Second)),
		},
		"delivery": &events.Delivery{
			Header: head(events.TypeDelivery, "2a4c6e8b0d1f3a5c7e9b1d3f4a6c8e0b", 36*time.Second, "observer-1"),
			Sink:   "telegram", Outcome: events.DeliveryDelivered, RefID: "8c0e2a4b6d7f9a1c3e5b7d9f0a2c4e6b",
			RefType: events.TypeAlert, Fingerprint: "b7e1c0d2a9f3", Attempts: 1,
		},
		"delivery_dead_letter": &events.Delivery{
			Header: head(events.TypeDelivery, "3b5d7f9a1c2e4b6d8f0a2c4e5b7d9f1a", 96*time.Second, "observer-1"),
			Sink:   "webhook", Outcome: events.DeliveryDeadLetter, RefID: "8c0e2a4b6d7f9a1c3e5b7d9f0a2c4e6b",
			RefType: events.TypeAlert, Fingerprint: "b7e1c0d2a9f3", Attempts: 5,
			Message: "POST 127.0.0.1:9443/hook: 500 Internal Server Error",
		},
	}
}

// goldenRequest is testdata/request.json: the one message with a full number.
func goldenRequest() *events.CallRequest {
	ref := callRef()
	return &events.CallRequest{
		ID: "c2e4a6b8d0f1a3c5e7b9d1f3a5c7e9b0", Type: events.TypeRequest, Time: at(0), Source: "dispatcher-1", V: events.Version,
		CallID: ref.CallID, Campaign: ref.Campaign, ContactID: ref.ContactID, Phone: "+918881234882",
		Name: "Asha Rao", Timezone: "Asia/Kolkata", Vars: map[string]string{"plan": "gold", "renewal_date": "2025-04-01"},
		Attempt: 1, MaxAttempts: 3,
	}
}

// golden compares data with testdata/<name>.json by meaning, or rewrites the
// file with -update. It returns the file's contents.
func golden(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", name+".json")
	if *update {
		var out bytes.Buffer
		if err := json.Indent(&out, data, "", "  "); err != nil {
			t.Fatal(err)
		}
		out.WriteByte('\n')
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./events -update to write it)", err)
	}
	if !jsonEqual(t, file, data) {
		t.Errorf("%s differs from the encoded event (run go test ./events -update if the change is intended)\nfile:    %s\nencoded: %s", path, bytes.TrimSpace(file), data)
	}
	return file
}

// jsonEqual compares two JSON documents by meaning: key order and spacing do not count.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("unmarshal %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func TestGoldenEvents(t *testing.T) {
	for name, want := range goldens() {
		t.Run(name, func(t *testing.T) {
			if typ, _, _ := strings.Cut(name, "_"); events.Type(typ) != want.Head().Type {
				t.Fatalf("golden %s holds a %s event: the file name must start with its type", name, want.Head().Type)
			}
			enc, err := events.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			file := golden(t, name, enc)

			got, err := events.Decode(file)
			if err != nil {
				t.Fatalf("decode %s: %v", name, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got, want)
			}
			again, err := events.Encode(got)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, again, file) {
				t.Errorf("re-encoded %s differs from the file:\n%s", again, file)
			}
		})
	}
}

func TestGoldenRequest(t *testing.T) {
	want := goldenRequest()
	enc, err := events.EncodeRequest(want)
	if err != nil {
		t.Fatal(err)
	}
	file := golden(t, "request", enc)
	got, err := events.DecodeRequest(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%#v\nwant\n%#v", got, want)
	}
	again, err := events.EncodeRequest(got)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, again, file) {
		t.Errorf("re-encoded %s differs from the file:\n%s", again, file)
	}
}

// TestGoldenFilesListed keeps testdata/ free of stale files no test reads, and
// makes sure every type has its <type>.json.
func TestGoldenFilesListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{"request": true}
	for name := range goldens() {
		listed[name] = true
	}
	var names []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		names = append(names, name)
		if !listed[name] {
			t.Errorf("%s is not one of the golden events in golden_test.go", f)
		}
	}
	for _, typ := range append(slices.Clone(events.Types), events.TypeRequest) {
		if !slices.Contains(names, string(typ)) {
			t.Errorf("testdata/%s.json is missing", typ)
		}
	}
}

// goldenFiles returns every golden file of type typ, <typ>.json first.
func goldenFiles(t *testing.T, typ events.Type) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", string(typ)+"*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		if name != string(typ) && !strings.HasPrefix(name, string(typ)+"_") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	if len(out) == 0 {
		t.Fatalf("no golden file for %s", typ)
	}
	return out
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
