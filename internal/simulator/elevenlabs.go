package simulator

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// elevenModels are the models the simulator knows, with their per-request
// character limits.
var elevenModels = []struct {
	ID, Name string
	MaxChars int
}{
	{"eleven_multilingual_v2", "Eleven Multilingual v2", 10_000},
	{"eleven_flash_v2_5", "Eleven Flash v2.5", 40_000},
	{"eleven_turbo_v2_5", "Eleven Turbo v2.5", 40_000},
	{"eleven_flash_v2", "Eleven Flash v2", 30_000},
	{"eleven_turbo_v2", "Eleven Turbo v2", 30_000},
	{"eleven_v3", "Eleven v3", 5_000},
	{"eleven_monolingual_v1", "Eleven English v1", 10_000},
}

var outputFormat = regexp.MustCompile(`^(mp3|pcm|ulaw|alaw|opus)_[0-9]+(_[0-9]+)?$`)

// authorized checks a request's credential against the scenario's api_key.
func (s *Server) authorized(service, key string) bool {
	if key == "" {
		return false
	}
	s.mu.Lock()
	want := s.sc.Services[service].APIKey
	s.mu.Unlock()
	return want == "" || subtle.ConstantTimeCompare([]byte(key), []byte(want)) == 1
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

func (s *Server) tts(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	fail := func(status int, code, msg string) {
		writeError(w, ServiceElevenLabs, apiError{Status: status, Code: code, Message: msg}, now)
	}
	if !s.authorized(ServiceElevenLabs, r.Header.Get("xi-api-key")) {
		fail(http.StatusUnauthorized, "invalid_api_key", "")
		return
	}
	var req struct {
		Text          string `json:"text"`
		ModelID       string `json:"model_id"`
		VoiceSettings *struct {
			Stability       *float64 `json:"stability"`
			SimilarityBoost *float64 `json:"similarity_boost"`
			Style           *float64 `json:"style"`
			Speed           *float64 `json:"speed"`
		} `json:"voice_settings"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		fail(http.StatusUnprocessableEntity, "validation_error", "Invalid JSON body: "+err.Error())
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		fail(http.StatusUnprocessableEntity, "validation_error", "text: field required")
		return
	}
	if f := r.URL.Query().Get("output_format"); f != "" && !outputFormat.MatchString(f) {
		fail(http.StatusUnprocessableEntity, "validation_error", fmt.Sprintf("output_format: %q is not a supported format", f))
		return
	}
	if vs := req.VoiceSettings; vs != nil {
		for _, p := range []struct {
			name string
			v    *float64
		}{{"stability", vs.Stability}, {"similarity_boost", vs.SimilarityBoost}, {"style", vs.Style}} {
			if p.v != nil && (*p.v < 0 || *p.v > 1) {
				fail(http.StatusUnprocessableEntity, "validation_error", "voice_settings."+p.name+": must be between 0 and 1")
				return
			}
		}
		if vs.Speed != nil && (*vs.Speed < 0.7 || *vs.Speed > 1.2) {
			fail(http.StatusUnprocessableEntity, "validation_error", "voice_settings.speed: must be between 0.7 and 1.2")
			return
		}
	}
	model := req.ModelID
	if model == "" {
		model = elevenModels[0].ID
	}
	maxChars := 0
	for _, m := range elevenModels {
		if m.ID == model {
			maxChars = m.MaxChars
		}
	}
	if maxChars == 0 {
		fail(http.StatusBadRequest, "model_not_found", fmt.Sprintf("Model %q was not found.", model))
		return
	}
	chars := utf8.RuneCountInString(req.Text)
	if chars > maxChars {
		fail(http.StatusBadRequest, "max_character_limit_exceeded",
			fmt.Sprintf("Text is %d characters; %s allows at most %d per request.", chars, model, maxChars))
		return
	}

	audio := fakeMP3(chars)
	s.sideEffect(ServiceElevenLabs, r.Header.Get(HeaderCallID))
	s.recordTTS(r.Header.Get(HeaderCallID), audio)
	s.update(func() { s.ttsChars += chars })

	h := w.Header()
	h.Set("Content-Type", "audio/mpeg")
	h.Set("request-id", randHex(16))
	h.Set("history-item-id", randHex(10))
	h.Set("x-character-count", strconv.Itoa(chars))
	if !strings.HasSuffix(r.URL.Path, "/stream") {
		h.Set("Content-Length", strconv.Itoa(len(audio)))
		w.WriteHeader(http.StatusOK)
		w.Write(audio)
		return
	}
	// The streaming variant sends chunks as they are "rendered".
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for chunk := range slicesChunk(audio, 1024) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		rc.Flush()
	}
}

func slicesChunk(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

// fakeMP3 returns bytes shaped like an MP3 file: an ID3v2 tag, then MPEG-1
// layer III frames (128 kbit/s, 44.1 kHz, 417 bytes each), about one frame
// for every fifteen characters of text.
func fakeMP3(chars int) []byte {
	var b bytes.Buffer
	b.Write([]byte{'I', 'D', '3', 4, 0, 0, 0, 0, 0, 0})
	frames := 1 + chars/15
	frame := make([]byte, 417)
	copy(frame, []byte{0xFF, 0xFB, 0x90, 0x64})
	for i := 4; i < len(frame); i++ {
		frame[i] = byte(i * 7)
	}
	for range frames {
		b.Write(frame)
	}
	return b.Bytes()
}

func (s *Server) elevenUser(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(ServiceElevenLabs, r.Header.Get("xi-api-key")) {
		writeError(w, ServiceElevenLabs, apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key"}, s.now())
		return
	}
	s.mu.Lock()
	chars := s.ttsChars
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"user_id": "sim-user",
		"subscription": map[string]any{
			"tier":                            "creator",
			"character_count":                 chars,
			"character_limit":                 100_000,
			"can_extend_character_limit":      true,
			"status":                          "active",
			"next_character_count_reset_unix": s.now().AddDate(0, 1, 0).Unix(),
		},
		"is_new_user":                     false,
		"first_name":                      "Simulator",
		"can_use_delayed_payment_methods": false,
	})
}

func (s *Server) elevenModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(ServiceElevenLabs, r.Header.Get("xi-api-key")) {
		writeError(w, ServiceElevenLabs, apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key"}, s.now())
		return
	}
	models := make([]map[string]any, 0, len(elevenModels))
	for _, m := range elevenModels {
		models = append(models, map[string]any{
			"model_id":                               m.ID,
			"name":                                   m.Name,
			"can_do_text_to_speech":                  true,
			"max_characters_request_free_user":       min(m.MaxChars, 2_500),
			"max_characters_request_subscribed_user": m.MaxChars,
			"languages":                              []map[string]string{{"language_id": "en", "name": "English"}},
		})
	}
	writeJSON(w, http.StatusOK, models)
}
