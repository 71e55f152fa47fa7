// Package crm is the client of a HubSpot-like CRM: it records the outcome of
// one call as a call engagement, exactly once per call id even when a
// response is lost and the request retried, and classifies every way the
// requests can fail. It does not retry; package resilience does.
package crm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
	CodeMalformed = "malformed_response"
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

type object struct {
	ID string `json:"id"`
}

type searchResponse struct {
	Total   *int     `json:"total"`
	Results []object `json:"results"`
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
	if err := json.Unmarshal(resp.Body, &out); err != nil || out.Total == nil {
		return "", c.malformed(resp, "search answer", err)
	}
	if len(out.Results) == 0 {
		return "", nil
	}
	if out.Results[0].ID == "" {
		return "", c.malformed(resp, "search answer", nil)
	}
	return out.Results[0].ID, nil
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
	if err := json.Unmarshal(resp.Body, &out); err != nil || out.ID == "" {
		return "", c.malformed(resp, "create answer", err)
	}
	return out.ID, nil
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

// malformed is the error for a 2xx that is not what was asked for: the CRM
// did the work and a gateway spoiled the answer, so asking again (which
// looks the record up first) is safe and usually works.
func (c *Client) malformed(resp *httpx.Response, what string, err error) *resilience.Error {
	e := c.http.Fail(resp, resilience.Transient, CodeMalformed, what+" is not what the crm sends: "+httpx.Describe(resp))
	e.Err = err
	return e
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
