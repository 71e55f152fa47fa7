// Package elevenlabs is the client of the ElevenLabs text-to-speech API: it
// renders a call script as audio and classifies every way the request can
// fail, telling a rate limit from a quota and a quota from a bad key. It does
// not retry; package resilience does.
package elevenlabs

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/httpx"
	"github.com/callagent/agent/internal/resilience"
)

// Defaults for a zero config.Service field or a missing option.
const (
	DefaultTimeout = 30 * time.Second
	// DefaultVoiceID is "Rachel", a premade voice every account has.
	DefaultVoiceID      = "21m00Tcm4TlvDq8ikWAM"
	DefaultModelID      = "eleven_multilingual_v2"
	DefaultOutputFormat = "mp3_44100_128"
	// MaxAudio bounds the audio read: a 10,000-character script at 128 kbit/s
	// is about 12 MB.
	MaxAudio = 64 << 20
)

// Error codes ElevenLabs sends (detail.code, or detail.status in older
// answers) and the ones this client adds.
const (
	CodeRateLimit       = "rate_limit_exceeded"
	CodeConcurrentLimit = "concurrent_limit_exceeded"
	CodeSystemBusy      = "system_busy"
	CodeInvalidAPIKey   = "invalid_api_key"
	CodeQuotaExceeded   = "quota_exceeded"
	CodeMaxCharacters   = "max_character_limit_exceeded"
	CodeVoiceNotFound   = "voice_not_found"
	CodeValidation      = "validation_error"
	CodeEmptyAudio      = "empty_audio"
	CodeNotAudio        = "not_audio"
	CodeHealthMalformed = "malformed_response"
)

// Client renders speech. It is safe for concurrent use.
type Client struct {
	http   httpx.Client
	base   string
	key    string
	voice  string
	model  string
	format string
}

// Option changes a Client's defaults.
type Option func(*Client)

// WithHTTPClient sends requests through hc (a proxy, a custom transport).
// Leave hc.Timeout at 0: the service's configured timeout applies per request.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http.HTTP = hc } }

// WithUserAgent replaces the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.http.UserAgent = ua } }

// WithClock dates Retry-After headers with clock instead of the system clock.
func WithClock(clock resilience.Clock) Option { return func(c *Client) { c.http.Clock = clock } }

// New returns a client for cfg: BaseURL and APIKey (sent as xi-api-key) are
// required; Timeout bounds one request from sending to the last audio byte
// (0 means DefaultTimeout); the options "voice_id" (DefaultVoiceID),
// "model_id" (DefaultModelID) and "output_format" (DefaultOutputFormat)
// shape the speech.
func New(cfg config.Service, opts ...Option) (*Client, error) {
	base, err := httpx.ParseBase(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("elevenlabs: %w", err)
	}
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("elevenlabs: api_key is required")
	}
	c := &Client{
		http: httpx.Client{
			Service: config.ServiceElevenLabs,
			HTTP:    &http.Client{},
			Timeout: cfg.Timeout,
			MaxBody: MaxAudio,
		},
		base:   base.String(),
		key:    cfg.APIKey,
		voice:  or(cfg.Options["voice_id"], DefaultVoiceID),
		model:  or(cfg.Options["model_id"], DefaultModelID),
		format: or(cfg.Options["output_format"], DefaultOutputFormat),
	}
	if c.http.Timeout <= 0 {
		c.http.Timeout = DefaultTimeout
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

type ttsRequest struct {
	Text    string `json:"text"`
	ModelID string `json:"model_id"`
}

// Speak renders text as audio in the configured output format. Errors are
// *resilience.Error, or wrap context.Canceled when ctx was cancelled.
func (c *Client) Speak(ctx context.Context, callID, text string) ([]byte, error) {
	body, err := json.Marshal(ttsRequest{Text: text, ModelID: c.model})
	if err != nil {
		return nil, &resilience.Error{Service: config.ServiceElevenLabs, Category: resilience.Permanent,
			Code: httpx.CodeBadRequest, Message: "cannot encode the request", Err: err}
	}
	resp, err := c.http.Do(ctx, httpx.Request{
		Method:      http.MethodPost,
		URL:         c.base + "/v1/text-to-speech/" + url.PathEscape(c.voice) + "?output_format=" + url.QueryEscape(c.format),
		Body:        body,
		ContentType: "application/json",
		Header:      http.Header{"Xi-Api-Key": {c.key}, "Accept": {"audio/mpeg"}},
		CallID:      callID,
	})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, c.classify(resp)
	}
	// A 200 that carries no audio is a gateway that swallowed or replaced
	// the body; the render itself is fine, so asking again works.
	if len(resp.Body) == 0 {
		return nil, c.http.Fail(resp, resilience.Transient, CodeEmptyAudio, "answer has no audio")
	}
	if !isAudio(resp.Header.Get("Content-Type")) {
		return nil, c.http.Fail(resp, resilience.Transient, CodeNotAudio, "answer is not audio: "+httpx.Describe(resp))
	}
	return resp.Body, nil
}

// isAudio accepts audio/* and the octet-stream some formats (raw PCM) come as.
func isAudio(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "audio/") || mt == "application/octet-stream"
}

type user struct {
	Subscription *struct {
		Status         string `json:"status"`
		CharacterCount int64  `json:"character_count"`
		CharacterLimit int64  `json:"character_limit"`
	} `json:"subscription"`
}

// Health reads the account (GET /v1/user). Beyond reachability and the key it
// reports, as permanent quota_exceeded, a subscription whose characters are
// used up: the data endpoint would refuse every render.
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.http.Do(ctx, httpx.Request{
		Method: http.MethodGet,
		URL:    c.base + "/v1/user",
		Header: http.Header{"Xi-Api-Key": {c.key}, "Accept": {"application/json"}},
	})
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return c.classify(resp)
	}
	var u user
	if err := json.Unmarshal(resp.Body, &u); err != nil {
		e := c.http.Fail(resp, resilience.Transient, CodeHealthMalformed, "account answer is not json: "+httpx.Describe(resp))
		e.Err = err
		return e
	}
	if s := u.Subscription; s != nil {
		if s.CharacterLimit > 0 && s.CharacterCount >= s.CharacterLimit {
			return c.http.Fail(resp, resilience.Permanent, CodeQuotaExceeded,
				fmt.Sprintf("character quota used up (%d of %d): a quota problem, not an authentication failure", s.CharacterCount, s.CharacterLimit))
		}
	}
	return nil
}

// apiError is ElevenLabs' error body. detail is an object
// ({"type", "code", "message", "status", "request_id", "param"}, older
// answers only "status" and "message"), a string, or FastAPI's list of
// validation problems.
type apiError struct {
	Detail json.RawMessage `json:"detail"`
}

type detail struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// parse returns the code and message of an error body, "" when unknown.
func parse(body []byte) (code, msg string) {
	var e apiError
	if json.Unmarshal(body, &e) != nil || len(e.Detail) == 0 {
		return "", ""
	}
	var d detail
	if json.Unmarshal(e.Detail, &d) == nil {
		return or(d.Code, d.Status), d.Message
	}
	var s string
	if json.Unmarshal(e.Detail, &s) == nil {
		return "", s
	}
	var list []struct {
		Msg string `json:"msg"`
		Loc []any  `json:"loc"`
	}
	if json.Unmarshal(e.Detail, &list) == nil && len(list) > 0 {
		loc := make([]string, 0, len(list[0].Loc))
		for _, l := range list[0].Loc {
			loc = append(loc, fmt.Sprint(l))
		}
		return CodeValidation, strings.Join(loc, ".") + ": " + list[0].Msg
	}
	return "", ""
}

// classify turns an error answer into a *resilience.Error. 429 (rate limit,
// concurrency limit, system busy), 408 and 5xx are transient, Retry-After
// honoured when sent (ElevenLabs does not promise it). Everything else is
// permanent; a quota_exceeded, whatever its status, says it is a quota
// problem so that the alert is not read as a bad key.
func (c *Client) classify(resp *httpx.Response) *resilience.Error {
	code, msg := parse(resp.Body)
	if msg == "" {
		msg = httpx.Describe(resp)
	}
	cat := httpx.Category(resp.StatusCode)
	switch {
	case code == CodeQuotaExceeded:
		cat = resilience.Permanent
		msg = "character quota exceeded, a quota problem and not an authentication failure: " + msg
	case code == CodeConcurrentLimit:
		msg = "too many requests in flight for the plan: " + msg
	case resp.StatusCode == http.StatusUnauthorized:
		msg = "authentication failed, check the api key: " + msg
	}
	return c.http.Fail(resp, cat, code, msg, c.key)
}
