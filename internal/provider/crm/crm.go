// Package crm is the client of a HubSpot-like CRM: it records the outcome of
// one call as a call engagement, exactly once per call id even when a
// response is lost and the request retried, and classifies every way the
// requests can fail. It does not retry; package resilience does.
package crm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/httpx"
	"github.com/callagent/agent/internal/resilience"
)

// DefaultTimeout applies when config.Service.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// PropertyCallID is the call record property that holds the agent's call id.
// HubSpot has no idempotency key on create; this property, made unique in the
// portal, is what a record is looked up by before one is created.
const PropertyCallID = "agent_call_id"

// HubSpot rate-limit policies (429 policyName).
const (
	PolicyTenSecondly = "TEN_SECONDLY_ROLLING"
	PolicySecondly    = "SECONDLY"
	PolicyDaily       = "DAILY"
)

// Waits suggested for a rate limit without Retry-After: the length of the
// rolling window the policy counts over.
const (
	tenSecondlyWait = 10 * time.Second
	secondlyWait    = time.Second
)

// Codes this client puts in resilience.Error.Code besides HubSpot's own.
const (
	// CodeMalformed: a 2xx answer that is not JSON at all (cut short, empty,
	// a proxy's page): spoiled on the way, transient.
	CodeMalformed = "malformed_response"
	// CodeUnexpected: a 2xx answer that is JSON of another shape than
	// HubSpot documents (a field missing or of another type): the same
	// answer comes back on every try, so it is permanent.
	CodeUnexpected = "unexpected_response"
	// CodeConflict: create said the record exists, but it cannot be found yet.
	CodeConflict = "CONFLICT"
)

// Client records calls. It is safe for concurrent use.
type Client struct {
	http httpx.Client
	base string
	key  string
}

// Option changes a Client's defaults.
type Option func(*Client)

// WithHTTPClient sends requests through hc (a proxy, a custom transport).
// Leave hc.Timeout at 0: the service's configured timeout applies per request.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http.HTTP = hc } }

// WithUserAgent replaces the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.http.UserAgent = ua } }

// WithClock dates Retry-After headers and records without a timestamp with
// clock instead of the system clock.
func WithClock(clock resilience.Clock) Option { return func(c *Client) { c.http.Clock = clock } }

// New returns a client for cfg: BaseURL and APIKey (a private-app token, sent
// as a Bearer token) are required; Timeout bounds each request (0 means
// DefaultTimeout). The CRM takes no options.
func New(cfg config.Service, opts ...Option) (*Client, error) {
	base, err := httpx.ParseBase(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("crm: %w", err)
	}
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("crm: api_key is required")
	}
	c := &Client{
		http: httpx.Client{Service: config.ServiceCRM, HTTP: &http.Client{}, Timeout: cfg.Timeout},
		base: base.String(),
		key:  cfg.APIKey,
	}
	if c.http.Timeout <= 0 {
		c.http.Timeout = DefaultTimeout
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// CallRecord is one call's outcome as the CRM keeps it.
type CallRecord struct {
	CallID    string
	Campaign  string
	ContactID string
	// Contact is the masked phone number (events.MaskPhone); a full number
	// found here or in Body is masked before it is sent.
	Contact string
	// Status is the call's final status (completed, busy, no-answer, failed,
	// canceled) or a HubSpot call status (COMPLETED, NO_ANSWER, ...).
	Status    string
	Body      string
	Duration  time.Duration
	Timestamp time.Time
}

// Record stores rec and returns the CRM's record id. It is idempotent by
// CallID: it looks the call id up first and returns the record it finds, and
// a create the CRM refuses as a duplicate (409, someone created it meanwhile)
// is looked up again. So a create whose response was lost, retried, makes one
// record. Errors are *resilience.Error, or wrap context.Canceled when ctx was
// cancelled.
func (c *Client) Record(ctx context.Context, rec CallRecord) (string, error) {
	if rec.CallID == "" {
		return "", &resilience.Error{Service: config.ServiceCRM, Category: resilience.Permanent,
			Code: httpx.CodeBadRequest, Message: "a call record needs a call id"}
	}
	id, err := c.find(ctx, rec.CallID)
	if err != nil || id != "" {
		return id, err
	}
	return c.create(ctx, rec)
}

type filter struct {
	PropertyName string `json:"propertyName"`
	Operator     string `json:"operator"`
	Value        string `json:"value"`
}

type searchRequest struct {
	FilterGroups []filterGroup `json:"filterGroups"`
	Properties   []string      `json:"properties"`
	Limit        int           `json:"limit"`
}

type filterGroup struct {
	Filters []filter `json:"filters"`
}

// object is a HubSpot CRM object as search results and create answers carry
// it: {"id": "512", "properties": {...}, "createdAt": ..., "updatedAt": ...,
// "archived": false}. Only the id and our call id property are read;
// everything else (and any field HubSpot adds) is ignored.
type object struct {
	ID objectID `json:"id"`
	// Properties are strings or null in HubSpot's answers; raw, so that a
	// property of another type that this client never reads cannot make the
	// answer unreadable.
	Properties map[string]json.RawMessage `json:"properties"`
}

// objectID is a record id: a string in HubSpot's answers ("51000000042"). A
// JSON integer is taken too: it is the same id, and some HubSpot-like CRMs
// send it so.
type objectID string

func (id *objectID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*id = objectID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	if _, err := strconv.ParseUint(n.String(), 10, 64); err != nil {
		return fmt.Errorf("id %s is not a whole number", n)
	}
	*id = objectID(n.String())
	return nil
}

// callID is the record's agent_call_id property, "" when absent or null.
func (o object) callID() string {
	var s string
	if raw, ok := o.Properties[PropertyCallID]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// searchResponse is HubSpot's search answer: {"total": 1, "results": [...],
// "paging": {"next": {"after": "1"}}}. Only results is needed, and required:
// total is optional (some HubSpot-like CRMs leave it out), paging is absent
// on the last page, and neither says anything a limit-1 lookup needs.
type searchResponse struct {
	Results *[]object `json:"results"`
}

// find returns the id of the record holding callID, "" when there is none.
func (c *Client) find(ctx context.Context, callID string) (string, error) {
	// Marshalling strings and ints cannot fail.
	body, _ := json.Marshal(searchRequest{
		FilterGroups: []filterGroup{{Filters: []filter{{PropertyName: PropertyCallID, Operator: "EQ", Value: callID}}}},
		Properties:   []string{PropertyCallID},
		Limit:        1,
	})
	resp, err := c.http.Do(ctx, httpx.Request{
		Method: http.MethodPost, URL: c.base + "/crm/v3/objects/calls/search",
		Body: body, ContentType: "application/json", Header: c.header(), CallID: callID,
	})
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", c.classify(resp)
	}
	var out searchResponse
	if err := c.decode(resp, "search answer", &out); err != nil {
		return "", err
	}
	if out.Results == nil {
		return "", c.unexpected(resp, "search answer", `has no "results"`)
	}
	for _, r := range *out.Results {
		if r.ID == "" {
			return "", c.unexpected(resp, "search answer", "has a result with no id")
		}
		// A result holding another call id is not ours, whatever the
		// search made of the filter: taking it would leave this call
		// unrecorded.
		if got := r.callID(); got == "" || got == callID {
			return string(r.ID), nil
		}
	}
	return "", nil
}

type createRequest struct {
	Properties map[string]string `json:"properties"`
}

func (c *Client) create(ctx context.Context, rec CallRecord) (string, error) {
	body, _ := json.Marshal(createRequest{Properties: c.properties(rec)}) // strings only: cannot fail
	resp, err := c.http.Do(ctx, httpx.Request{
		Method: http.MethodPost, URL: c.base + "/crm/v3/objects/calls",
		Body: body, ContentType: "application/json", Header: c.header(), CallID: rec.CallID,
	})
	if err != nil {
		return "", err
	}
	if resp.StatusCode == http.StatusConflict {
		return c.existing(ctx, rec.CallID, resp)
	}
	if resp.StatusCode/100 != 2 {
		return "", c.classify(resp)
	}
	var out object
	err = c.decode(resp, "create answer", &out)
	if err == nil && out.ID == "" {
		err = c.unexpected(resp, "create answer", "has no id")
	}
	if err != nil {
		return c.unreadableCreate(ctx, rec.CallID, err)
	}
	return string(out.ID), nil
}

// unreadableCreate resolves a 2xx create whose answer cannot be read: the
// CRM said it created the record, so it is looked up by call id rather than
// the write reported failed. Not found (search lags behind writes, or the
// 2xx came from something else than the CRM), the answer's own error
// stands, saying so; a retry looks the record up again before creating.
func (c *Client) unreadableCreate(ctx context.Context, callID string, answerErr error) (string, error) {
	id, err := c.find(ctx, callID)
	if err != nil || id != "" {
		return id, err
	}
	if e, ok := errors.AsType[*resilience.Error](answerErr); ok {
		e.Message = httpx.Scrub(e.Message+"; the record is not found by call id either", c.key)
	}
	return "", answerErr
}

// existingID finds the id HubSpot names in a unique-value conflict.
var existingID = regexp.MustCompile(`Existing ID:\s*([0-9]+)`)

// existing resolves a 409 on create: the record was created by someone else
// (or by a request of ours whose answer was lost). HubSpot names it in the
// message; otherwise it is looked up. Search is indexed a few seconds behind
// writes, so a record not found yet is a transient conflict.
func (c *Client) existing(ctx context.Context, callID string, resp *httpx.Response) (string, error) {
	var e apiError
	if json.Unmarshal(resp.Body, &e) == nil {
		if m := existingID.FindStringSubmatch(e.Message); m != nil {
			return m[1], nil
		}
	}
	id, err := c.find(ctx, callID)
	if err != nil || id != "" {
		return id, err
	}
	return "", c.http.Fail(resp, resilience.Transient, CodeConflict,
		"the record exists but cannot be found yet (search lags behind writes)", c.key)
}

// properties maps rec to HubSpot call properties.
func (c *Client) properties(rec CallRecord) map[string]string {
	ts := rec.Timestamp
	if ts.IsZero() {
		ts = c.http.Now()
	}
	p := map[string]string{
		PropertyCallID:      rec.CallID,
		"hs_timestamp":      ts.UTC().Format("2006-01-02T15:04:05.000Z"),
		"hs_call_direction": "OUTBOUND",
		"hs_call_body":      httpx.MaskPhones(rec.Body),
		"hs_call_title":     httpx.MaskPhones(title(rec)),
		"hs_call_duration":  strconv.FormatInt(rec.Duration.Milliseconds(), 10),
	}
	if s := hubspotStatus(rec.Status); s != "" {
		p["hs_call_status"] = s
	}
	return p
}

func title(rec CallRecord) string {
	parts := []string{"Outbound call"}
	if rec.Campaign != "" {
		parts = append(parts, "campaign "+rec.Campaign)
	}
	if rec.ContactID != "" {
		parts = append(parts, "contact "+rec.ContactID)
	}
	if rec.Contact != "" {
		parts = append(parts, rec.Contact)
	}
	return strings.Join(parts, " · ")
}

// hubspotStatus maps a telephony call status to HubSpot's hs_call_status
// option; a value already in HubSpot's form passes unchanged.
func hubspotStatus(s string) string {
	switch s {
	case "":
		return ""
	case "in-progress":
		return "IN_PROGRESS"
	case "no-answer":
		return "NO_ANSWER"
	}
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

// Health reads the account details (GET /crm/account-info/v3/details).
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.http.Do(ctx, httpx.Request{Method: http.MethodGet, URL: c.base + "/crm/account-info/v3/details", Header: c.header()})
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return c.classify(resp)
	}
	return nil
}

func (c *Client) header() http.Header {
	return http.Header{"Authorization": {"Bearer " + c.key}, "Accept": {"application/json"}}
}

// decode reads a 2xx answer into v, or returns the error that says what is
// wrong with it. Two kinds of unreadable, classified apart:
//
//   - not JSON at all (cut short, empty, a proxy's HTML page, bytes that do
//     not parse): spoiled on the way by a gateway, usually not the next
//     time. Transient, CodeMalformed: retried, and a CRM that keeps doing
//     it opens the breaker, as an outage would.
//   - JSON of another shape (a field missing or of another type): the CRM,
//     or something posing as it, answers differently from what HubSpot
//     documents, and will answer so to every retry. Permanent,
//     CodeUnexpected: retrying for the whole retry chain only delays the
//     alert, and counting it as a breaker failure would open the CRM
//     breaker fleet-wide and skip every contact for a mismatch an operator
//     (or a fix of this client) must resolve.
//
// Either way the message names what is wrong and quotes the start of the
// body, scrubbed of numbers and the key: a 2xx from the CRM echoes our own
// record, not someone else's secrets.
func (c *Client) decode(resp *httpx.Response, what string, v any) error {
	switch {
	case len(bytes.TrimSpace(resp.Body)) == 0:
		return c.malformed(resp, what, "is empty", nil)
	case resp.Header.Get("Content-Type") != "" && !httpx.IsJSON(resp.Header):
		return c.malformed(resp, what, "is not json", nil)
	}
	// A Decoder, unlike Unmarshal, tells a value cut short (io.ErrUnexpectedEOF)
	// from one that is wrong; trailing bytes are then checked by hand.
	dec := json.NewDecoder(bytes.NewReader(resp.Body))
	err := dec.Decode(v)
	if err == nil {
		end := dec.InputOffset()
		if dec.Decode(new(json.RawMessage)) == io.EOF {
			return nil
		}
		return c.malformed(resp, what, fmt.Sprintf("has data after its json at byte %d", end), nil)
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return c.malformed(resp, what, "ends early: the json is cut short", err)
	case errors.As(err, &syntax):
		return c.malformed(resp, what, fmt.Sprintf("is not valid json at byte %d (%s)", syntax.Offset, syntax), err)
	case errors.As(err, &typ) && typ.Field == "":
		return c.unexpected(resp, what, fmt.Sprintf("is a json %s, not an object", typ.Value), err)
	case errors.As(err, &typ):
		return c.unexpected(resp, what, fmt.Sprintf("has %q as a json %s, want %s", typ.Field, typ.Value, jsonKind(typ.Type.Kind())), err)
	}
	// A field's own decoder refused it (an id that is not a number).
	return c.unexpected(resp, what, "has a field of another form: "+err.Error(), err)
}

// jsonKind names a Go kind the way a JSON reader would.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Bool:
		return "a boolean"
	}
	return "a number"
}

// malformed is the error for a 2xx answer that is not JSON: see decode.
func (c *Client) malformed(resp *httpx.Response, what, problem string, err error) *resilience.Error {
	e := c.http.Fail(resp, resilience.Transient, CodeMalformed, c.explain(resp, what, problem), c.key)
	e.Err = err
	return e
}

// unexpected is the error for a 2xx answer of another shape: see decode.
func (c *Client) unexpected(resp *httpx.Response, what, problem string, err ...error) *resilience.Error {
	e := c.http.Fail(resp, resilience.Permanent, CodeUnexpected, c.explain(resp, what, problem), c.key)
	if len(err) > 0 {
		e.Err = err[0]
	}
	return e
}

// snippetLen bounds the body quoted in an error; the message is cut at
// httpx.MaxMessage anyway.
const snippetLen = 96

func (c *Client) explain(resp *httpx.Response, what, problem string) string {
	ct := resp.Header.Get("Content-Type")
	switch {
	case ct == "":
		ct = "no content type"
	case !httpx.IsJSON(resp.Header):
		ct += ", likely from a proxy"
	}
	msg := fmt.Sprintf("%s %s (http %d %s, %s, %d bytes)", what, problem,
		resp.StatusCode, http.StatusText(resp.StatusCode), ct, len(resp.Body))
	if len(resp.Body) > 0 {
		b := resp.Body
		cut := ""
		if len(b) > snippetLen {
			b, cut = b[:snippetLen], "…"
		}
		msg += "; body starts: " + strings.ToValidUTF8(string(b), "?") + cut
	}
	return msg
}

// apiError is HubSpot's error body: status, message, category
// (VALIDATION_ERROR, INVALID_AUTHENTICATION, ...) and, for a 429, errorType
// RATE_LIMIT with the policyName that ran out.
type apiError struct {
	Message    string `json:"message"`
	Category   string `json:"category"`
	ErrorType  string `json:"errorType"`
	PolicyName string `json:"policyName"`
}

// classify turns an error answer into a *resilience.Error. A rate limit over
// a rolling window (TEN_SECONDLY_ROLLING, SECONDLY) is transient, with
// Retry-After or else the window's length as the wait; the DAILY limit is
// permanent until midnight, so it fails at once instead of hammering the
// CRM. Otherwise 408, 429 and 5xx are transient and other statuses (400,
// 401, 403, 404) permanent.
func (c *Client) classify(resp *httpx.Response) *resilience.Error {
	var body apiError
	if json.Unmarshal(resp.Body, &body) != nil {
		body = apiError{}
	}
	msg := body.Message
	if msg == "" {
		msg = httpx.Describe(resp)
	}
	code := body.Category
	cat := httpx.Category(resp.StatusCode)
	var wait time.Duration
	if resp.StatusCode == http.StatusTooManyRequests {
		code = body.PolicyName
		switch body.PolicyName {
		case PolicyDaily:
			cat = resilience.Permanent
			msg = "daily api limit reached, do not retry before it resets at midnight: " + msg
		case PolicySecondly:
			wait = secondlyWait
		default:
			// TEN_SECONDLY_ROLLING, or a 429 that names no policy.
			wait = tenSecondlyWait
		}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		msg = "authentication failed, check the api key: " + msg
	case http.StatusForbidden:
		msg = "the token lacks a scope: " + msg
	}
	e := c.http.Fail(resp, cat, code, msg, c.key)
	if e.RetryAfter == 0 {
		e.RetryAfter = wait
	}
	return e
}
