package simulator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func (s *Server) startSMTP(ctx context.Context, addr string) error {
	cfg, err := s.tlsConfig()
	if err != nil {
		return fmt.Errorf("simulator: smtp certificate: %w", err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{s: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.TLSConfig = cfg
	// AUTH over plain TCP is allowed so that loopback tests need no TLS;
	// STARTTLS is offered for clients that insist.
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = maxBody
	srv.MaxRecipients = 100
	srv.ErrorLog = smtpLogger{s.log}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("simulator: listen smtp: %w", err)
	}
	s.smtpSrv, s.smtpLn = srv, ln
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			s.log.Error("smtp server stopped", "err", err)
		}
	}()
	return nil
}

type smtpLogger struct{ log *slog.Logger }

func (l smtpLogger) Printf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l smtpLogger) Println(v ...any)               { l.log.Debug(fmt.Sprint(v...)) }

// smtpSession is one SMTP connection.
type smtpSession struct {
	s      *Server
	conn   *smtp.Conn
	authed bool
	user   string
	from   string
	to     []string
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

var errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		ss.s.mu.Lock()
		svc := ss.s.sc.Services[ServiceSMTP]
		ss.s.mu.Unlock()
		if svc.Username != "" &&
			(subtle.ConstantTimeCompare([]byte(user), []byte(svc.Username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(pass), []byte(svc.Password)) != 1) {
			return errAuthFailed
		}
		ss.authed, ss.user = true, user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.s.mu.Lock()
	required := ss.s.sc.Services[ServiceSMTP].Username != ""
	ss.s.mu.Unlock()
	if required && !ss.authed {
		return errAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	s := ss.s
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	now := s.now()
	s.arrive(ServiceSMTP, now)
	_, isTLS := ss.conn.TLSConnectionState()
	rec := &Received{
		Time: now, Receiver: ServiceSMTP, From: ss.from, To: append([]string(nil), ss.to...),
		Fields: map[string]string{"auth_user": ss.user, "tls": strconv.FormatBool(isTLS), "raw": string(raw)},
	}
	if msg, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		rec.Headers = flatten(map[string][]string(msg.Header))
		dec := new(mime.WordDecoder)
		if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
			rec.Subject = subj
		} else {
			rec.Subject = msg.Header.Get("Subject")
		}
		rec.Body = plainText(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	} else {
		rec.Body = string(raw)
	}
	epoch := s.epochNow()
	d := s.decide(ServiceSMTP, EndpointData, string(raw))
	defer d.release()
	if d.fault != nil {
		rec.Fault = d.fault.Kind
	}

	code, reply := 250, error(nil)
	if f := d.fault; f != nil {
		switch f.Kind {
		case KindSlow:
			s.sleep(nil, f.Delay.D())
		case KindStatus:
			code = f.Status
			reply = &smtp.SMTPError{Code: f.Status, EnhancedCode: smtp.EnhancedCodeNotSet, Message: smtpMessage(f)}
		}
	}
	s.record(rec, epoch, func() { rec.Status = code })
	s.countRequest(ServiceSMTP, code)
	s.log.Debug("smtp message", "status", code, "recipients", len(ss.to))
	return reply
}

func smtpMessage(f *faultState) string {
	if f.Message != "" {
		return f.Message
	}
	switch f.Status {
	case 421:
		return "Service not available, closing transmission channel"
	case 450:
		return "Requested mail action not taken: mailbox unavailable"
	case 451:
		return "Requested action aborted: local error in processing"
	case 452:
		return "Requested action not taken: insufficient system storage"
	case 550:
		return "Requested action not taken: mailbox unavailable"
	case 552:
		return "Requested mail action aborted: exceeded storage allocation"
	}
	return "Transaction failed"
}

func (ss *smtpSession) Reset() { ss.from, ss.to = "", nil }

func (ss *smtpSession) Logout() error { return nil }

// loginServer is the server side of the LOGIN mechanism, which go-sasl
// offers only as a client.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(resp) == 0 {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

// plainText returns the readable text of a message body: the first
// text/plain part of a multipart message, transfer-decoded.
func plainText(contentType, encoding string, body io.Reader) string {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		var fallback string
		for {
			p, err := mr.NextPart()
			if err != nil {
				return fallback
			}
			// NextPart already undoes quoted-printable and drops its header.
			text := plainText(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
			pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if pt == "text/plain" || pt == "" || strings.HasPrefix(pt, "multipart/") && text != "" {
				return text
			}
			if fallback == "" {
				fallback = text
			}
		}
	}
	var r io.Reader = body
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, newlineStripper{body})
	}
	b, _ := io.ReadAll(r)
	return string(b)
}

// newlineStripper drops CR and LF so base64 lines decode as one stream.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, c := range p[:k] {
			if c != '\r' && c != '\n' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// selfSigned makes a certificate for 127.0.0.1, ::1 and localhost, and a pool
// that trusts it.
func selfSigned(now time.Time) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"callagent simulator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
