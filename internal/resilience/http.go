package resilience

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
)

// Codes that FromTransport puts in Error.Code.
const (
	CodeTimeout           = "timeout"
	CodeConnectionRefused = "connection_refused"
	CodeConnectionReset   = "connection_reset"
	CodeEOF               = "unexpected_eof"
	CodeDNS               = "dns"
	CodeTLS               = "tls"
	CodeNetwork           = "network"
)

// FromTransport classifies an error from an HTTP round trip or from reading a
// response body, where no status code was received. It returns nil for nil,
// err itself when it is already an *Error or when the caller's context was
// cancelled (context.Canceled, which is neither a success nor a failure of the
// service), and otherwise an *Error for service:
//
//   - timeouts, refused and reset connections, an EOF or a broken pipe mid
//     response, a DNS timeout and any other network error: Transient;
//   - an unknown host and a TLS certificate the client refuses: Permanent,
//     because they are configuration problems that waiting does not heal.
//
// The *Error's Message is a fixed phrase: the underlying error's text often
// holds the request URL, which may carry a token (Telegram puts it in the
// path), so it is kept only in Err for local debugging.
func FromTransport(service string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*Error](err); ok || errors.Is(err, context.Canceled) {
		return err
	}
	cat, code, msg := classifyTransport(err)
	return &Error{Service: service, Category: cat, Code: code, Message: msg, Err: err}
}

func classifyTransport(err error) (Category, string, string) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return Transient, CodeTimeout, "request timed out"
	}
	if dnsErr, ok := errors.AsType[*net.DNSError](err); ok {
		if dnsErr.IsNotFound && !dnsErr.IsTimeout && !dnsErr.IsTemporary {
			return Permanent, CodeDNS, "host not found"
		}
		return Transient, CodeDNS, "dns lookup failed"
	}
	if netErr, ok := errors.AsType[net.Error](err); ok && netErr.Timeout() {
		return Transient, CodeTimeout, "request timed out"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Transient, CodeConnectionRefused, "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE):
		return Transient, CodeConnectionReset, "connection reset"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return Transient, CodeEOF, "connection closed before the response was complete"
	case isCertificateError(err):
		return Permanent, CodeTLS, "tls certificate rejected"
	}
	// Other dial and read errors, and what http.Client reports as untyped
	// errors (a proxy hanging up, a malformed response from a crashing
	// server), are far more often passing faults than configuration ones.
	return Transient, CodeNetwork, "network error"
}

func isCertificateError(err error) bool {
	_, verify := errors.AsType[*tls.CertificateVerificationError](err)
	_, unknown := errors.AsType[x509.UnknownAuthorityError](err)
	_, host := errors.AsType[x509.HostnameError](err)
	_, invalid := errors.AsType[x509.CertificateInvalidError](err)
	return verify || unknown || host || invalid
}
