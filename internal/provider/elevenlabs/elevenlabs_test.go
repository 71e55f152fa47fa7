package elevenlabs

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/providertest"
	"github.com/callagent/agent/internal/resilience"
	"github.com/callagent/agent/internal/resilience/resiliencetest"
)

const testKey = "xi-test-0123456789abcdef"

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// audio is a few bytes that start like an MP3 frame.
var audio = []byte{0xFF, 0xFB, 0x90, 0x64, 1, 2, 3, 4}

// answer is one canned HTTP answer, written unkeyed in the tables.
type answer providertest.Answer

func (a answer) serve(w http.ResponseWriter) { providertest.Answer(a).Serve(w) }

func newClient(t testing.TB, url string) *Client {
	t.Helper()
	c, err := New(config.Service{BaseURL: url, APIKey: testKey, Timeout: 5 * time.Second,
		Options: map[string]string{"voice_id": "voice-1", "model_id": "eleven_flash_v2_5", "output_format": "mp3_22050_32"}},
		WithClock(resiliencetest.NewClock(t0)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// errBody is ElevenLabs' current error body.
func errBody(status int, code, msg string) string {
	b, _ := json.Marshal(map[string]any{"detail": map[string]any{
		"type": "error", "code": code, "message": msg, "status": code, "request_id": "req1", "param": nil,
	}})
	return string(b)
}

// want is how a failed call must be classified; check takes the status
// from the answer.
type want = providertest.Want

func check(t *testing.T, err error, status int, w want) {
	t.Helper()
	w.Status = status
	providertest.Check(t, config.ServiceElevenLabs, err, w, testKey)
}

func TestSpeakClassifiesErrors(t *testing.T) {
	date7 := t0.Add(7 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name string
		answer
		want want
	}{
		{"429 rate limit", answer{429, nil, errBody(429, "rate_limit_exceeded", "Too many requests")},
			want{Category: resilience.Transient, Code: CodeRateLimit}},
		{"429 rate limit with Retry-After", answer{429, map[string]string{"Retry-After": "7"}, errBody(429, "rate_limit_exceeded", "Too many requests")},
			want{Category: resilience.Transient, Code: CodeRateLimit, RetryAfter: 7 * time.Second}},
		{"429 rate limit with Retry-After date", answer{429, map[string]string{"Retry-After": date7}, errBody(429, "rate_limit_exceeded", "Too many requests")},
			want{Category: resilience.Transient, Code: CodeRateLimit, RetryAfter: 7 * time.Second}},
		{"429 concurrent limit", answer{429, nil, errBody(429, "concurrent_limit_exceeded", "Too many concurrent requests")},
			want{Category: resilience.Transient, Code: CodeConcurrentLimit, Msg: "in flight"}},
		{"429 system busy", answer{429, nil, errBody(429, "system_busy", "heavy traffic")},
			want{Category: resilience.Transient, Code: CodeSystemBusy}},
		{"503 system busy", answer{503, nil, errBody(503, "system_busy", "heavy traffic")},
			want{Category: resilience.Transient, Code: CodeSystemBusy}},
		{"500", answer{500, nil, errBody(500, "internal_server_error", "oops")},
			want{Category: resilience.Transient, Code: "internal_server_error"}},
		{"502 html", answer{502, map[string]string{"Content-Type": "text/html"}, "<html>502 Bad Gateway</html>"},
			want{Category: resilience.Transient, Msg: "text/html answer"}},
		{"401 invalid key", answer{401, nil, errBody(401, "invalid_api_key", "Invalid API key: "+testKey)},
			want{Category: resilience.Permanent, Code: CodeInvalidAPIKey, Msg: "authentication failed"}},
		{"401 quota exceeded", answer{401, nil, errBody(401, "quota_exceeded", "This request exceeds your quota of 10000.")},
			want{Category: resilience.Permanent, Code: CodeQuotaExceeded, Msg: "not an authentication failure"}},
		{"401 quota exceeded, older body", answer{401, nil, `{"detail":{"status":"quota_exceeded","message":"This request exceeds your quota."}}`},
			want{Category: resilience.Permanent, Code: CodeQuotaExceeded, Msg: "quota problem"}},
		{"400 max characters", answer{400, nil, errBody(400, "max_character_limit_exceeded", "Text too long")},
			want{Category: resilience.Permanent, Code: CodeMaxCharacters}},
		{"400 voice not found", answer{400, nil, errBody(400, "voice_not_found", "A voice with the given voice_id was not found.")},
			want{Category: resilience.Permanent, Code: CodeVoiceNotFound}},
		{"404 voice not found", answer{404, nil, errBody(404, "voice_not_found", "not found")},
			want{Category: resilience.Permanent, Code: CodeVoiceNotFound}},
		{"422 validation", answer{422, nil, errBody(422, "validation_error", "text: field required")},
			want{Category: resilience.Permanent, Code: CodeValidation}},
		{"422 fastapi list", answer{422, nil, `{"detail":[{"loc":["body","text"],"msg":"field required","type":"value_error.missing"}]}`},
			want{Category: resilience.Permanent, Code: CodeValidation, Msg: "body.text: field required"}},
		{"403 string detail", answer{403, nil, `{"detail":"forbidden for this plan"}`},
			want{Category: resilience.Permanent, Msg: "forbidden for this plan"}},
		{"200 empty body", answer{200, map[string]string{"Content-Type": "audio/mpeg"}, ""},
			want{Category: resilience.Transient, Code: CodeEmptyAudio}},
		{"200 json", answer{200, nil, `{"status":"ok"}`},
			want{Category: resilience.Transient, Code: CodeNotAudio}},
		{"200 html", answer{200, map[string]string{"Content-Type": "text/html"}, "<html>proxy</html>"},
			want{Category: resilience.Transient, Code: CodeNotAudio, Msg: "text/html"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newClient(t, providertest.Server(t, providertest.Answer(tt.answer)).URL).Speak(t.Context(), "c1", "Hello there.")
			if err == nil {
				t.Fatalf("Speak = %d bytes, want an error", len(got))
			}
			check(t, err, tt.Status, tt.want)
		})
	}
}

func TestSpeak(t *testing.T) {
	tests := []struct {
		name, contentType string
	}{
		{"mpeg", "audio/mpeg"},
		{"pcm as octet-stream", "application/octet-stream"},
		{"with parameters", "audio/mpeg; charset=binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var uri string
			var header http.Header
			var req ttsRequest
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				uri, header = r.Method+" "+r.URL.RequestURI(), r.Header.Clone()
				json.NewDecoder(r.Body).Decode(&req)
				w.Header().Set("Content-Type", tt.contentType)
				w.Write(audio)
			}))
			defer srv.Close()
			got, err := newClient(t, srv.URL+"/").Speak(t.Context(), "call-9", "Hi Ada.")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(audio) {
				t.Errorf("Speak = %x, want %x", got, audio)
			}
			if uri != "POST /v1/text-to-speech/voice-1?output_format=mp3_22050_32" {
				t.Errorf("request %s", uri)
			}
			for k, v := range map[string]string{"Xi-Api-Key": testKey, "Accept": "audio/mpeg", "X-Agent-Call-Id": "call-9", "Content-Type": "application/json"} {
				if header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, header.Get(k), v)
				}
			}
			if req.Text != "Hi Ada." || req.ModelID != "eleven_flash_v2_5" {
				t.Errorf("request body = %+v", req)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name string
		answer
		want *want
	}{
		{"ok", answer{200, nil, `{"subscription":{"tier":"creator","character_count":10,"character_limit":100000,"status":"active"}}`}, nil},
		{"no subscription block", answer{200, nil, `{"user_id":"u"}`}, nil},
		{"characters used up", answer{200, nil, `{"subscription":{"character_count":100000,"character_limit":100000}}`},
			&want{Category: resilience.Permanent, Code: CodeQuotaExceeded, Msg: "not an authentication failure"}},
		{"not json", answer{200, map[string]string{"Content-Type": "text/html"}, "<html>"},
			&want{Category: resilience.Transient, Code: CodeHealthMalformed}},
		{"bad key", answer{401, nil, errBody(401, "invalid_api_key", "Invalid API key")},
			&want{Category: resilience.Permanent, Code: CodeInvalidAPIKey}},
		{"busy", answer{503, nil, errBody(503, "system_busy", "busy")},
			&want{Category: resilience.Transient, Code: CodeSystemBusy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := providertest.Server(t, providertest.Answer(tt.answer))
			err := newClient(t, srv.URL).Health(t.Context())
			if path := srv.LastRequest(); path != "GET /v1/user" {
				t.Errorf("health request %s", path)
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Health: %v", err)
				}
				return
			}
			check(t, err, tt.Status, *tt.want)
		})
	}
}

func TestNew(t *testing.T) {
	if _, err := New(config.Service{BaseURL: "http://127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "api_key") {
		t.Errorf("New without a key = %v, want an api_key error", err)
	}
	if _, err := New(config.Service{BaseURL: "127.0.0.1", APIKey: "k"}); err == nil {
		t.Error("New with a base url without scheme succeeded")
	}
	c, err := New(config.Service{BaseURL: "http://127.0.0.1", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c.voice != DefaultVoiceID || c.model != DefaultModelID || c.format != DefaultOutputFormat || c.http.Timeout != DefaultTimeout {
		t.Errorf("defaults = %s %s %s %s", c.voice, c.model, c.format, c.http.Timeout)
	}
}

func BenchmarkSpeak(b *testing.B) {
	mp3 := make([]byte, 16<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Header().Set("Content-Length", strconv.Itoa(len(mp3)))
		w.Write(mp3)
	}))
	defer srv.Close()
	c := newClient(b, srv.URL)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Speak(b.Context(), "bench", "Hi Ada, this is Sam calling about your appointment."); err != nil {
			b.Fatal(err)
		}
	}
}
