package simulator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Media is what the simulated provider fetched for one answered call, as
// Twilio does: the TwiML at the create's Url (or its inline Twiml), then
// the audio its <Play> names.
type Media struct {
	// TwiMLStatus is the HTTP status of the TwiML fetch; 0 for inline
	// TwiML, or when no answer came back.
	TwiMLStatus int `json:"twiml_status,omitempty"`
	// Play is the URL of the first <Play>, empty when the TwiML has none
	// (a <Say>, say).
	Play string `json:"play,omitempty"`
	// AudioStatus is the HTTP status of the audio fetch.
	AudioStatus int `json:"audio_status,omitempty"`
	AudioBytes  int `json:"audio_bytes,omitempty"`
	// AudioSHA256 is the digest of the bytes fetched, TTSSHA256 that of the
	// audio the simulator's TTS last rendered for the call id.
	AudioSHA256 string `json:"audio_sha256,omitempty"`
	TTSSHA256   string `json:"tts_sha256,omitempty"`
	// Played says the callee heard exactly the audio TTS rendered.
	Played bool `json:"played"`
	// Error says why the call failed: its TwiML or audio did not load.
	Error string `json:"error,omitempty"`
}

// mediaTimeout is Twilio's default wait for a TwiML or audio answer.
const mediaTimeout = 15 * time.Second

// audioTypes are the content types Twilio's <Play> accepts.
var audioTypes = []string{"audio/mpeg", "audio/mp3", "audio/wav", "audio/wave", "audio/x-wav", "audio/aiff",
	"audio/x-aifc", "audio/x-aiff", "audio/x-gsm", "audio/gsm", "audio/ulaw", "audio/basic"}

// twimlResponse is the part of TwiML the simulator plays.
type twimlResponse struct {
	XMLName xml.Name `xml:"Response"`
	Play    []string `xml:"Play"`
	Say     []string `xml:"Say"`
}

// fetchMedia plays an answered call: it requests its TwiML as Twilio does
// (POST by default, with the call's parameters), then GETs the audio of
// its first <Play>. A call whose TwiML or audio does not load fails.
func (s *Server) fetchMedia(c *phoneCall, callID, twimlURL, method, inline string) Media {
	ctx, cancel := context.WithTimeout(context.Background(), mediaTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var m Media
	s.mu.Lock()
	m.TTSSHA256 = s.ttsDigests[callID]
	s.mu.Unlock()
	fail := func(format string, args ...any) Media {
		m.Error = fmt.Sprintf(format, args...)
		s.log.Info("call failed: its media did not load", "sid", c.SID, "call_id", callID, "err", m.Error)
		return m
	}
	doc := []byte(inline)
	base, err := url.Parse(twimlURL)
	if err != nil {
		return fail("11200: bad TwiML URL: %v", err)
	}
	if inline == "" {
		params := url.Values{"CallSid": {c.SID}, "AccountSid": {c.Account}, "From": {c.From}, "To": {c.To},
			"CallStatus": {"in-progress"}, "Direction": {"outbound-api"}, "ApiVersion": {"2010-04-01"}}
		var req *http.Request
		if strings.EqualFold(method, http.MethodGet) {
			u := *base
			q := u.Query()
			for k, v := range params {
				q[k] = v
			}
			u.RawQuery = q.Encode()
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		} else {
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, twimlURL, strings.NewReader(params.Encode()))
			if req != nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
		}
		if err != nil {
			return fail("11200: bad TwiML URL: %v", err)
		}
		body, status, ctype, err := fetch(req)
		m.TwiMLStatus = status
		switch {
		case err != nil:
			return fail("11200: HTTP retrieval failure: %v", err)
		case status/100 != 2:
			return fail("11200: HTTP retrieval failure: the TwiML URL answered %d", status)
		case ctype != "text/xml" && ctype != "application/xml":
			return fail("12300: invalid Content-Type %q for TwiML", ctype)
		}
		doc = body
	}
	var tw twimlResponse
	if err := xml.Unmarshal(doc, &tw); err != nil {
		return fail("12100: document parse failure: %v", err)
	}
	if len(tw.Play) == 0 {
		return m // answered, nothing played
	}
	play, err := base.Parse(strings.TrimSpace(tw.Play[0]))
	if err != nil {
		return fail("11200: bad <Play> URL: %v", err)
	}
	m.Play = play.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.Play, nil)
	if err != nil {
		return fail("11200: bad <Play> URL: %v", err)
	}
	body, status, ctype, err := fetch(req)
	m.AudioStatus = status
	switch {
	case err != nil:
		return fail("11200: HTTP retrieval failure for the audio: %v", err)
	case status/100 != 2:
		return fail("11200: HTTP retrieval failure: the audio URL answered %d", status)
	case !slices.Contains(audioTypes, ctype):
		return fail("12300: invalid Content-Type %q for <Play>", ctype)
	}
	sum := sha256.Sum256(body)
	m.AudioBytes, m.AudioSHA256 = len(body), hex.EncodeToString(sum[:])
	m.Played = m.TTSSHA256 != "" && m.AudioSHA256 == m.TTSSHA256
	return m
}

// fetch does req and reads its answer whole.
func fetch(req *http.Request) (body []byte, status int, ctype string, err error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, "", err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	ctype, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return body, resp.StatusCode, ctype, err
}

// recordTTS notes the digest of the audio rendered for callID.
func (s *Server) recordTTS(callID string, audio []byte) {
	if callID == "" {
		return
	}
	sum := sha256.Sum256(audio)
	s.update(func() { s.ttsDigests[callID] = hex.EncodeToString(sum[:]) })
}

// MediaOf returns what the provider fetched for callID's last answered
// call, false when none was answered (or it is still being fetched).
func (s *Server) MediaOf(callID string) (Media, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.media[callID]
	return m, ok
}

func (s *Server) allMedia() map[string]Media {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.media)
}

// defaultTwiML is what GET or POST /telephony/twiml answers: a static
// application for setups that store no audio (services.telephony.options.twiml_url
// pointing at the simulator).
func (s *Server) defaultTwiML(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/xml")
	io.WriteString(w, xml.Header+"<Response><Say>Hello from the call agent simulator.</Say></Response>")
}
