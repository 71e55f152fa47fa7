// Package telegram is an alert sink that posts to a Telegram chat through the
// Bot API's sendMessage.
//
// A batch becomes as few messages as fit Telegram's 4096-character limit,
// records separated by a blank line; a record too long for one message is
// split across several at line boundaries. A 429 blocks the whole bot for
// parameters.retry_after seconds: the sink reports the delay and answers
// Retryable without calling the API until it has passed. 400 and 403 (chat
// not found, bot blocked) are permanent; 5xx and network errors retryable.
package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/plugins/internal/conf"
	"github.com/callagent/agent/plugins/internal/render"
	"github.com/callagent/agent/sink"
)

// MaxLength is Telegram's limit on a message's text, in UTF-16 code units
// after entity parsing.
const MaxLength = 4096

// Defaults for the configuration.
const (
	DefaultAPIURL  = "https://api.telegram.org"
	DefaultTimeout = 10 * time.Second
	// DefaultRate is Telegram's advice for one chat: about one message a second.
	DefaultRate = 1.0
)

// Parse modes accepted by sendMessage.
const (
	ParseNone       = ""
	ParseHTML       = "HTML"
	ParseMarkdownV2 = "MarkdownV2"
	ParseMarkdown   = "Markdown"
)

// Config is the sink's configuration section.
type Config struct {
	// APIURL is the Bot API's base URL; default DefaultAPIURL.
	APIURL string `json:"api_url"`
	// Token is the bot token (secret).
	Token string `json:"token"`
	// ChatID is the chat: a number, or "@channelname".
	ChatID ChatID `json:"chat_id"`
	// ParseMode is "", "HTML", "MarkdownV2" or "Markdown"; text is escaped
	// for it and titles are bold.
	ParseMode string `json:"parse_mode"`
	// Timeout bounds one request; default DefaultTimeout.
	Timeout conf.Duration `json:"timeout"`
	// Rate caps messages per second to this chat; default DefaultRate.
	Rate float64 `json:"rate"`
}

// ChatID is a chat id written as a number or a string.
type ChatID string

// UnmarshalJSON accepts -1001234567890 or "@channel".
func (c *ChatID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = ChatID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("chat_id: want a number or a string")
	}
	*c = ChatID(n.String())
	return nil
}

// Sink posts alerts to a Telegram chat. Its zero value is ready for
// Configure.
type Sink struct {
	// Log is where the sink logs; default slog.Default().
	Log *slog.Logger
	// Now is the clock for the 429 block; default time.Now.
	Now func() time.Time

	mu           sync.Mutex // serialises deliveries, so messages keep their order
	cfg          Config
	api          *api
	limit        *rate.Limiter
	blockedUntil time.Time
}

var _ sink.Sink = (*Sink)(nil)

// Configure validates and applies the configuration.
func (s *Sink) Configure(_ context.Context, raw []byte) error {
	var c Config
	if err := conf.Decode(raw, &c); err != nil {
		return err
	}
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return conf.Errorf("api_url", "want an http(s) URL")
	}
	c.APIURL = strings.TrimRight(c.APIURL, "/")
	if err := conf.Required("token", c.Token); err != nil {
		return err
	}
	if strings.ContainsAny(c.Token, "/?#% ") {
		return conf.Errorf("token", "contains characters a bot token cannot have")
	}
	if err := conf.Required("chat_id", string(c.ChatID)); err != nil {
		return err
	}
	switch c.ParseMode {
	case ParseNone, ParseHTML, ParseMarkdownV2, ParseMarkdown:
	default:
		return conf.Errorf("parse_mode", "%q: want HTML, MarkdownV2, Markdown or empty", c.ParseMode)
	}
	if c.Rate < 0 {
		return conf.Errorf("rate", "must not be negative")
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = c
	s.api = &api{client: &http.Client{Timeout: c.Timeout.Or(DefaultTimeout)}, base: c.APIURL, token: c.Token}
	s.limit = rate.NewLimiter(rate.Limit(c.Rate), 1)
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

// Deliver posts the batch as few messages as fit.
func (s *Sink) Deliver(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api == nil {
		return nil, fmt.Errorf("telegram: %w: not configured", sink.ErrUnavailable)
	}
	results := make([]sink.Result, len(batch))
	var texts []render.Text
	var idx []int
	for i, rec := range batch {
		results[i] = sink.Result{ID: rec.ID, Status: sink.Delivered}
		ev, err := events.Decode(rec.Data)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		texts = append(texts, render.Event(ev))
		idx = append(idx, i)
	}
	if wait := s.blockedUntil.Sub(s.now()); wait > 0 {
		for _, i := range idx {
			results[i] = sink.Result{ID: batch[i].ID, Status: sink.Retryable,
				Reason: "telegram: bot rate-limited (429), waiting", RetryAfter: wait}
		}
		return results, nil
	}

	msgs := pack(texts, s.cfg.ParseMode)
	for m, msg := range msgs {
		out := s.send(ctx, msg.text)
		if out.Status == sink.Delivered {
			continue
		}
		// Stop at the first failure: records in this message take its
		// outcome; those only in later ones were not tried.
		for _, r := range msg.recs {
			results[idx[r]] = sink.Result{ID: batch[idx[r]].ID, Status: out.Status, Reason: out.Reason, RetryAfter: out.RetryAfter}
		}
		for _, later := range msgs[m+1:] {
			for _, r := range later.recs {
				if results[idx[r]].Status == sink.Delivered {
					results[idx[r]] = sink.Result{ID: batch[idx[r]].ID, Status: sink.Retryable,
						Reason: "not sent: an earlier message failed: " + out.Reason, RetryAfter: out.RetryAfter}
				}
			}
		}
		break
	}
	return results, nil
}

// apiResponse is the Bot API's reply envelope.
type apiResponse struct {
	OK          bool   `json:"ok"`
	ErrorCode   int    `json:"error_code"`
	Description string `json:"description"`
	Parameters  struct {
		RetryAfter      int   `json:"retry_after"`
		MigrateToChatID int64 `json:"migrate_to_chat_id"`
	} `json:"parameters"`
}

// send posts one message and classifies the answer. Only Status, Reason and
// RetryAfter of the result are set.
func (s *Sink) send(ctx context.Context, text string) sink.Result {
	if err := s.limit.Wait(ctx); err != nil {
		return sink.Result{Status: sink.Retryable, Reason: "telegram: rate limit wait: " + err.Error()}
	}
	body, _ := json.Marshal(map[string]any{
		"chat_id":    string(s.cfg.ChatID),
		"text":       text,
		"parse_mode": s.cfg.ParseMode,
	})
	resp, err := s.api.call(ctx, http.MethodPost, "sendMessage", body)
	if err != nil {
		return sink.Result{Status: sink.Retryable, Reason: err.Error()}
	}
	defer resp.Body.Close()
	var r apiResponse
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = json.Unmarshal(data, &r) // a proxy's HTML page leaves r empty
	if r.Description == "" {
		r.Description = http.StatusText(resp.StatusCode)
	}
	reason := fmt.Sprintf("telegram %d: %s", resp.StatusCode, r.Description)
	switch code := resp.StatusCode; {
	case code == http.StatusOK && r.OK:
		return sink.Result{Status: sink.Delivered}
	case code == http.StatusTooManyRequests:
		after := time.Duration(r.Parameters.RetryAfter) * time.Second
		if after <= 0 {
			after = sink.RetryAfter(resp.Header, s.now())
		}
		if after > 0 {
			s.blockedUntil = s.now().Add(after)
		}
		s.log().Warn("telegram rate limit", "retry_after", after.String())
		return sink.Result{Status: sink.Retryable, Reason: reason, RetryAfter: after}
	case code >= 500:
		return sink.Result{Status: sink.Retryable, Reason: reason}
	case r.Parameters.MigrateToChatID != 0:
		return sink.Result{Status: sink.Permanent,
			Reason: fmt.Sprintf("%s: the group is now chat %d: update chat_id", reason, r.Parameters.MigrateToChatID)}
	default:
		// 400 chat not found, 403 bot blocked, 401/404 bad token, and a
		// 200 that says ok:false: retrying the same request cannot help.
		return sink.Result{Status: sink.Permanent, Reason: reason}
	}
}

// api makes Bot API requests.
type api struct {
	client *http.Client
	base   string
	token  string
}

// call makes one Bot API request. Its errors never contain the URL, since
// the URL contains the token.
func (a *api) call(ctx context.Context, method, apiMethod string, body []byte) (*http.Response, error) {
	endpoint := a.base + "/bot" + a.token + "/" + apiMethod
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, fmt.Errorf("telegram %s: %w", apiMethod, redact(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("telegram %s: %w", apiMethod, redact(err))
	}
	return resp, nil
}

// redact drops the URL from an HTTP client error, keeping the cause.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Health calls getMe, which checks the token and the API's reachability.
func (s *Sink) Health(ctx context.Context) error {
	// Not under s.mu: a health check need not wait for a delivery.
	s.mu.Lock()
	a := s.api
	s.mu.Unlock()
	if a == nil {
		return fmt.Errorf("telegram: not configured")
	}
	resp, err := a.call(ctx, http.MethodGet, "getMe", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("telegram getMe: %s", resp.Status)
	}
	return nil
}

// message is one sendMessage text and the records it carries (indexes into
// the rendered texts).
type message struct {
	text string
	recs []int
}

// line is one line of plain text with its formatting.
type line struct {
	plain string
	bold  bool
	rec   int
	first bool // the first line of its record
}

// length is Telegram's measure of plain text: UTF-16 code units.
func length(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// severityMark starts an alert's title so a chat list shows it at a glance.
func severityMark(t render.Text) string {
	switch {
	case t.Resolved:
		return "✅ "
	case t.Severity == events.SeverityCritical:
		return "🔴 "
	case t.Severity == events.SeverityWarning:
		return "🟠 "
	case t.Severity == events.SeverityInfo:
		return "🔵 "
	}
	return ""
}

// pack lays the texts out in messages of at most MaxLength, measured on
// the plain text (markup and escapes do not count once Telegram has parsed
// them). Messages break between lines; only a line longer than a whole
// message is cut, and then its first piece fills the current message.
func pack(texts []render.Text, mode string) []message {
	var out []message
	var cur []line
	size := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, format(cur, mode))
		}
		cur, size = nil, 0
	}
	add := func(l line) {
		cost := length(l.plain)
		if len(cur) > 0 {
			cost++ // the newline before it
			if l.first {
				cost++ // the blank line between records
			}
		}
		cur = append(cur, l)
		size += cost
	}
	for r, t := range texts {
		all := append([]string{severityMark(t) + t.Title}, t.Lines...)
		for i, text := range all {
			l := line{plain: text, bold: i == 0, rec: r, first: i == 0}
			for {
				sep := 0
				if len(cur) > 0 {
					sep = 1
					if l.first {
						sep = 2
					}
				}
				room := MaxLength - size - sep
				n := length(l.plain)
				if n <= room {
					add(l)
					break
				}
				if n <= MaxLength || room <= 0 {
					flush()
					continue
				}
				head, rest := split(l.plain, room)
				add(line{plain: head, bold: l.bold, rec: r, first: l.first})
				flush()
				l = line{plain: rest, bold: l.bold, rec: r}
			}
		}
	}
	flush()
	return out
}

// split cuts s after at most n UTF-16 units, at a rune boundary.
func split(s string, n int) (head, rest string) {
	size := 0
	for i, r := range s {
		w := utf16.RuneLen(r)
		if size+w > n {
			return s[:i], s[i:]
		}
		size += w
	}
	return s, ""
}

func format(lines []line, mode string) message {
	var b strings.Builder
	var m message
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
			if l.first {
				b.WriteByte('\n')
			}
		}
		b.WriteString(markup(l.plain, l.bold, mode))
		if len(m.recs) == 0 || m.recs[len(m.recs)-1] != l.rec {
			m.recs = append(m.recs, l.rec)
		}
	}
	m.text = b.String()
	return m
}

// markup escapes plain text for the parse mode and makes it bold if asked.
func markup(s string, bold bool, mode string) string {
	switch mode {
	case ParseHTML:
		s = html.EscapeString(s)
		if bold {
			s = "<b>" + s + "</b>"
		}
	case ParseMarkdownV2:
		s = escape(s, "_*[]()~`>#+-=|{}.!\\")
		if bold {
			s = "*" + s + "*"
		}
	case ParseMarkdown:
		s = escape(s, "_*`[")
		if bold {
			s = "*" + s + "*"
		}
	}
	return s
}

func escape(s, special string) string {
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	for _, r := range s {
		if r < utf8.RuneSelf && strings.ContainsRune(special, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
