// Package httpx is the HTTP plumbing the provider clients share: it sends one
// request with the client's own timeout, the call id and a User-Agent, reads
// the whole answer, and turns what went wrong on the way (refused, reset,
// truncated, timed out, cancelled) into the error a provider client returns.
// What a status code and an error body mean stays with each provider.
package httpx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/internal/resilience"
)

// HeaderCallID carries the call id on every request so that a provider's logs
// (and the simulator's side-effect counters) can tie requests to a call.
const HeaderCallID = "X-Agent-Call-Id"

// UserAgent is sent on every request unless a client is given another.
const UserAgent = "callagent/1"

// DefaultMaxBody bounds an answer read into memory when a Client sets none.
const DefaultMaxBody = 4 << 20

// Codes this package puts in resilience.Error.Code, besides resilience's
// transport codes.
const (
	CodeTooLarge   = "response_too_large"
	CodeBadRequest = "bad_request"
)

// errOwnTimeout is the cause of the context a Client puts around each
// request, so that its own timeout is told apart from the caller's deadline.
var errOwnTimeout = errors.New("client timeout")

// ParseBase checks a service's base URL: http or https, a host, no
// credentials, query or fragment (credentials in a URL would end up in error
// texts). The result has no trailing slash, so paths join with a "/".
func ParseBase(raw string) (*url.URL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, errors.New("base url is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, which may hold credentials.
		return nil, errors.New("base url does not parse")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("base url %s: scheme must be http or https", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("base url %s: no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("base url %s: credentials belong in api_key, not in the url", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("base url %s: no query or fragment allowed", u.Redacted())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Client sends one service's requests. Its zero value is not usable: set
// Service and HTTP at least.
type Client struct {
	// Service names the service in every error.
	Service string
	// HTTP does the round trips; its own Timeout should be 0 so that Timeout
	// below is the one that applies (and is reported as such).
	HTTP *http.Client
	// Timeout bounds one request, from sending to the last byte of the
	// answer; 0 means none beyond the caller's context.
	Timeout time.Duration
	// UserAgent is sent as User-Agent ("" means UserAgent).
	UserAgent string
	// MaxBody bounds the answer read (0 means DefaultMaxBody).
	MaxBody int64
	// Clock dates Retry-After (nil means the system clock).
	Clock resilience.Clock
}

// Request is one request to send.
type Request struct {
	Method string
	URL    string
	// Body, when not nil, is sent with ContentType.
	Body        []byte
	ContentType string
	// Header is added to the request (authentication, Accept, ...).
	Header http.Header
	// CallID, when set, is sent as X-Agent-Call-Id.
	CallID string
}

// Response is a whole answer, of any status.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// Do sends r and reads the whole answer. Every status is an answer, not an
// error: the provider client classifies it. The error, when there is no
// answer, is:
//
//   - an error wrapping context.Canceled when ctx was cancelled (neither a
//     success nor a failure of the service);
//   - a transient *resilience.Error with Code "timeout" when the client's own
//     Timeout or ctx's deadline ran out, the message saying which;
//   - otherwise resilience.FromTransport's classification of the network error.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if c.Timeout > 0 {
		rctx, cancel = context.WithTimeoutCause(ctx, c.Timeout, errOwnTimeout)
	}
	defer cancel()

	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(rctx, r.Method, r.URL, body)
	if err != nil {
		return nil, &resilience.Error{Service: c.Service, Category: resilience.Permanent, Code: CodeBadRequest,
			Message: "cannot build the request", Err: err}
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	if r.Body != nil && r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if r.CallID != "" {
		req.Header.Set(HeaderCallID, r.CallID)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = UserAgent
	}
	req.Header.Set("User-Agent", ua)

	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, c.noAnswer(ctx, rctx, err)
	}
	defer resp.Body.Close()
	limit := c.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	data, err := readBody(resp, limit)
	if err != nil {
		return nil, c.noAnswer(ctx, rctx, err)
	}
	if int64(len(data)) > limit {
		return nil, &resilience.Error{Service: c.Service, Category: resilience.Permanent, StatusCode: resp.StatusCode,
			Code: CodeTooLarge, Message: fmt.Sprintf("answer larger than %d bytes", limit)}
	}
	return &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// readBody reads at most limit+1 bytes of resp's body. With a known length
// it reads into one buffer of that size (a large audio answer is then read
// without growing a buffer again and again).
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	r := io.LimitReader(resp.Body, limit+1)
	n := resp.ContentLength
	if n <= 0 || n > limit {
		return io.ReadAll(r)
	}
	var buf bytes.Buffer
	// MinRead more, for the last read that sees EOF.
	buf.Grow(int(n) + bytes.MinRead)
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// noAnswer classifies a failed round trip or body read. parent is the
// caller's context, rctx the one with the client's timeout.
func (c *Client) noAnswer(parent, rctx context.Context, err error) error {
	if perr := parent.Err(); perr != nil {
		if errors.Is(perr, context.Canceled) {
			return fmt.Errorf("%s: request abandoned: %w", c.Service, perr)
		}
		return &resilience.Error{Service: c.Service, Category: resilience.Transient, Code: resilience.CodeTimeout,
			Message: "the caller's deadline passed before the service answered", Err: err}
	}
	if errors.Is(context.Cause(rctx), errOwnTimeout) {
		return &resilience.Error{Service: c.Service, Category: resilience.Transient, Code: resilience.CodeTimeout,
			Message: fmt.Sprintf("no complete answer within %s", c.Timeout), Err: err}
	}
	return resilience.FromTransport(c.Service, err)
}

// Now is the client's time.
func (c *Client) Now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

// Fail builds the *resilience.Error for an answer: status, Retry-After (and
// retry-after-ms) from its headers, and msg made safe with Scrub. secrets are
// removed from msg.
func (c *Client) Fail(resp *Response, cat resilience.Category, code, msg string, secrets ...string) *resilience.Error {
	e := &resilience.Error{Service: c.Service, Category: cat, Code: code, Message: Scrub(msg, secrets...)}
	if resp != nil {
		e.StatusCode = resp.StatusCode
		e.RetryAfter = backoff.RetryAfter(resp.Header, c.Now())
	}
	return e
}

// Category is the usual meaning of an HTTP status: 408 (request timeout),
// 425 (too early), 429 (too many requests) and 5xx are worth retrying;
// anything else the client got wrong and will get wrong again.
func Category(status int) resilience.Category {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly,
		status == http.StatusTooManyRequests, status >= 500:
		return resilience.Transient
	}
	return resilience.Permanent
}

// IsJSON says whether an answer claims to be JSON (application/json or any
// +json type).
func IsJSON(h http.Header) bool {
	ct := strings.ToLower(h.Get("Content-Type"))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	return ct == "application/json" || strings.HasSuffix(ct, "+json")
}

// Describe names an error answer whose body the client could not read as the
// provider's error: "http 502 Bad Gateway (text/html answer, likely from a
// proxy)". It never quotes the body, which may echo anything.
func Describe(resp *Response) string {
	s := fmt.Sprintf("http %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	ct := resp.Header.Get("Content-Type")
	switch {
	case len(resp.Body) == 0:
		return s + " (empty answer)"
	case ct == "":
		return s + " (untyped answer)"
	case !IsJSON(resp.Header):
		if i := strings.IndexByte(ct, ';'); i >= 0 {
			ct = ct[:i]
		}
		return s + " (" + ct + " answer, likely from a proxy)"
	}
	return s + " (unreadable json)"
}
