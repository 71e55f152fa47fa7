// Package webhook is a sink that POSTs records as JSON to a URL, signed with
// HMAC-SHA256 so the receiver can check who sent them and when.
//
// Signature: X-Agent-Timestamp carries the Unix time in seconds and
// X-Agent-Signature carries "sha256=" + hex(HMAC-SHA256(secret, timestamp +
// "." + body)). A receiver recomputes it over the raw body and refuses a
// stale timestamp, which stops replays.
//
// Payloads: "agent" (default) sends the events as they are on the bus;
// "alertmanager" sends Prometheus Alertmanager's webhook shape (version 4),
// one POST per service, so receivers written for Alertmanager (chat bridges,
// PagerDuty, incident tools) work unchanged.
//
// 5xx, 408, 429 and network failures are retryable (with the Retry-After
// header as the hint); every other answer, a redirect included, is
// permanent.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/plugins/internal/conf"
	"github.com/callagent/agent/sink"
)

// Payload formats.
const (
	FormatAgent        = "agent"
	FormatAlertmanager = "alertmanager"
)

// Headers of the signature.
const (
	HeaderTimestamp = "X-Agent-Timestamp"
	HeaderSignature = "X-Agent-Signature"
)

// Defaults for the configuration.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultReceiver = "callagent"
)

// Config is the sink's configuration section.
type Config struct {
	// URL receives the POSTs.
	URL string `json:"url"`
	// Secret signs the body (HMAC-SHA256); empty sends no signature.
	Secret string `json:"secret"`
	// Format is "agent" (default) or "alertmanager".
	Format string `json:"format"`
	// Timeout bounds one POST; default DefaultTimeout.
	Timeout conf.Duration `json:"timeout"`
	// Headers are added to every POST (an Authorization header, say); they
	// cannot replace Content-Type or the signature headers.
	Headers map[string]string `json:"headers"`
	// Receiver names this sink in the alertmanager payload; default
	// DefaultReceiver.
	Receiver string `json:"receiver"`
	// ExternalURL is the alertmanager payload's externalURL and each alert's
	// generatorURL: where a person can look further (the observer's status).
	ExternalURL string `json:"external_url"`
}

// Sink posts to a webhook. Its zero value is ready for Configure.
type Sink struct {
	// Log is where the sink logs; default slog.Default().
	Log *slog.Logger
	// Now stamps the signature; default time.Now.
	Now func() time.Time

	mu     sync.Mutex
	cfg    Config
	client *http.Client
}

var _ sink.Sink = (*Sink)(nil)

// Configure validates and applies the configuration.
func (s *Sink) Configure(_ context.Context, raw []byte) error {
	var c Config
	if err := conf.Decode(raw, &c); err != nil {
		return err
	}
	if err := conf.Required("url", c.URL); err != nil {
		return err
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return conf.Errorf("url", "want an http(s) URL")
	}
	switch c.Format {
	case "":
		c.Format = FormatAgent
	case FormatAgent, FormatAlertmanager:
	default:
		return conf.Errorf("format", "%q: want agent or alertmanager", c.Format)
	}
	for k := range c.Headers {
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Content-Type", "Content-Length", "Host", HeaderTimestamp, HeaderSignature:
			return conf.Errorf("headers", "%s is set by the sink", k)
		}
	}
	if c.Receiver == "" {
		c.Receiver = DefaultReceiver
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = c
	s.client = &http.Client{
		Timeout: c.Timeout.Or(DefaultTimeout),
		// A redirect would re-send the alert somewhere else, maybe as a GET:
		// report it instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nil
}

func (s *Sink) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Sink) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// Deliver posts the batch: one POST in the agent format, one per service in
// the alertmanager format.
func (s *Sink) Deliver(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.mu.Lock()
	cfg, client := s.cfg, s.client
	s.mu.Unlock()
	if client == nil {
		return nil, fmt.Errorf("webhook: %w: not configured", sink.ErrUnavailable)
	}
	results := make([]sink.Result, len(batch))
	var groups []group
	switch cfg.Format {
	case FormatAlertmanager:
		groups = alertmanagerGroups(batch, results, cfg)
	default:
		groups = agentGroup(batch, results)
	}
	for _, g := range groups {
		out := s.post(ctx, client, cfg, g.body)
		for _, i := range g.recs {
			results[i] = sink.Result{ID: batch[i].ID, Status: out.Status, Reason: out.Reason, RetryAfter: out.RetryAfter}
		}
	}
	return results, nil
}

// group is one POST body and the records (batch indexes) it carries.
type group struct {
	body []byte
	recs []int
}

// AgentPayload is the body of the agent format.
type AgentPayload struct {
	Version string            `json:"version"`
	Events  []json.RawMessage `json:"events"`
}

func agentGroup(batch []sink.Record, results []sink.Result) []group {
	var g group
	p := AgentPayload{Version: "1"}
	for i, rec := range batch {
		if _, err := events.Decode(rec.Data); err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		p.Events = append(p.Events, json.RawMessage(rec.Data))
		g.recs = append(g.recs, i)
	}
	if len(g.recs) == 0 {
		return nil
	}
	g.body, _ = json.Marshal(p) // raw messages were validated by Decode
	return []group{g}
}

// Sign returns the X-Agent-Signature value for body sent at timestamp (Unix
// seconds as a decimal string): what a receiver recomputes.
func Sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// post sends one body and classifies the answer; only Status, Reason and
// RetryAfter of the result are set.
func (s *Sink) post(ctx context.Context, client *http.Client, cfg Config, body []byte) sink.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(body))
	if err != nil {
		return sink.Result{Status: sink.Permanent, Reason: "webhook: " + redact(err).Error()}
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Headers)) {
		req.Header.Set(k, cfg.Headers[k])
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "callagent-webhook/1")
	if cfg.Secret != "" {
		ts := strconv.FormatInt(s.now().Unix(), 10)
		req.Header.Set(HeaderTimestamp, ts)
		req.Header.Set(HeaderSignature, Sign(cfg.Secret, ts, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return classifyTransport(err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	reason := fmt.Sprintf("webhook %s", resp.Status)
	if text := strings.TrimSpace(string(snippet)); text != "" {
		reason += ": " + strings.Join(strings.Fields(text), " ")
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return sink.Result{Status: sink.Delivered}
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		// 408 is a timeout, and 429 says "later", not "never".
		return sink.Result{Status: sink.Retryable, Reason: reason, RetryAfter: sink.RetryAfter(resp.Header, s.now())}
	case code >= 300 && code < 400:
		return sink.Result{Status: sink.Permanent, Reason: reason + ": redirects are not followed, update url"}
	default:
		return sink.Result{Status: sink.Permanent, Reason: reason}
	}
}

// classifyTransport: a failed TLS verification will fail again; anything
// else (timeout, refused, reset) is the receiver being down, which passes.
func classifyTransport(err error) sink.Result {
	err = redact(err)
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &verify) {
		return sink.Result{Status: sink.Permanent, Reason: "webhook: " + err.Error()}
	}
	return sink.Result{Status: sink.Retryable, Reason: "webhook: " + err.Error()}
}

// redact drops the URL from an HTTP client error: webhook URLs often embed
// a token (chat bridges do).
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// Health reports whether the sink is configured. It sends nothing: a
// receiver would take any request as a delivery.
func (s *Sink) Health(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return fmt.Errorf("webhook: not configured")
	}
	return nil
}
