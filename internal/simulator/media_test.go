package simulator

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestTelephonyFetchesMedia: an answered call has its TwiML requested (POST,
// as Twilio does by default) and the audio of its <Play> fetched; the call is
// played only when those bytes are the ones TTS rendered for the call, and
// fails when its TwiML or audio does not load.
func TestTelephonyFetchesMedia(t *testing.T) {
	s := start(t, "name: x\nservices:\n  telephony:\n    rings: 1\n", nil)
	var rendered []byte
	var twimlMethod, twimlSid string
	app := http.NewServeMux()
	app.HandleFunc("/twiml/{id}", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		twimlMethod, twimlSid = r.Method, r.Form.Get("CallSid")
		switch r.PathValue("id") {
		case "missing":
			http.NotFound(w, r)
			return
		case "plain":
			w.Header().Set("Content-Type", "text/plain")
		default:
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		}
		// A relative <Play>, resolved against the TwiML's URL.
		w.Write([]byte(`<?xml version="1.0"?><Response><Play>../audio/` + r.PathValue("id") + `</Play></Response>`))
	})
	app.HandleFunc("GET /audio/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "gone":
			http.NotFound(w, r)
			return
		case "other":
			w.Header().Set("Content-Type", "audio/mpeg")
			w.Write(append([]byte{0}, rendered...))
			return
		}
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Write(rendered)
	})
	srv := httptest.NewServer(app)
	defer srv.Close()

	tests := []struct {
		id, method    string
		status        string
		played        bool
		error, twimlM string
	}{
		{id: "ok", status: "completed", played: true, twimlM: "POST"},
		{id: "ok", method: "GET", status: "completed", played: true, twimlM: "GET"},
		{id: "other", status: "completed", played: false, twimlM: "POST"}, // answered, heard other audio
		{id: "missing", status: "failed", error: "answered 404", twimlM: "POST"},
		{id: "plain", status: "failed", error: "12300", twimlM: "POST"},
		{id: "gone", status: "failed", error: "audio URL answered 404", twimlM: "POST"},
	}
	for i, tt := range tests {
		t.Run(tt.id+tt.method, func(t *testing.T) {
			callID := "call-" + tt.id + tt.method
			r := ttsReq(callID, "Hello, this is your renewal reminder.").do(t, s, nil)
			if r.status != 200 {
				t.Fatalf("tts: %d", r.status)
			}
			rendered = r.body
			q := placeCallReq(callID, "+1555123000"+string(rune('1'+i)))
			form := url.Values{"To": {"+1555123000" + string(rune('1'+i))}, "From": {"+15550001111"}, "Url": {srv.URL + "/twiml/" + tt.id}}
			if tt.method != "" {
				form.Set("Method", tt.method)
			}
			q.body = form.Encode()
			placed := q.do(t, s, nil).json(t)
			sid, _ := placed["sid"].(string)
			var status any
			for range 3 {
				status = getCallReq(sid).do(t, s, nil).json(t)["status"]
			}
			if status != tt.status {
				t.Errorf("final status %v, want %s", status, tt.status)
			}
			m, ok := s.MediaOf(callID)
			if !ok || m.Played != tt.played || (tt.error == "") != (m.Error == "") || !strings.Contains(m.Error, tt.error) {
				t.Errorf("media = %+v, %v; want played %v, error %q", m, ok, tt.played, tt.error)
			}
			if twimlMethod != tt.twimlM || twimlSid != sid {
				t.Errorf("TwiML requested with %s for %q, want %s for %s", twimlMethod, twimlSid, tt.twimlM, sid)
			}
			if tt.played && (m.AudioBytes != len(rendered) || m.AudioSHA256 != m.TTSSHA256) {
				t.Errorf("media = %+v, want the %d bytes rendered", m, len(rendered))
			}
		})
	}

	t.Run("inline twiml without play is answered", func(t *testing.T) {
		sid, _ := placeCallReq("call-say", "+15551239999").do(t, s, nil).json(t)["sid"].(string)
		var status any
		for range 3 {
			status = getCallReq(sid).do(t, s, nil).json(t)["status"]
		}
		if m, _ := s.MediaOf("call-say"); status != "completed" || m.Played || m.Error != "" {
			t.Errorf("status %v, media %+v", status, m)
		}
	})
}
