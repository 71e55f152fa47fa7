package media

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Source is where the server reads audio from: a *Store.
type Source interface {
	Size(ctx context.Context, callID string) (int64, error)
	Get(ctx context.Context, callID string) (Audio, error)
}

// Server answers the telephony provider: GET or POST /twiml/<call_id> (Twilio
// requests a call's Url with POST unless told otherwise) returns the TwiML
// that plays the call's audio, GET /audio/<call_id> the audio, with byte
// ranges. Unknown and expired call ids are 404; a bad or expired signature
// is 403.
type Server struct {
	src  Source
	urls URLs
	log  *slog.Logger
	mux  *http.ServeMux
}

// readTimeout bounds one read from the bucket.
const readTimeout = 10 * time.Second

// NewServer serves audio from src; urls builds the audio URL each TwiML
// names and checks signatures. A nil log discards.
func NewServer(src Source, urls URLs, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{src: src, urls: urls, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /twiml/{id}", s.twiml)
	s.mux.HandleFunc("POST /twiml/{id}", s.twiml)
	s.mux.HandleFunc("GET /audio/{id}", s.audio) // HEAD too
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	return s
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// twimlDoc is <Response><Play>URL</Play></Response>.
type twimlDoc struct {
	XMLName xml.Name `xml:"Response"`
	Play    string   `xml:"Play"`
}

func (s *Server) twiml(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.urls.Valid(kindTwiML, id, r.URL.Query()) {
		http.Error(w, "signature invalid or expired", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if _, err := s.src.Size(ctx, id); err != nil {
		s.fail(w, id, err)
		return
	}
	body, err := xml.Marshal(twimlDoc{Play: s.urls.Audio(id)})
	if err != nil {
		s.fail(w, id, err)
		return
	}
	body = append([]byte(xml.Header), body...)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

func (s *Server) audio(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.urls.Valid(kindAudio, id, r.URL.Query()) {
		http.Error(w, "signature invalid or expired", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	a, err := s.src.Get(ctx, id)
	if err != nil {
		s.fail(w, id, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	if a.Digest != "" {
		h.Set("ETag", strconv.Quote(a.Digest))
	}
	// ServeContent answers Range, If-Range and HEAD; it needs a seeker, and
	// the object store's reader is not one.
	http.ServeContent(w, r, "", a.Modified, bytes.NewReader(a.Data))
}

func (s *Server) fail(w http.ResponseWriter, id string, err error) {
	if errors.Is(err, ErrNotFound) {
		http.Error(w, "no audio for this call", http.StatusNotFound)
		return
	}
	s.log.Error("serve media", "call_id", id, "err", err)
	http.Error(w, "audio unavailable", http.StatusServiceUnavailable)
}

// ParsePlay returns the URL of the first <Play> of a TwiML document.
func ParsePlay(doc []byte) (string, error) {
	var d twimlDoc
	if err := xml.Unmarshal(doc, &d); err != nil {
		return "", fmt.Errorf("twiml: %w", err)
	}
	if d.Play == "" {
		return "", errors.New("twiml: no <Play>")
	}
	return d.Play, nil
}
