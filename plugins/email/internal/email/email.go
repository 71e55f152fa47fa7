// Package email is an alert sink that sends plain-text mail over SMTP, with
// STARTTLS and authentication (wneessen/go-mail).
//
// A batch becomes one message per service: the alerts about one service
// arrive together, so a burst of failures is one mail, not twenty. All the
// batch's messages go over one connection.
//
// Classification: an SMTP 4xx reply and a lost or refused connection are
// retryable; a 5xx reply (a failed login is 535) is permanent, and so is a
// setup the server cannot meet (STARTTLS required but not offered, an
// untrusted certificate, no common authentication mechanism).
package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/plugins/internal/conf"
	"github.com/callagent/agent/plugins/internal/render"
	"github.com/callagent/agent/sink"
)

// STARTTLS policies.
const (
	StartTLSMandatory     = "mandatory"
	StartTLSOpportunistic = "opportunistic"
	StartTLSNone          = "none"
)

// Defaults for the configuration.
const (
	DefaultPort          = 587
	DefaultTimeout       = 15 * time.Second
	DefaultSubjectPrefix = "[callagent]"
)

// authType maps the auth setting to go-mail's mechanism. "auto" picks the
// strongest the server offers, and never a plain-text password on an
// unencrypted connection.
func authType(name string) (gomail.SMTPAuthType, bool) {
	switch name {
	case "", "auto":
		return gomail.SMTPAuthAutoDiscover, true
	case "plain":
		return gomail.SMTPAuthPlain, true
	case "login":
		return gomail.SMTPAuthLogin, true
	case "cram-md5":
		return gomail.SMTPAuthCramMD5, true
	case "scram-sha-1":
		return gomail.SMTPAuthSCRAMSHA1, true
	case "scram-sha-256":
		return gomail.SMTPAuthSCRAMSHA256, true
	case "xoauth2":
		return gomail.SMTPAuthXOAUTH2, true
	}
	return "", false
}

// Config is the sink's configuration section.
type Config struct {
	Host string `json:"host"`
	// Port defaults to DefaultPort (submission).
	Port int `json:"port"`
	// Username and Password authenticate; no username means no AUTH.
	Username string `json:"username"`
	Password string `json:"password"`
	// Auth is the mechanism: auto (default), plain, login, cram-md5,
	// scram-sha-1, scram-sha-256 or xoauth2.
	Auth string `json:"auth"`
	From string `json:"from"`
	// To lists the recipients.
	To []string `json:"to"`
	// StartTLS is mandatory (default), opportunistic or none.
	StartTLS string `json:"starttls"`
	// CAFile is a PEM file of certificates to trust beside the system's,
	// for a server with a private CA.
	CAFile string `json:"ca_file"`
	// SubjectPrefix starts every subject; default DefaultSubjectPrefix.
	SubjectPrefix string `json:"subject_prefix"`
	// Timeout bounds the connection and each SMTP command; default
	// DefaultTimeout.
	Timeout conf.Duration `json:"timeout"`
}

// Sink sends alert mail. Its zero value is ready for Configure.
type Sink struct {
	// Log is where the sink logs; default slog.Default().
	Log *slog.Logger

	mu     sync.Mutex
	cfg    Config
	client *gomail.Client
}

var _ sink.Sink = (*Sink)(nil)

// Configure validates the configuration and prepares the SMTP client; it
// does not connect.
func (s *Sink) Configure(_ context.Context, raw []byte) error {
	var c Config
	if err := conf.Decode(raw, &c); err != nil {
		return err
	}
	if err := conf.Required("host", c.Host); err != nil {
		return err
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 0 || c.Port > 65535 {
		return conf.Errorf("port", "%d is not a port", c.Port)
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		return conf.Errorf("from", "%q: %v", c.From, err)
	}
	if len(c.To) == 0 {
		return conf.Errorf("to", "is required")
	}
	for _, to := range c.To {
		if _, err := mail.ParseAddress(to); err != nil {
			return conf.Errorf("to", "%q: %v", to, err)
		}
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg, s.client = c, client
	return nil
}

func newClient(c Config) (*gomail.Client, error) {
	policy := map[string]gomail.TLSPolicy{
		"": gomail.TLSMandatory, StartTLSMandatory: gomail.TLSMandatory,
		StartTLSOpportunistic: gomail.TLSOpportunistic, StartTLSNone: gomail.NoTLS,
	}
	tp, ok := policy[c.StartTLS]
	if !ok {
		return nil, conf.Errorf("starttls", "%q: want mandatory, opportunistic or none", c.StartTLS)
	}
	tlsConf := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, conf.Errorf("ca_file", "%v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, conf.Errorf("ca_file", "no PEM certificate in %s", c.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	opts := []gomail.Option{
		gomail.WithPort(c.Port),
		gomail.WithTLSPolicy(tp),
		gomail.WithTLSConfig(tlsConf),
		gomail.WithTimeout(c.Timeout.Or(DefaultTimeout)),
	}
	if c.Username != "" {
		at, ok := authType(c.Auth)
		if !ok {
			return nil, conf.Errorf("auth", "%q: want auto, plain, login, cram-md5, scram-sha-1, scram-sha-256 or xoauth2", c.Auth)
		}
		opts = append(opts, gomail.WithSMTPAuth(at), gomail.WithUsername(c.Username), gomail.WithPassword(c.Password))
	}
	client, err := gomail.NewClient(c.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", sink.ErrConfig, err)
	}
	return client, nil
}

func (s *Sink) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// group is one message: the records about one service.
type group struct {
	service string
	texts   []render.Text
	recs    []int // batch indexes
}

// Deliver sends one message per service over one connection.
func (s *Sink) Deliver(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil, fmt.Errorf("email: %w: not configured", sink.ErrUnavailable)
	}
	results := make([]sink.Result, len(batch))
	var groups []*group
	byService := map[string]*group{}
	for i, rec := range batch {
		ev, err := events.Decode(rec.Data)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		t := render.Event(ev)
		g := byService[t.Service]
		if g == nil {
			g = &group{service: t.Service}
			byService[t.Service] = g
			groups = append(groups, g)
		}
		g.texts = append(g.texts, t)
		g.recs = append(g.recs, i)
	}
	if len(groups) == 0 {
		return results, nil
	}
	msgs := make([]*gomail.Msg, len(groups))
	for i, g := range groups {
		m, err := s.message(g)
		if err != nil {
			return nil, fmt.Errorf("email: build message: %w", err)
		}
		msgs[i] = m
	}
	set := func(g *group, st sink.Status, reason string) {
		for _, i := range g.recs {
			results[i] = sink.Result{ID: batch[i].ID, Status: st, Reason: reason}
		}
	}

	conn, err := s.client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		st := classify(err)
		s.log().Warn("smtp connection failed", "host", s.cfg.Host, "status", st.String(), "error", err.Error())
		for _, g := range groups {
			set(g, st, "smtp: "+err.Error())
		}
		return results, nil
	}
	defer func() {
		if err := s.client.CloseWithSMTPClient(conn); err != nil {
			s.log().Debug("smtp close", "error", err.Error())
		}
	}()
	// Per-message failures are read from each message below.
	_ = s.client.SendWithSMTPClient(conn, msgs...)
	for i, g := range groups {
		if !msgs[i].HasSendError() {
			set(g, sink.Delivered, "")
			continue
		}
		err := msgs[i].SendError()
		set(g, classify(err), "smtp: "+err.Error())
	}
	return results, nil
}

// message builds the plain-text mail for one group.
func (s *Sink) message(g *group) (*gomail.Msg, error) {
	m := gomail.NewMsg()
	if err := m.From(s.cfg.From); err != nil {
		return nil, err
	}
	if err := m.To(s.cfg.To...); err != nil {
		return nil, err
	}
	m.Subject(s.cfg.SubjectPrefix + " " + subject(g))
	m.SetDate()
	m.SetMessageID()
	if g.service != "" {
		m.SetGenHeader("X-Agent-Service", g.service)
	}
	m.SetBodyString(gomail.TypeTextPlain, body(g))
	return m, nil
}

// subject names the group's service and its most severe record.
func subject(g *group) string {
	top := g.texts[0]
	for _, t := range g.texts[1:] {
		if rank(t) > rank(top) {
			top = t
		}
	}
	if len(g.texts) == 1 {
		return top.Title
	}
	what := "alerts"
	for _, t := range g.texts {
		if t.Severity == "" {
			what = "notifications"
		}
	}
	service := g.service
	if service == "" {
		service = "agent"
	}
	return fmt.Sprintf("%s: %d %s, %s", service, len(g.texts), what, top.Title)
}

// rank orders records for the subject: firing before resolved, then by
// severity.
func rank(t render.Text) int {
	r := map[string]int{events.SeverityInfo: 1, events.SeverityWarning: 2, events.SeverityCritical: 3}[t.Severity]
	if t.Resolved {
		return 0
	}
	return r
}

func body(g *group) string {
	var b strings.Builder
	for i, t := range g.texts {
		if i > 0 {
			b.WriteString("\n\n----\n\n")
		}
		b.WriteString(t.String())
	}
	b.WriteString("\n\n-- \nSent by the call agent's observer.\n")
	return b.String()
}

// classify maps an SMTP failure to a status: the reply code where the
// server gave one; a broken connection is retryable, a setup the server
// cannot meet is permanent.
func classify(err error) sink.Status {
	var se *gomail.SendError
	if errors.As(err, &se) {
		switch se.Reason {
		case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
			return sink.Permanent
		}
		switch code := se.ErrorCode(); {
		case code >= 500:
			return sink.Permanent
		case code >= 400:
			return sink.Retryable
		}
		return sink.Retryable // no reply code: the connection broke mid-message
	}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		if tp.Code >= 400 && tp.Code < 500 {
			return sink.Retryable
		}
		return sink.Permanent
	}
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	if errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &badHost) {
		return sink.Permanent
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) {
		return sink.Retryable
	}
	return sink.Permanent
}

// Health connects, negotiates TLS and logs in, then quits: it catches a
// changed password or certificate before an alert needs the server.
func (s *Sink) Health(ctx context.Context) error {
	s.mu.Lock()
	client := s.client
	s.mu.Unlock()
	if client == nil {
		return fmt.Errorf("email: not configured")
	}
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	return client.CloseWithSMTPClient(conn)
}
