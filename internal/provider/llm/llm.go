// Package llm is the client of an OpenAI-compatible chat-completions API
// (OpenAI, or an Anthropic-style gateway that speaks it): it asks for the
// script of one outbound call and classifies every way the request can fail.
// It does not retry; package resilience does.
package llm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/httpx"
	"github.com/callagent/agent/internal/resilience"
)

// Defaults for a zero config.Service field or a missing option.
const (
	DefaultTimeout = 30 * time.Second
	DefaultModel   = "gpt-4o-mini"
	// DefaultMaxTokens keeps a phone script short; a runaway completion costs
	// money and time on the phone.
	DefaultMaxTokens = 400
	// DefaultSystemPrompt is the instruction every script request starts with.
	DefaultSystemPrompt = "You write the script of a short, friendly outbound phone call. " +
		"Answer with the words the agent says, in plain sentences, under 120 words, " +
		"without stage directions or placeholders."
)

// Codes this client puts in resilience.Error.Code besides the server's own.
const (
	// CodeMalformed: a 2xx answer that is not a chat completion.
	CodeMalformed = "malformed_response"
	// CodeEmpty: a completion without choices or without text.
	CodeEmpty = "empty_completion"
	// CodeContentFilter: the model's answer was withheld by a content filter.
	CodeContentFilter = "content_filter"
	// CodeInsufficientQuota: out of credit; a billing problem, not a load one.
	CodeInsufficientQuota = "insufficient_quota"
)

// Client asks an OpenAI-compatible server for call scripts. It is safe for
// concurrent use.
type Client struct {
	http      httpx.Client
	base      string
	key       string
	model     string
	system    string
	maxTokens int
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

// New returns a client for cfg: BaseURL (required; a trailing /v1, as OpenAI
// SDKs write it, is dropped since the client adds it), APIKey (sent as a
// Bearer token; may be empty for a local server that needs none), Timeout
// per request (0 means DefaultTimeout) and the options "model" (DefaultModel),
// "system_prompt" (DefaultSystemPrompt) and "max_tokens" (DefaultMaxTokens).
func New(cfg config.Service, opts ...Option) (*Client, error) {
	base, err := httpx.ParseBase(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("llm: %w", err)
	}
	base.Path = strings.TrimSuffix(base.Path, "/v1")
	c := &Client{
		http: httpx.Client{
			Service: config.ServiceLLM,
			HTTP:    &http.Client{},
			Timeout: cfg.Timeout,
		},
		base:      base.String(),
		key:       cfg.APIKey,
		model:     cfg.Options["model"],
		system:    cfg.Options["system_prompt"],
		maxTokens: DefaultMaxTokens,
	}
	if c.http.Timeout <= 0 {
		c.http.Timeout = DefaultTimeout
	}
	if c.model == "" {
		c.model = DefaultModel
	}
	if c.system == "" {
		c.system = DefaultSystemPrompt
	}
	if v, ok := cfg.Options["max_tokens"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("llm: option max_tokens: %q is not a positive number", v)
		}
		c.maxTokens = n
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ScriptRequest is what a script is written from. It holds no phone number.
type ScriptRequest struct {
	CallID      string
	ContactName string
	// Vars are the contact's extra columns (appointment time, product, ...).
	Vars     map[string]string
	Campaign string
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model     string    `json:"model"`
	Messages  []message `json:"messages"`
	MaxTokens int       `json:"max_tokens,omitempty"`
}

type chatResponse struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

// Script asks the model for the call's script. Errors are *resilience.Error,
// or wrap context.Canceled when ctx was cancelled.
func (c *Client) Script(ctx context.Context, req ScriptRequest) (string, error) {
	body, err := json.Marshal(chatRequest{
		Model:     c.model,
		Messages:  []message{{Role: "system", Content: c.system}, {Role: "user", Content: prompt(req)}},
		MaxTokens: c.maxTokens,
	})
	if err != nil {
		return "", &resilience.Error{Service: config.ServiceLLM, Category: resilience.Permanent,
			Code: httpx.CodeBadRequest, Message: "cannot encode the request", Err: err}
	}
	resp, err := c.http.Do(ctx, httpx.Request{
		Method:      http.MethodPost,
		URL:         c.base + "/v1/chat/completions",
		Body:        body,
		ContentType: "application/json",
		Header:      c.header(),
		CallID:      req.CallID,
	})
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", c.classify(resp)
	}
	return c.script(resp)
}

// script reads a 2xx answer. An answer that is not a completion, or a
// completion without text, is transient: a server that accepted the request
// with a 2xx meant to answer it, so a broken body is a gateway or a proxy
// cutting or rewriting it (or a model glitch), and asking again usually
// works. A content-filter stop is permanent: the same prompt is filtered again.
func (c *Client) script(resp *httpx.Response) (string, error) {
	var out chatResponse
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		e := c.http.Fail(resp, resilience.Transient, CodeMalformed, "answer is not a chat completion: "+httpx.Describe(resp))
		e.Err = err
		return "", e
	}
	if len(out.Choices) == 0 {
		return "", c.http.Fail(resp, resilience.Transient, CodeEmpty, "completion has no choices")
	}
	ch := out.Choices[0]
	text := ""
	if ch.Message.Content != nil {
		text = strings.TrimSpace(*ch.Message.Content)
	}
	if ch.FinishReason == "content_filter" || (text == "" && ch.Message.Refusal != nil && *ch.Message.Refusal != "") {
		return "", c.http.Fail(resp, resilience.Permanent, CodeContentFilter, "the model declined to write the script")
	}
	if text == "" {
		return "", c.http.Fail(resp, resilience.Transient, CodeEmpty, "completion has no text")
	}
	return text, nil
}

// Health lists the models (GET /v1/models): a check of reachability and key.
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.http.Do(ctx, httpx.Request{Method: http.MethodGet, URL: c.base + "/v1/models", Header: c.header()})
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return c.classify(resp)
	}
	return nil
}

func (c *Client) header() http.Header {
	h := http.Header{"Accept": {"application/json"}}
	if c.key != "" {
		h.Set("Authorization", "Bearer "+c.key)
	}
	return h
}

// prompt writes the user message: campaign, name and the contact's details,
// in a stable order so the same contact gets the same prompt.
func prompt(req ScriptRequest) string {
	var b strings.Builder
	b.WriteString("Write the script for an outbound call.\n")
	if req.Campaign != "" {
		fmt.Fprintf(&b, "Campaign: %s\n", req.Campaign)
	}
	if req.ContactName != "" {
		fmt.Fprintf(&b, "Contact name: %s\n", req.ContactName)
	}
	keys := make([]string, 0, len(req.Vars))
	for k := range req.Vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		b.WriteString("Details:\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: %s\n", k, req.Vars[k])
		}
	}
	return b.String()
}

// apiError is the error body of OpenAI ({"error": {"message", "type",
// "code"}}) and of Anthropic-style servers ({"type": "error", "error":
// {"type": "overloaded_error", "message"}}).
type apiError struct {
	Error struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

// code is the error's code: "code" when it is a non-empty string or a
// number, else "type".
func (e apiError) code() string {
	var s string
	if json.Unmarshal(e.Error.Code, &s) == nil && s != "" {
		return s
	}
	var n json.Number
	if json.Unmarshal(e.Error.Code, &n) == nil && n != "" {
		return n.String()
	}
	return e.Error.Type
}

// classify turns an error answer into a *resilience.Error, as the official
// OpenAI clients do: 408, 409, 429 and 5xx (529 overloaded included) are
// retried; 400, 401, 403, 404 and other 4xx are not; an x-should-retry
// header overrides the status. 429 insufficient_quota is never retried,
// whatever the headers say: it is a billing problem that waiting does not fix.
func (c *Client) classify(resp *httpx.Response) *resilience.Error {
	var body apiError
	code, msg := "", ""
	if json.Unmarshal(resp.Body, &body) == nil {
		code, msg = body.code(), body.Error.Message
	}
	if msg == "" {
		msg = httpx.Describe(resp)
	}
	status := resp.StatusCode

	cat := httpx.Category(status)
	if status == http.StatusConflict {
		// OpenAI answers 409 to a request that collided with another one on
		// the same resource; the clients retry it.
		cat = resilience.Transient
	}
	switch strings.ToLower(resp.Header.Get("x-should-retry")) {
	case "true":
		cat = resilience.Transient
	case "false":
		cat = resilience.Permanent
	}
	if code == CodeInsufficientQuota || body.Error.Type == CodeInsufficientQuota {
		code, cat = CodeInsufficientQuota, resilience.Permanent
		msg = "quota exhausted, check the plan and billing (not a rate limit): " + msg
	} else {
		switch status {
		case http.StatusUnauthorized:
			msg = "authentication failed, check the api key: " + msg
		case http.StatusForbidden:
			msg = "access denied: " + msg
		}
	}

	e := c.http.Fail(resp, cat, code, msg, c.key)
	if status == http.StatusTooManyRequests && e.RetryAfter == 0 && cat == resilience.Transient {
		e.RetryAfter = rateLimitReset(resp.Header)
	}
	return e
}

// rateLimitReset reads OpenAI's x-ratelimit-reset-* headers ("1s", "6m0s",
// "12ms") for the limit that ran out, when a 429 says no Retry-After.
func rateLimitReset(h http.Header) time.Duration {
	var d time.Duration
	for _, kind := range []string{"requests", "tokens"} {
		if strings.TrimSpace(h.Get("x-ratelimit-remaining-"+kind)) != "0" {
			continue
		}
		if v, err := time.ParseDuration(strings.TrimSpace(h.Get("x-ratelimit-reset-" + kind))); err == nil && v > d {
			d = v
		}
	}
	return d
}
