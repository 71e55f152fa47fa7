package elevenlabs

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/simulator"
)

const script = "Hi Ada, this is Sam calling from Northwind Health about your appointment next week."

func simClient(t *testing.T, sim *simulator.Server, key string, options map[string]string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: sim.URL() + "/elevenlabs", APIKey: key, Timeout: 300 * time.Millisecond, Options: options})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkSim checks one call: w nil wants audio, else that error.
func checkSim(t *testing.T, audio []byte, err error, w *want) {
	t.Helper()
	if w == nil {
		if err != nil || len(audio) == 0 {
			t.Fatalf("Speak = %d bytes, %v; want audio", len(audio), err)
		}
		return
	}
	providertest.Check(t, config.ServiceElevenLabs, err, *w)
}

var (
	transient    = providertest.Transient
	permanent    = providertest.Permanent
	networkCodes = providertest.NetworkCodes()
)

func TestSimulatorFaults(t *testing.T) {
	busy := transient(503, CodeSystemBusy)
	tests := []struct {
		name   string
		faults string
		calls  []*want
	}{
		// The seed scenario: 503 for the first four requests, then recovery.
		{"seed: 503 system_busy four times", `{kind: status, status: 503, code: system_busy, count: 4}`,
			[]*want{busy, busy, busy, busy, nil}},
		{"429 rate limit with Retry-After", `{kind: status, status: 429, retry_after: "7", count: 1}`,
			[]*want{{Category: resilience.Transient, Status: 429, Codes: []string{CodeRateLimit}, RetryAfter: 7 * time.Second}, nil}},
		{"429 rate limit without Retry-After", `{kind: status, status: 429, count: 1}`, []*want{transient(429, CodeRateLimit), nil}},
		{"429 system busy", `{kind: status, status: 429, code: system_busy, count: 1}`, []*want{transient(429, CodeSystemBusy), nil}},
		{"500", `{kind: status, status: 500, count: 1}`, []*want{transient(500, "internal_server_error"), nil}},
		{"401 invalid key", `{kind: status, status: 401}`,
			[]*want{{Category: resilience.Permanent, Status: 401, Codes: []string{CodeInvalidAPIKey}, Msg: "authentication failed"}}},
		{"401 quota exceeded", `{kind: status, status: 401, code: quota_exceeded}`,
			[]*want{{Category: resilience.Permanent, Status: 401, Codes: []string{CodeQuotaExceeded}, Msg: "not an authentication failure"}}},
		{"400 voice not found", `{kind: status, status: 400, code: voice_not_found}`, []*want{permanent(400, CodeVoiceNotFound)}},
		{"422", `{kind: status, status: 422}`, []*want{permanent(422, CodeValidation)}},
		{"slow past the timeout", `{kind: slow, delay: 2s, count: 1}`, []*want{transient(0, resilience.CodeTimeout), nil}},
		{"stall mid audio", `{kind: stall, delay: 2s, count: 1}`, []*want{transient(0, resilience.CodeTimeout), nil}},
		{"refuse", `{kind: refuse, count: 1}`, []*want{transient(0, networkCodes...), nil}},
		{"reset mid audio", `{kind: reset, count: 1}`, []*want{transient(0, networkCodes...), nil}},
		{"malformed", `{kind: malformed, count: 1}`, []*want{transient(200, CodeNotAudio), nil}},
		{"html 502", `{kind: html502, count: 1}`,
			[]*want{{Category: resilience.Transient, Status: 502, Codes: []string{""}, Msg: "text/html answer"}, nil}},
		{"200 empty audio", `{kind: empty_body, count: 1}`, []*want{transient(200, CodeEmptyAudio), nil}},
		{"lost response", `{kind: lost_response, count: 1}`, []*want{transient(0, resilience.CodeEOF), nil}},
		{"burst", `{kind: burst, limit: 1, window: 1m}`, []*want{nil, transient(429, CodeRateLimit)}},
		{"flap", `{kind: flap, every: 2}`, []*want{busy, nil, busy, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := providertest.StartSim(t, "services: {elevenlabs: {faults: ["+tt.faults+"]}}")
			c := simClient(t, sim, testKey, nil)
			for i, w := range tt.calls {
				audio, err := c.Speak(t.Context(), "call-1", script)
				t.Logf("call %d: %d bytes, %v", i+1, len(audio), err)
				checkSim(t, audio, err, w)
			}
		})
	}
}

// The simulator's own validation: a script over the model's character limit
// and an output format it does not know.
func TestSimulatorRejects(t *testing.T) {
	sim := providertest.StartSim(t, "")
	audio, err := simClient(t, sim, testKey, nil).Speak(t.Context(), "call-1", strings.Repeat("a", 10_001))
	checkSim(t, audio, err, permanent(400, CodeMaxCharacters))
	audio, err = simClient(t, sim, testKey, map[string]string{"output_format": "wav"}).Speak(t.Context(), "call-1", script)
	checkSim(t, audio, err, permanent(422, CodeValidation))
	sim.SetScenario(simulator.Scenario{Name: "rotated", Services: map[string]simulator.Service{
		config.ServiceElevenLabs: {APIKey: "new-key-0123456789"},
	}})
	audio, err = simClient(t, sim, testKey, nil).Speak(t.Context(), "call-1", script)
	checkSim(t, audio, err, permanent(401, CodeInvalidAPIKey))
}

// More renders in flight than the plan allows: the ones over the limit get
// 429 concurrent_limit_exceeded, transient.
func TestSimulatorConcurrencyLimit(t *testing.T) {
	// Each admitted render is held for a second, long enough for all the
	// requests to arrive while the first two are in flight.
	sim := providertest.StartSim(t, "services: {elevenlabs: {faults: [{kind: concurrency, limit: 2, delay: 1s}]}}")
	c, err := New(config.Service{BaseURL: sim.URL() + "/elevenlabs", APIKey: testKey, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = c.Speak(t.Context(), "call-1", script) })
	}
	wg.Wait()
	ok, limited := 0, 0
	for _, err := range errs {
		var e *resilience.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &e) && e.Code == CodeConcurrentLimit && e.Category == resilience.Transient:
			limited++
			if !strings.Contains(e.Message, "in flight") {
				t.Errorf("message %q does not say requests are in flight", e.Message)
			}
		default:
			t.Errorf("Speak: %v", err)
		}
	}
	if ok != 2 || limited != n-2 {
		t.Errorf("%d rendered and %d limited, want 2 rendered and the rest limited", ok, limited)
	}
}

// A truncated answer whose Content-Length matches the shortened body cannot
// be told from a complete one over HTTP: the client returns the shorter
// audio. (MP3 has no end marker to check; a caller that cares can compare
// with the x-character-count it expects.) This test pins that limitation.
func TestSimulatorTruncatedAudio(t *testing.T) {
	sim := providertest.StartSim(t, "services: {elevenlabs: {faults: [{kind: truncated, count: 1}]}}")
	c := simClient(t, sim, testKey, nil)
	short, err := c.Speak(t.Context(), "call-1", script)
	if err != nil {
		t.Fatal(err)
	}
	full, err := c.Speak(t.Context(), "call-1", script)
	if err != nil {
		t.Fatal(err)
	}
	if len(short) != len(full)/2 {
		t.Errorf("truncated render = %d bytes, full = %d; want half", len(short), len(full))
	}
}

func TestSimulatorSpeak(t *testing.T) {
	sim := providertest.StartSim(t, "")
	audio, err := simClient(t, sim, testKey, map[string]string{"model_id": "eleven_flash_v2_5"}).Speak(t.Context(), "call-1", script)
	if err != nil {
		t.Fatal(err)
	}
	if len(audio) < 4 || string(audio[:3]) != "ID3" {
		t.Errorf("audio starts %q, want an ID3 tag", audio[:min(len(audio), 4)])
	}
	if n := sim.SideEffects(config.ServiceElevenLabs, "call-1"); n != 1 {
		t.Errorf("side effects = %d, want 1", n)
	}
}

func TestSimulatorHealth(t *testing.T) {
	sim := providertest.StartSim(t, "services: {elevenlabs: {faults: [{kind: status, status: 503, code: system_busy}]}}")
	if err := simClient(t, sim, testKey, nil).Health(t.Context()); err != nil {
		t.Errorf("Health with a data-only fault (shallow health): %v", err)
	}
	sim = providertest.StartSim(t, "services: {elevenlabs: {faults: [{kind: status, status: 503, code: system_busy, endpoint: all}]}}")
	err := simClient(t, sim, testKey, nil).Health(t.Context())
	checkSim(t, nil, err, transient(503, CodeSystemBusy))
}
