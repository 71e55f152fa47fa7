package simulator

import (
	"crypto/tls"
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

const plainMessage = "From: Agent <agent@example.test>\r\n" +
	"To: ops@example.test\r\n" +
	"Subject: [critical] elevenlabs down\r\n" +
	"\r\n" +
	"ElevenLabs failed 4 times in a row.\r\n"

const multipartMessage = "From: agent@example.test\r\n" +
	"To: ops@example.test\r\n" +
	"Subject: =?UTF-8?Q?[warning]_CRM_r=C3=A9cup=C3=A9r=C3=A9?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=b1\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"The CRM recovered after 3 retries =E2=9C=93\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"\r\n" +
	"<p>The CRM recovered</p>\r\n" +
	"--b1--\r\n"

func TestSMTP(t *testing.T) {
	s := start(t, "name: x\nservices:\n  smtp: {username: agent, password: pw, faults: [{kind: status, status: 451, match: defer-me}]}\n", nil)
	addr := s.SMTPAddr()
	host := strings.Split(addr, ":")[0]

	t.Run("AUTH PLAIN over plain TCP", func(t *testing.T) {
		if err := sendPlain(addr, smtp.PlainAuth("", "agent", "pw", host), plainMessage); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("STARTTLS then AUTH", func(t *testing.T) {
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("STARTTLS not offered")
		}
		if err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: s.SMTPCertPool()}); err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(smtp.PlainAuth("", "agent", "pw", host)); err != nil {
			t.Fatal(err)
		}
		send(t, c, multipartMessage)
	})
	t.Run("AUTH LOGIN", func(t *testing.T) {
		c, err := gosmtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewLoginClient("agent", "pw")); err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("agent@example.test", []string{"ops@example.test"}, strings.NewReader(plainMessage)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		err := sendPlain(addr, smtp.PlainAuth("", "agent", "nope", host), plainMessage)
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 535 {
			t.Errorf("err = %v, want 535", err)
		}
	})
	t.Run("no AUTH", func(t *testing.T) {
		err := sendPlain(addr, nil, plainMessage)
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 530 {
			t.Errorf("err = %v, want 530 authentication required", err)
		}
	})
	t.Run("scripted 451", func(t *testing.T) {
		msg := strings.Replace(plainMessage, "elevenlabs down", "defer-me", 1)
		err := sendPlain(addr, smtp.PlainAuth("", "agent", "pw", host), msg)
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 451 {
			t.Errorf("err = %v, want 451", err)
		}
	})

	got := s.Received(ServiceSMTP)
	if len(got) != 4 {
		t.Fatalf("recorded %d messages, want 4: %+v", len(got), got)
	}
	first := got[0]
	if first.From != "agent@example.test" || len(first.To) != 1 || first.To[0] != "ops@example.test" ||
		first.Subject != "[critical] elevenlabs down" || strings.TrimSpace(first.Body) != "ElevenLabs failed 4 times in a row." ||
		first.Fields["auth_user"] != "agent" || first.Fields["tls"] != "false" || first.Status != 250 {
		t.Errorf("first message = %+v", first)
	}
	second := got[1]
	if second.Subject != "[warning] CRM récupéré" || strings.TrimSpace(second.Body) != "The CRM recovered after 3 retries ✓" || second.Fields["tls"] != "true" {
		t.Errorf("multipart message: subject %q body %q tls %s", second.Subject, second.Body, second.Fields["tls"])
	}
	if got[3].Status != 451 || got[3].Fault != KindStatus {
		t.Errorf("deferred message recorded as %d %q", got[3].Status, got[3].Fault)
	}
	if reqs := s.Requests(ServiceSMTP); reqs[250] != 3 || reqs[451] != 1 {
		t.Errorf("requests = %v", reqs)
	}
}

// sendPlain sends msg without STARTTLS (net/smtp.SendMail would upgrade and
// then distrust the self-signed certificate).
func sendPlain(addr string, auth smtp.Auth, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.Mail("agent@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("ops@example.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func send(t *testing.T, c *smtp.Client, msg string) {
	t.Helper()
	if err := c.Mail("agent@example.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ops@example.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}
