package simulator

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// HeaderCallID carries the call id on every client request; side effects are
// counted by it.
const HeaderCallID = "X-Agent-Call-Id"

// maxBody bounds what the simulator reads from one request.
const maxBody = 10 << 20

// maxArrivals bounds the request times kept per service for PeakRate.
const maxArrivals = 100_000

// Received is one request (or SMTP message) a receiver got, in arrival order.
type Received struct {
	// Time is when the request arrived.
	Time     time.Time `json:"time"`
	Receiver string    `json:"receiver"`
	// Path is the webhook name, the Telegram method or the Sheets range.
	Path    string            `json:"path,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the raw request body; for SMTP the message's text (the
	// text/plain part, decoded).
	Body string `json:"body"`
	// Status is what the receiver answered: the HTTP status or SMTP reply
	// code, 0 when the connection was closed without an answer.
	Status int `json:"status"`
	// Fault is the fault kind applied to this request, "" for none.
	Fault FaultKind `json:"fault,omitempty"`
	// Verified says whether a webhook signature checked out; nil when the
	// scenario gives the webhook no secret.
	Verified *bool `json:"verified,omitempty"`
	// Fields holds parsed parameters: Telegram chat_id, text, parse_mode;
	// Sheets spreadsheet_id, range, value_input_option, insert_data_option,
	// rows; SMTP auth_user, tls ("true" after STARTTLS) and raw (the whole
	// message as sent).
	Fields map[string]string `json:"fields,omitempty"`
	// From, To and Subject are an SMTP message's envelope and subject.
	From    string   `json:"from,omitempty"`
	To      []string `json:"to,omitempty"`
	Subject string   `json:"subject,omitempty"`
}

// Server is the simulator. Build it with New, serve it with Start (or mount
// Handler on a server of your own).
type Server struct {
	log *slog.Logger
	now func() time.Time
	mux *http.ServeMux

	mu       sync.Mutex
	sc       Scenario
	scSince  time.Time
	faults   map[string][]*faultState
	meters   map[string]*window
	effects  map[string]map[string]int
	requests map[string]map[int]int
	arrivals map[string][]time.Time
	received map[string][]*Received
	// epoch counts resets: a request that arrived before the last one is
	// not listed in the fresh recordings when it is answered after it.
	epoch    uint64
	crm      crmStore
	calls    map[string]*phoneCall
	sheets   map[string]int // rows appended per spreadsheet and sheet
	msgID    int
	ttsChars int
	// ttsDigests holds the SHA-256 of the audio last rendered per call id,
	// media what the provider fetched for each call id's answered call.
	ttsDigests map[string]string
	media      map[string]Media

	done      chan struct{}
	closeOnce sync.Once
	httpSrv   *http.Server
	httpLn    net.Listener
	smtpSrv   *smtp.Server
	smtpLn    net.Listener
	certPool  *x509.CertPool
	certPEM   []byte
}

// New returns a simulator playing sc. A nil log discards.
func New(sc Scenario, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log, now: time.Now, done: make(chan struct{})}
	s.resetLocked()
	s.setScenarioLocked(sc)
	s.mux = s.routes()
	return s
}

// Handler serves the providers, the HTTP receivers and the admin API.
func (s *Server) Handler() http.Handler { return s.mux }

// Start listens on httpAddr and, unless smtpAddr is empty, on smtpAddr
// ("127.0.0.1:0" picks a free port), and serves in the background until ctx
// is done or Close is called. It returns once both listeners are bound.
func (s *Server) Start(ctx context.Context, httpAddr, smtpAddr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("simulator: listen http: %w", err)
	}
	s.httpLn = ln
	s.httpSrv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if smtpAddr != "" {
		if err := s.startSMTP(ctx, smtpAddr); err != nil {
			ln.Close()
			return err
		}
	}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	s.log.Info("simulator listening", "http", s.URL(), "smtp", s.SMTPAddr(), "scenario", s.Scenario().Name)
	return nil
}

// URL is the HTTP base, such as http://127.0.0.1:8900; a service's base URL
// is URL()+"/"+service. Empty before Start.
func (s *Server) URL() string {
	if s.httpLn == nil {
		return ""
	}
	return "http://" + s.httpLn.Addr().String()
}

// SMTPAddr is the SMTP listener's host:port, empty when it is not running.
func (s *Server) SMTPAddr() string {
	if s.smtpLn == nil {
		return ""
	}
	return s.smtpLn.Addr().String()
}

// SMTPCertPool holds the SMTP listener's self-signed certificate (valid for
// 127.0.0.1 and localhost), for clients that verify STARTTLS. Nil before Start.
func (s *Server) SMTPCertPool() *x509.CertPool { return s.certPool }

// SMTPCertPEM is the same certificate in PEM, for a client in another
// process to trust. Nil before Start.
func (s *Server) SMTPCertPEM() []byte { return s.certPEM }

// Close stops both listeners, drops open connections and ends stalled
// responses.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		close(s.done)
		if s.httpSrv != nil {
			if err := s.httpSrv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
		if s.smtpSrv != nil {
			if err := s.smtpSrv.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// Scenario returns the scenario being played.
func (s *Server) Scenario() Scenario {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sc
}

// SetScenario replaces the scenario; fault counters start again from zero.
// Side effects, recordings and stored records are kept (see Reset).
func (s *Server) SetScenario(sc Scenario) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setScenarioLocked(sc)
	s.log.Info("scenario set", "scenario", sc.Name, "services", sortedKeys(sc.Services))
}

func (s *Server) setScenarioLocked(sc Scenario) {
	s.sc = sc
	s.scSince = s.now()
	s.faults = make(map[string][]*faultState)
	for name, svc := range sc.Services {
		for _, f := range svc.Faults {
			s.faults[name] = append(s.faults[name], newFaultState(name, f))
		}
	}
	s.meters = map[string]*window{
		ServiceLLM: {limit: 10_000, period: time.Minute},
		ServiceCRM: {limit: 100, period: 10 * time.Second},
	}
}

// Reset forgets side effects, request counts, recordings, CRM records and
// calls, and restarts the scenario's fault counters.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
	s.setScenarioLocked(s.sc)
}

func (s *Server) resetLocked() {
	s.effects = make(map[string]map[string]int)
	s.requests = make(map[string]map[int]int)
	s.arrivals = make(map[string][]time.Time)
	s.received = make(map[string][]*Received)
	s.epoch++
	s.crm = crmStore{byID: make(map[string]*crmRecord)}
	s.calls = make(map[string]*phoneCall)
	s.sheets = make(map[string]int)
	s.msgID = 0
	s.ttsChars = 0
	s.ttsDigests = make(map[string]string)
	s.media = make(map[string]Media)
}

// SideEffects is how many times service performed its effect (llm: a
// completion, elevenlabs: a TTS render, telephony: a call placed, crm: a
// record created) for callID, including effects whose response was lost.
func (s *Server) SideEffects(service, callID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effects[service][callID]
}

func (s *Server) sideEffect(service, callID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.effects[service] == nil {
		s.effects[service] = make(map[string]int)
	}
	s.effects[service][callID]++
}

func (s *Server) allSideEffects() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]int, len(s.effects))
	for svc, m := range s.effects {
		out[svc] = maps.Clone(m)
	}
	return out
}

// Received returns copies of what receiver (telegram, webhook, sheets, smtp)
// got, faulted requests included (see Received.Status). A request is listed
// once it is answered (or its connection closed without an answer), in the
// order of the answers, and never changes after: a caller polling the list
// while requests are in flight can take each entry as final and read only
// the entries past those it has read. Received.Time is still the arrival.
func (s *Server) Received(receiver string) []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Received, 0, len(s.received[receiver]))
	for _, r := range s.received[receiver] {
		c := *r
		c.Headers = maps.Clone(r.Headers)
		c.Fields = maps.Clone(r.Fields)
		c.To = slices.Clone(r.To)
		if r.Verified != nil {
			v := *r.Verified
			c.Verified = &v
		}
		out = append(out, c)
	}
	return out
}

// record lists a request that arrived in epoch, once answered: finish fills
// in the answer under the lock first.
func (s *Server) record(r *Received, epoch uint64, finish func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	finish()
	if epoch != s.epoch {
		return // recorded before a reset, which dropped what came before it
	}
	s.received[r.Receiver] = append(s.received[r.Receiver], r)
}

func (s *Server) epochNow() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// update changes a recorded entry under the lock.
func (s *Server) update(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// Requests counts the answers service gave by status; 0 counts connections
// closed without an answer (refuse, lost_response).
func (s *Server) Requests(service string) map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.requests[service])
}

func (s *Server) countRequest(service string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.requests[service] == nil {
		s.requests[service] = make(map[int]int)
	}
	s.requests[service][status]++
}

// arrive notes a request's arrival time for PeakRate.
func (s *Server) arrive(service string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := append(s.arrivals[service], t)
	if len(a) > maxArrivals {
		a = a[len(a)-maxArrivals:]
	}
	s.arrivals[service] = a
}

// PeakRate is the largest number of requests service received within any
// span of length window: a test asserts "at most 60 Sheets writes a minute".
func (s *Server) PeakRate(service string, window time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.arrivals[service]
	peak, lo := 0, 0
	for hi := range a {
		for a[hi].Sub(a[lo]) >= window {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()

	// ElevenLabs.
	mux.Handle("POST /elevenlabs/v1/text-to-speech/{voice}", s.wrap(ServiceElevenLabs, EndpointData, s.tts))
	mux.Handle("POST /elevenlabs/v1/text-to-speech/{voice}/stream", s.wrap(ServiceElevenLabs, EndpointData, s.tts))
	mux.Handle("GET /elevenlabs/v1/user", s.wrap(ServiceElevenLabs, EndpointHealth, s.elevenUser))
	mux.Handle("GET /elevenlabs/v1/models", s.wrap(ServiceElevenLabs, EndpointHealth, s.elevenModels))

	// OpenAI-compatible LLM.
	mux.Handle("POST /llm/v1/chat/completions", s.wrap(ServiceLLM, EndpointData, s.chat))
	mux.Handle("GET /llm/v1/models", s.wrap(ServiceLLM, EndpointHealth, s.llmModels))

	// HubSpot-like CRM. Its base URL is URL()+"/crm" and clients append
	// HubSpot's own paths (/crm/v3/objects/calls, /account-info/v3/details);
	// both are also served with /crm doubled or not, since clients differ on
	// whether the prefix is part of the path.
	for _, base := range []string{"/crm/crm/v3", "/crm/v3"} {
		mux.Handle("POST "+base+"/objects/calls", s.wrap(ServiceCRM, EndpointData, s.crmCreate))
		mux.Handle("POST "+base+"/objects/calls/search", s.wrap(ServiceCRM, EndpointData, s.crmSearch))
		mux.Handle("GET "+base+"/objects/calls/{id}", s.wrap(ServiceCRM, EndpointData, s.crmGet))
		mux.Handle("PATCH "+base+"/objects/calls/{id}", s.wrap(ServiceCRM, EndpointData, s.crmUpdate))
	}
	mux.Handle("GET /crm/account-info/v3/details", s.wrap(ServiceCRM, EndpointHealth, s.crmAccount))
	mux.Handle("GET /crm/crm/account-info/v3/details", s.wrap(ServiceCRM, EndpointHealth, s.crmAccount))

	// Twilio-like telephony.
	mux.Handle("POST /telephony/2010-04-01/Accounts/{sid}/Calls.json", s.wrap(ServiceTelephony, EndpointData, s.placeCall))
	mux.Handle("GET /telephony/2010-04-01/Accounts/{sid}/Calls.json", s.wrap(ServiceTelephony, EndpointData, s.listCalls))
	mux.Handle("GET /telephony/2010-04-01/Accounts/{sid}/Calls/{call}", s.wrap(ServiceTelephony, EndpointData, s.getCall))
	mux.Handle("GET /telephony/2010-04-01/Accounts/{account}", s.wrap(ServiceTelephony, EndpointHealth, s.telAccount))
	mux.HandleFunc("GET /telephony/twiml", s.defaultTwiML)
	mux.HandleFunc("POST /telephony/twiml", s.defaultTwiML)

	// Receivers.
	mux.Handle("/telegram/{bot}/{method}", s.wrap(ServiceTelegram, EndpointData, s.telegram))
	mux.Handle("GET /telegram/{bot}/getMe", s.wrap(ServiceTelegram, EndpointHealth, s.telegramMe))
	mux.Handle("POST /webhook/{name}", s.wrap(ServiceWebhook, EndpointData, s.webhook))
	mux.Handle("POST /sheets/v4/spreadsheets/{id}/values/{rangeop}", s.wrap(ServiceSheets, EndpointData, s.sheetsAppend))
	// The Google client resolves "v4/..." against its endpoint: without a
	// trailing slash on .../sheets the prefix is dropped, so serve that too.
	mux.Handle("POST /v4/spreadsheets/{id}/values/{rangeop}", s.wrap(ServiceSheets, EndpointData, s.sheetsAppend))

	// Anything else under a service's prefix is that service's own 404.
	for _, name := range slices.Concat(Providers, Receivers) {
		if name == ServiceSMTP {
			continue
		}
		mux.HandleFunc("/"+name+"/", func(w http.ResponseWriter, r *http.Request) {
			msg := "no such endpoint: " + r.Method + " " + r.URL.Path
			if name == ServiceTelegram {
				msg = "Not Found" // the path holds the bot token
			}
			writeError(w, name, apiError{Status: http.StatusNotFound, Message: msg}, s.now())
			s.countRequest(name, http.StatusNotFound)
		})
	}

	// Admin.
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /admin/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /admin/scenario", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Scenario().redacted())
	})
	mux.HandleFunc("PUT /admin/scenario", s.putScenario)
	mux.HandleFunc("POST /admin/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		s.log.Info("reset")
		writeJSON(w, http.StatusOK, map[string]string{"status": "reset"})
	})
	mux.HandleFunc("GET /admin/side-effects", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.allSideEffects())
	})
	mux.HandleFunc("GET /admin/media", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.allMedia())
	})
	mux.HandleFunc("GET /admin/received", func(w http.ResponseWriter, _ *http.Request) {
		all := make(map[string][]Received, len(Receivers))
		for _, name := range Receivers {
			all[name] = s.Received(name)
		}
		writeJSON(w, http.StatusOK, all)
	})
	mux.HandleFunc("GET /admin/received/{receiver}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("receiver")
		if !slices.Contains(Receivers, name) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("unknown receiver %q", name)})
			return
		}
		writeJSON(w, http.StatusOK, s.Received(name))
	})
	mux.HandleFunc("GET /admin/requests", func(w http.ResponseWriter, _ *http.Request) {
		all := make(map[string]map[string]int)
		for _, name := range slices.Concat(Providers, Receivers) {
			if m := s.Requests(name); len(m) > 0 {
				all[name] = make(map[string]int, len(m))
				for st, n := range m {
					all[name][strconv.Itoa(st)] = n
				}
			}
		}
		writeJSON(w, http.StatusOK, all)
	})
	mux.HandleFunc("GET /admin/peak", func(w http.ResponseWriter, r *http.Request) {
		svc := r.URL.Query().Get("service")
		win, err := time.ParseDuration(cmp.Or(r.URL.Query().Get("window"), "1m"))
		if err != nil || win <= 0 || !knownService(svc) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want ?service=<name>&window=<duration>"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"service": svc, "window": win.String(), "peak": s.PeakRate(svc, win)})
	})
	return mux
}

func (s *Server) putScenario(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	sc, err := ParseScenario(data)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.SetScenario(sc)
	writeJSON(w, http.StatusOK, sc.redacted())
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	base := s.URL()
	urls := make(map[string]string)
	for _, name := range slices.Concat(Providers, Receivers) {
		if name != ServiceSMTP {
			urls[name] = base + "/" + name
		}
	}
	urls["admin"] = base + "/admin/"
	writeJSON(w, http.StatusOK, map[string]any{
		"scenario": s.Scenario().Name,
		"urls":     urls,
		"smtp":     s.SMTPAddr(),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// tlsConfig returns a TLS configuration with a fresh self-signed certificate.
func (s *Server) tlsConfig() (*tls.Config, error) {
	cert, pool, err := selfSigned(s.now())
	if err != nil {
		return nil, err
	}
	s.certPool = pool
	s.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
