package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// plugin is the real email binary, built once for the package.
var plugin string

func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "email")) }

const (
	user     = "alerts@example.com"
	password = "smtp-test-password"
)

// received is one message the server accepted.
type received struct {
	from string
	to   []string
	data string
	tls  bool
	user string
}

// smtpServer is a real SMTP server (emersion/go-smtp) on 127.0.0.1 with
// AUTH PLAIN, optionally STARTTLS, and scripted RCPT replies.
type smtpServer struct {
	addr    string
	port    int
	caFile  string // the PEM of its self-signed certificate, when it has TLS
	mu      sync.Mutex
	msgs    []received
	rcptErr map[string]*smtp.SMTPError
}

type serverOptions struct {
	tls     bool
	rcptErr map[string]*smtp.SMTPError
}

func newSMTPServer(t *testing.T, o serverOptions) *smtpServer {
	t.Helper()
	s := &smtpServer{rcptErr: o.rcptErr}
	srv := smtp.NewServer(s)
	srv.Domain = "127.0.0.1"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	w := &testWriter{t: t}
	t.Cleanup(w.close) // runs after srv.Close, registered below
	srv.ErrorLog = log.New(w, "smtp server: ", 0)
	if o.tls {
		cert, pemPath := selfSigned(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.caFile = pemPath
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	s.port = l.Addr().(*net.TCPAddr).Port
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *smtpServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: s, conn: c}, nil
}

func (s *smtpServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

type session struct {
	srv  *smtpServer
	conn *smtp.Conn
	user string
	from string
	to   []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, pass string) error {
		if username != user || pass != password {
			return smtp.ErrAuthFailed
		}
		s.user = username
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.srv.rcptErr[to]; err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.msgs = append(s.srv.msgs, received{from: s.from, to: s.to, data: string(b), tls: isTLS, user: s.user})
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// testWriter sends the server's own log to the test's, until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// selfSigned makes a certificate for 127.0.0.1 and writes it as PEM.
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test smtp"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

func config(s *smtpServer, extra ...any) map[string]any {
	c := map[string]any{
		"host": "127.0.0.1", "port": s.port, "username": user, "password": password,
		"from": "Call Agent <alerts@example.com>", "to": []string{"oncall@example.com", "ops@example.com"},
		"timeout": "5s",
	}
	if s.caFile != "" {
		c["ca_file"] = s.caFile
	}
	return sinktest.With(c, extra...)
}

func alert(t *testing.T, service, summary string) sink.Record {
	return sinktest.Record(t, sinktest.Alert(service, summary))
}

func TestSendsOneMessagePerService(t *testing.T) {
	srv := newSMTPServer(t, serverOptions{tls: true})
	p := sinktest.Start(t, plugin, config(srv, "starttls", "mandatory", "subject_prefix", "[agent-test]"))
	batch := []sink.Record{
		alert(t, "elevenlabs", "elevenlabs circuit breaker opened"),
		alert(t, "crm", "crm rate limited"),
		alert(t, "elevenlabs", "elevenlabs error rate above 50%"),
	}
	sinktest.DeliverAll(t, p, batch)
	msgs := srv.messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		if !m.tls || m.user != user {
			t.Errorf("message sent with tls=%v user=%q, want STARTTLS and AUTH", m.tls, m.user)
		}
		if m.from != "alerts@example.com" || strings.Join(m.to, ",") != "oncall@example.com,ops@example.com" {
			t.Errorf("envelope from %q to %v", m.from, m.to)
		}
	}
	first, err := mail.ReadMessage(strings.NewReader(msgs[0].data))
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Header.Get("Subject"); got != "[agent-test] elevenlabs: 2 alerts, CRITICAL: elevenlabs circuit breaker opened" {
		t.Errorf("subject %q", got)
	}
	if ct := first.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type %q", ct)
	}
	if cte := first.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
		t.Fatalf("transfer encoding %q", cte)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(first.Body))
	for _, want := range []string{"CRITICAL: elevenlabs circuit breaker opened", "CRITICAL: elevenlabs error rate above 50%", "labels: campaign=spring-renewals"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	second, err := mail.ReadMessage(strings.NewReader(msgs[1].data))
	if err != nil {
		t.Fatal(err)
	}
	if got := second.Header.Get("Subject"); got != "[agent-test] CRITICAL: crm rate limited" {
		t.Errorf("subject %q", got)
	}
	if err := p.Health(t.Context()); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestClassifiesFailures(t *testing.T) {
	tests := []struct {
		name   string
		server serverOptions
		config []any
		down   bool
		status sink.Status
		inText string
	}{
		{name: "opportunistic without TLS on loopback", server: serverOptions{},
			config: []any{"starttls", "opportunistic", "auth", "plain"}, status: sink.Delivered},
		{name: "wrong password", server: serverOptions{tls: true}, config: []any{"password", "nope"},
			status: sink.Permanent, inText: "535"},
		{name: "4xx on a recipient", server: serverOptions{tls: true, rcptErr: map[string]*smtp.SMTPError{
			"ops@example.com": {Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}}},
			status: sink.Retryable, inText: "451"},
		{name: "5xx on a recipient", server: serverOptions{tls: true, rcptErr: map[string]*smtp.SMTPError{
			"ops@example.com": {Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}}},
			status: sink.Permanent, inText: "550"},
		{name: "STARTTLS required, not offered", server: serverOptions{}, config: []any{"starttls", "mandatory"},
			status: sink.Permanent, inText: "STARTTLS"},
		{name: "untrusted certificate", server: serverOptions{tls: true}, config: []any{"ca_file", ""},
			status: sink.Permanent, inText: "certificate"},
		{name: "server down", server: serverOptions{}, down: true, status: sink.Retryable, inText: "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSMTPServer(t, tt.server)
			cfg := config(srv, tt.config...)
			if cfg["ca_file"] == "" {
				delete(cfg, "ca_file")
			}
			if tt.down {
				// A port nothing listens on.
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				cfg["port"] = l.Addr().(*net.TCPAddr).Port
				l.Close()
			}
			p := sinktest.Start(t, plugin, cfg)
			res, err := p.Deliver(t.Context(), []sink.Record{alert(t, "llm", "llm down")})
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Status != tt.status || !strings.Contains(r.Reason, tt.inText) {
				t.Errorf("result %+v, want %v with %q", r, tt.status, tt.inText)
			}
			if strings.Contains(r.Reason, password) {
				t.Errorf("reason leaks the password: %s", r.Reason)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	base := map[string]any{"host": "127.0.0.1", "from": "a@example.com", "to": []string{"b@example.com"}}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for k, v := range base {
			c[k] = v
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for name, cfg := range map[string]map[string]any{
		"no host":        with("host", nil),
		"bad from":       with("from", "not an address"),
		"no recipients":  with("to", []string{}),
		"bad recipient":  with("to", []string{"b@example.com", "@@"}),
		"bad starttls":   with("starttls", "always"),
		"bad auth":       with("auth", "kerberos"),
		"bad port":       with("port", 70000),
		"missing cafile": with("ca_file", "/nonexistent/ca.pem"),
		"misspelt key":   with("subjectprefix", "x"),
	} {
		t.Run(name, func(t *testing.T) {
			if name == "bad auth" {
				cfg["username"] = "u"
			}
			_, err := sink.Start(t.Context(), sinktest.Spec(t, plugin, cfg))
			if !errors.Is(err, sink.ErrConfig) {
				t.Errorf("start: %v, want ErrConfig", err)
			}
		})
	}
}
