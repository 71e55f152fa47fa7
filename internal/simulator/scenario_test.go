package simulator

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseScenario(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr error  // nil: valid
		wantMsg string // a part of the error message
	}{
		{name: "yaml", doc: "name: x\nlatency: 250ms\nservices:\n  elevenlabs:\n    faults:\n      - {kind: status, status: 503, code: system_busy, count: 4}\n"},
		{name: "json", doc: `{"name":"x","services":{"telephony":{"outcomes":{"+15551230003":"busy"},"faults":[{"kind":"status","status":429,"code":"20429"}]}}}`},
		{name: "number of seconds", doc: "name: x\nservices:\n  llm: {faults: [{kind: slow, delay: 1.5}]}\n"},
		{name: "every kind", doc: "name: x\nservices:\n  crm:\n    faults:\n" + everyKind()},
		{name: "empty", doc: "  \n", wantErr: ErrInvalidScenario, wantMsg: "empty"},
		{name: "unknown service", doc: "name: x\nservices:\n  twillio: {}\n", wantErr: ErrUnknownService, wantMsg: "services.twillio"},
		{name: "unknown kind", doc: "name: x\nservices:\n  llm: {faults: [{kind: explode}]}\n", wantErr: ErrUnknownFault, wantMsg: "services.llm.faults[0].kind"},
		{name: "unknown key", doc: "name: x\nservices:\n  llm: {faults: [{kind: status, status: 500, cout: 3}]}\n", wantErr: ErrInvalidScenario, wantMsg: "cout"},
		{name: "status without status", doc: "name: x\nservices:\n  llm: {faults: [{kind: status}]}\n", wantErr: ErrInvalidScenario, wantMsg: "status: required"},
		{name: "bad outcome", doc: "name: x\nservices:\n  telephony: {outcomes: {\"+15551230003\": hungup}}\n", wantErr: ErrInvalidScenario, wantMsg: "hungup"},
		{name: "outcome number not E.164", doc: "name: x\nservices:\n  telephony: {outcomes: {\"5551230003\": busy}}\n", wantErr: ErrInvalidScenario, wantMsg: "E.164"},
		{name: "outcomes elsewhere", doc: "name: x\nservices:\n  crm: {outcomes: {\"+15551230003\": busy}}\n", wantErr: ErrInvalidScenario, wantMsg: "only telephony"},
		{name: "bad retry_after", doc: "name: x\nservices:\n  llm: {faults: [{kind: status, status: 429, retry_after: soon}]}\n", wantErr: ErrInvalidScenario, wantMsg: "retry_after"},
		{name: "bad duration", doc: "name: x\nservices:\n  llm: {faults: [{kind: slow, delay: forever}]}\n", wantErr: ErrInvalidScenario, wantMsg: "forever"},
		{name: "negative count", doc: "name: x\nservices:\n  llm: {faults: [{kind: status, status: 503, count: -1}]}\n", wantErr: ErrInvalidScenario, wantMsg: "count"},
		{name: "bad endpoint", doc: "name: x\nservices:\n  llm: {faults: [{kind: refuse, endpoint: metrics}]}\n", wantErr: ErrInvalidScenario, wantMsg: "endpoint"},
		{name: "telephony code not a number", doc: "name: x\nservices:\n  telephony: {faults: [{kind: status, status: 429, code: too_many}]}\n", wantErr: ErrInvalidScenario, wantMsg: "20429"},
		{name: "smtp reset", doc: "name: x\nservices:\n  smtp: {faults: [{kind: reset}]}\n", wantErr: ErrInvalidScenario, wantMsg: "smtp"},
		{name: "smtp 200", doc: "name: x\nservices:\n  smtp: {faults: [{kind: status, status: 200}]}\n", wantErr: ErrInvalidScenario, wantMsg: "4xx or 5xx"},
		{name: "secret on telegram", doc: "name: x\nservices:\n  telegram: {secret: s}\n", wantErr: ErrInvalidScenario, wantMsg: "webhook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tt.doc))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseScenario: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func everyKind() string {
	var sb strings.Builder
	for _, k := range FaultKinds {
		sb.WriteString("      - {kind: " + string(k) + ", status: 503}\n")
	}
	return sb.String()
}

func TestScenarioFiles(t *testing.T) {
	files, err := filepath.Glob("../../scenarios/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("scenario files: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sc, err := LoadScenario(f)
			if err != nil {
				t.Fatal(err)
			}
			if sc.Name == "" || sc.Description == "" {
				t.Errorf("scenario %s has no name or description", f)
			}
		})
	}

	seed, err := LoadScenario("../../scenarios/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	faults := seed.Services[ServiceElevenLabs].Faults
	if len(faults) != 1 || faults[0].Kind != KindStatus || faults[0].Status != 503 || faults[0].Count != 4 {
		t.Errorf("seed elevenlabs faults = %+v, want one 503 for 4 requests", faults)
	}
	if _, err := LoadScenario("../../scenarios/missing.yaml"); err == nil {
		t.Error("LoadScenario of a missing file succeeded")
	}
}

func TestRetryAfterValue(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in, want string
		secs     int
	}{
		{"7", "7", 7},
		{"date+7s", "Mon, 02 Mar 2026 10:00:07 GMT", 7},
		{"Mon, 02 Mar 2026 10:01:00 GMT", "Mon, 02 Mar 2026 10:01:00 GMT", 60},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := retryAfterValue(tt.in, now)
			if err != nil || got != tt.want {
				t.Errorf("retryAfterValue = %q, %v; want %q", got, err, tt.want)
			}
			if s := retryAfterSeconds(tt.in, now); s != tt.secs {
				t.Errorf("retryAfterSeconds = %d, want %d", s, tt.secs)
			}
			if _, err := http.ParseTime(got); err != nil && tt.in != "7" {
				t.Errorf("%q is not an HTTP date", got)
			}
		})
	}
}
