// Package telephony is the client of a Twilio-like voice API: it places an
// outbound call, follows it to its final status, and classifies every way the
// requests can fail. A busy line, no answer, a failed or cancelled call are
// outcomes of the call, returned without error; only the service failing is
// an error. It does not retry; package resilience does.
package telephony

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/provider/httpx"
	"github.com/callagent/agent/internal/resilience"
)

// Defaults for a zero config.Service field or option.
const (
	DefaultTimeout      = 15 * time.Second
	DefaultPollInterval = 2 * time.Second
	// maxCallAge is Twilio's longest possible call: a call placed longer ago
	// than this is over, whatever the client last saw of it.
	maxCallAge = 4 * time.Hour
	// dialSkew is how much earlier than a create attempt began a listed call
	// may have been created and still be taken for that attempt's:
	// date_created has whole seconds, and the provider's clock is not ours.
	dialSkew = time.Minute
	// listPageSize bounds the calls to one number from the caller id that a
	// look-up reads, newest first: far more than a campaign places to one
	// contact within maxCallAge.
	listPageSize = 50
)

// Call statuses. The last five are final.
const (
	StatusQueued     = "queued"
	StatusRinging    = "ringing"
	StatusInProgress = "in-progress"
	StatusCompleted  = "completed"
	StatusBusy       = "busy"
	StatusNoAnswer   = "no-answer"
	StatusFailed     = "failed"
	StatusCanceled   = "canceled"
)

// Twilio error codes the client treats specially.
const (
	// CodeTooManyRequests (20429): too many concurrent requests, always safe
	// to retry.
	CodeTooManyRequests = 20429
	// CodeInvalidTo (21211): the To number is not a valid phone number.
	CodeInvalidTo = 21211
	// CodeInvalidFormat (13224): the number is not in E.164 form.
	CodeInvalidFormat = 13224
	// CodeUnverifiedFrom (21210): the From caller id is not verified.
	CodeUnverifiedFrom = 21210
)

// Codes this client puts in resilience.Error.Code besides Twilio's numbers.
const (
	CodeMalformed = "malformed_response"
	// CodeAccountInactive: Health found the account suspended or closed.
	CodeAccountInactive = "account_inactive"
)

// Call is a placed call as the provider last reported it.
type Call struct {
	SID    string
	Status string
	// Duration is how long the call was connected (0 unless completed).
	Duration time.Duration
}

// Final says whether the call has ended.
func (c Call) Final() bool {
	switch c.Status {
	case StatusCompleted, StatusBusy, StatusNoAnswer, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// Client places calls. It is safe for concurrent use.
type Client struct {
	http    httpx.Client
	account string // {base}/2010-04-01/Accounts/{sid}
	sid     string
	key     string
	auth    string // basic sid:key
	from    string
	twiml   string
	// twimlFor, when set, is the URL of a call's own TwiML (the media
	// server's), used instead of twiml with the call id in its query.
	twimlFor func(callID string) string
	poll     time.Duration
	clock    resilience.Clock

	mu sync.Mutex
	// open maps a call id to the call placed for it that the client has not
	// yet seen end, so that a retried Place follows that call instead of
	// ringing the contact a second time.
	open map[string]openCall
	// unsure maps a call id to when its first create began whose answer was
	// lost after the request went out: the call may have been placed, so
	// the next Dial for the id looks for it before placing another.
	unsure map[string]time.Time
	// owner maps the sid of each call placed or adopted here to its call id,
	// so that a look-up for one call id never adopts another's call.
	owner  map[string]openCall
	pruned time.Time
}

// openCall is a call's sid and call id with when the client learnt of it.
type openCall struct {
	sid, callID string
	placed      time.Time
}

// Option changes a Client's defaults.
type Option func(*Client)

// WithHTTPClient sends requests through hc (a proxy, a custom transport).
// Leave hc.Timeout at 0: the service's configured timeout applies per request.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http.HTTP = hc } }

// WithUserAgent replaces the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.http.UserAgent = ua } }

// WithClock times the status polls and dates Retry-After headers with clock
// instead of the system clock.
func WithClock(clock resilience.Clock) Option {
	return func(c *Client) { c.clock, c.http.Clock = clock, clock }
}

// WithTwiML has each call's Url be twiml(callID): the TwiML the media
// server serves for that call, which plays its stored audio. The option
// twiml_url is then not needed.
func WithTwiML(twiml func(callID string) string) Option {
	return func(c *Client) { c.twimlFor = twiml }
}

// WithPollInterval sets the wait between two status polls (0 or less keeps
// DefaultPollInterval).
func WithPollInterval(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.poll = d
		}
	}
}

// New returns a client for cfg: BaseURL, APIKey (the auth token, sent with
// the account sid as basic auth) and the options "account_sid",
// "from_number" (the caller id, E.164) and, without WithTwiML, "twiml_url"
// (what the call plays; the call id is added to its query) are required. Timeout bounds each
// request (0 means DefaultTimeout), not the whole call.
func New(cfg config.Service, opts ...Option) (*Client, error) {
	base, err := httpx.ParseBase(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("telephony: %w", err)
	}
	c := &Client{
		http: httpx.Client{
			Service: config.ServiceTelephony,
			HTTP:    &http.Client{},
			Timeout: cfg.Timeout,
		},
		sid:    cfg.Options["account_sid"],
		key:    cfg.APIKey,
		from:   cfg.Options["from_number"],
		twiml:  cfg.Options["twiml_url"],
		poll:   DefaultPollInterval,
		clock:  resilience.SystemClock{},
		open:   make(map[string]openCall),
		unsure: make(map[string]time.Time),
		owner:  make(map[string]openCall),
	}
	for _, o := range opts {
		o(c)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"api_key", c.key}, {"options.account_sid", c.sid}, {"options.from_number", c.from}, {"options.twiml_url", c.twiml},
	} {
		if f.v == "" && (f.name != "options.twiml_url" || c.twimlFor == nil) {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("telephony: %s required", strings.Join(missing, ", "))
	}
	if c.twimlFor == nil {
		if _, err := httpx.ParseBase(strings.SplitN(c.twiml, "?", 2)[0]); err != nil {
			return nil, fmt.Errorf("telephony: options.twiml_url: %w", err)
		}
	}
	if c.http.Timeout <= 0 {
		c.http.Timeout = DefaultTimeout
	}
	c.account = base.String() + "/2010-04-01/Accounts/" + url.PathEscape(c.sid)
	c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(c.sid+":"+c.key))
	return c, nil
}

type callResource struct {
	SID      string  `json:"sid"`
	Status   string  `json:"status"`
	Duration *string `json:"duration"`
	// To, From and DateCreated are read from a call list only.
	To          string `json:"to"`
	From        string `json:"from"`
	DateCreated string `json:"date_created"`
}

// callPage is a page of Twilio's call list.
type callPage struct {
	Calls []callResource `json:"calls"`
}

func (r callResource) call() Call {
	c := Call{SID: r.SID, Status: r.Status}
	if r.Duration != nil {
		if s, err := strconv.Atoi(*r.Duration); err == nil && s > 0 {
			c.Duration = time.Duration(s) * time.Second
		}
	}
	return c
}

// Place calls to (E.164) and follows the call, polling its status, until it
// ends or ctx is done. A final status of busy, no-answer, failed or canceled
// is returned with a nil error: it is the call's outcome, not the service's
// failure. Errors are *resilience.Error, or wrap context.Canceled when ctx was
// cancelled; once the call is placed, the Call returned with an error holds
// its sid and last status.
//
// A Place for a call id whose call was placed but not seen to end (the
// status polls failed, or ctx ended) follows that call instead of placing
// another, so that a retry does not ring the contact twice.
func (c *Client) Place(ctx context.Context, callID, to string) (Call, error) {
	if sid, ok := c.openCall(callID); ok {
		return c.follow(ctx, callID, Call{SID: sid, Status: StatusQueued}, to, false)
	}
	call, err := c.Dial(ctx, callID, to, time.Time{})
	if err != nil {
		return Call{}, err
	}
	return c.follow(ctx, callID, call, to, true)
}

// Dial places a call to to (E.164) and returns it as the provider first
// reports it (queued), without waiting for it to end. A caller that keeps
// the sid somewhere durable before following the call (Follow) can have
// another process follow it after a crash rather than ring the contact a
// second time; Place cannot offer that, since it returns only at the end.
// A Dial for a call id whose call this client placed and has not seen end
// returns that call.
//
// Twilio has no idempotency key, so a create whose answer is lost after the
// request went out (a timeout, a connection reset or closed before the whole
// answer, a 2xx that does not read as a call) may have placed the call: the
// error is transient as any, but the client remembers when that attempt
// began, and the next Dial for the call id first lists the calls to to from
// the caller id and adopts the oldest one created since shortly before
// then that no other call id has here, instead of ringing the contact
// again. Only when none is found does it place a call. since, when not
// zero, is when an earlier attempt for callID began that this client may
// not know of (made by another process, or before a restart): Dial looks
// from then as well. Zero says the caller knows of no such attempt.
//
// What the look-up cannot tell: the call resource does not return its Url,
// which carries the call id, so a call placed to the same number from the
// same caller id within the window for another call id, by another process,
// can be taken for this one (a campaign calls a contact once at a time, and
// its attempts hours apart); and a create the provider is still working on
// when the look-up runs is not listed yet, so a second call is placed.
func (c *Client) Dial(ctx context.Context, callID, to string, since time.Time) (Call, error) {
	if sid, ok := c.openCall(callID); ok {
		return Call{SID: sid, Status: StatusQueued}, nil
	}
	if first, ok := c.unsureSince(callID); ok && (since.IsZero() || first.Before(since)) {
		since = first
	}
	if !since.IsZero() && callID != "" {
		call, found, err := c.find(ctx, callID, to, since)
		if err != nil {
			// Placing a call now could ring the contact twice.
			return Call{}, err
		}
		if found {
			c.remember(callID, call.SID)
			return call, nil
		}
	}
	start := c.clock.Now()
	call, unsure, err := c.create(ctx, callID, to)
	if err != nil {
		if unsure {
			c.markUnsure(callID, start)
		}
		return Call{}, err
	}
	c.remember(callID, call.SID)
	return call, nil
}

// Follow polls the call sid, placed for callID by Dial or Place in this
// process or in another, until it ends or ctx is done; to, the number
// called, is only kept out of error messages. Results and errors are
// Place's.
func (c *Client) Follow(ctx context.Context, callID, sid, to string) (Call, error) {
	c.remember(callID, sid)
	return c.follow(ctx, callID, Call{SID: sid, Status: StatusQueued}, to, false)
}

// follow polls call until it ends, waiting a poll interval before the first
// poll when wait is set (a call just placed has nothing new to say).
func (c *Client) follow(ctx context.Context, callID string, call Call, to string, wait bool) (Call, error) {
	secrets := []string{c.key, strings.TrimPrefix(to, "+")}
	for ; !call.Final(); wait = true {
		if wait {
			select {
			case <-ctx.Done():
				return call, c.abandoned(ctx, call)
			case <-c.clock.After(c.poll):
			}
		}
		next, err := c.status(ctx, callID, call.SID, secrets)
		if err != nil {
			var re *resilience.Error
			if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
				// The provider has no such call: following it is over.
				c.forget(callID)
			}
			return call, err
		}
		call = next
	}
	c.forget(callID)
	return call, nil
}

// abandoned is the error for a call left while still going on.
func (c *Client) abandoned(ctx context.Context, call Call) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("telephony: stopped following call %s (%s): %w", call.SID, call.Status, ctx.Err())
	}
	return &resilience.Error{Service: config.ServiceTelephony, Category: resilience.Transient, Code: resilience.CodeTimeout,
		Message: fmt.Sprintf("the caller's deadline passed while call %s was %s", call.SID, call.Status), Err: ctx.Err()}
}

// create places a call. unsure says the call may have been placed although
// the error hides it: the request was written and no answer came back, or a
// 2xx answer did not read as a call. An error answer is the provider's word
// that it placed nothing.
func (c *Client) create(ctx context.Context, callID, to string) (call Call, unsure bool, err error) {
	twiml, err := c.twimlURL(callID)
	if err != nil {
		return Call{}, false, err
	}
	form := url.Values{"To": {to}, "From": {c.from}, "Url": {twiml}}
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}})
	resp, err := c.http.Do(ctx, httpx.Request{
		Method:      http.MethodPost,
		URL:         c.account + "/Calls.json",
		Body:        []byte(form.Encode()),
		ContentType: "application/x-www-form-urlencoded",
		Header:      c.header(),
		CallID:      callID,
	})
	secrets := []string{c.key, strings.TrimPrefix(to, "+")}
	if err != nil {
		return Call{}, wrote.Load(), err
	}
	if resp.StatusCode/100 != 2 {
		return Call{}, false, c.classify(resp, secrets)
	}
	call, err = c.decode(resp, secrets)
	return call, err != nil, err
}

// twimlURL is the Url of callID's call: the media server's TwiML for it, or
// twiml_url with the call id in its query.
func (c *Client) twimlURL(callID string) (string, error) {
	if c.twimlFor != nil {
		return c.twimlFor(callID), nil
	}
	twiml, err := url.Parse(c.twiml)
	if err != nil {
		return "", &resilience.Error{Service: config.ServiceTelephony, Category: resilience.Permanent,
			Code: httpx.CodeBadRequest, Message: "twiml_url does not parse", Err: err}
	}
	q := twiml.Query()
	q.Set("call_id", callID)
	twiml.RawQuery = q.Encode()
	return twiml.String(), nil
}

// find looks for a call to to from the caller id created since shortly
// before since that no other call id owns here, and makes callID its owner.
// Of several it takes the oldest: the first attempt's.
func (c *Client) find(ctx context.Context, callID, to string, since time.Time) (Call, bool, error) {
	// No StartTime filter: it compares start_time, which a call has only
	// once dialed, and Twilio queues the calls past the account's calls per
	// second; and it takes whole days. date_created is compared here.
	q := url.Values{"To": {to}, "From": {c.from}, "PageSize": {strconv.Itoa(listPageSize)}}
	secrets := []string{c.key, strings.TrimPrefix(to, "+")}
	resp, err := c.http.Do(ctx, httpx.Request{
		Method: http.MethodGet,
		URL:    c.account + "/Calls.json?" + q.Encode(),
		Header: c.header(),
		CallID: callID,
	})
	if err != nil {
		return Call{}, false, withoutURL(err)
	}
	if resp.StatusCode/100 != 2 {
		return Call{}, false, c.classify(resp, secrets)
	}
	var page callPage
	if err := json.Unmarshal(resp.Body, &page); err != nil || page.Calls == nil {
		e := c.http.Fail(resp, resilience.Transient, CodeMalformed, "answer is not a call list: "+httpx.Describe(resp), secrets...)
		e.Err = err
		return Call{}, false, e
	}
	type candidate struct {
		callResource
		created time.Time
	}
	var found []candidate
	after := since.Add(-dialSkew)
	// Backwards: the list is newest first, so that ties in date_created's
	// whole seconds keep the provider's order once sorted oldest first.
	for _, r := range slices.Backward(page.Calls) {
		created, err := time.Parse(time.RFC1123Z, r.DateCreated)
		if err != nil || r.SID == "" || r.Status == "" || r.To != to || r.From != c.from || created.Before(after) {
			continue
		}
		found = append(found, candidate{r, created})
	}
	slices.SortStableFunc(found, func(a, b candidate) int { return a.created.Compare(b.created) })

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range found {
		if o, ok := c.owner[f.SID]; ok && o.callID != callID {
			continue
		}
		c.owner[f.SID] = openCall{sid: f.SID, callID: callID, placed: c.clock.Now()}
		return f.call(), true, nil
	}
	return Call{}, false, nil
}

// withoutURL drops the request's URL, which holds the number called, from
// a transport error's cause.
func withoutURL(err error) error {
	var e *resilience.Error
	var ue *url.Error
	if errors.As(err, &e) && errors.As(e.Err, &ue) {
		cp := *e
		cp.Err = ue.Err
		return &cp
	}
	return err
}

func (c *Client) status(ctx context.Context, callID, sid string, secrets []string) (Call, error) {
	resp, err := c.http.Do(ctx, httpx.Request{
		Method: http.MethodGet,
		URL:    c.account + "/Calls/" + url.PathEscape(sid) + ".json",
		Header: c.header(),
		CallID: callID,
	})
	if err != nil {
		return Call{}, err
	}
	if resp.StatusCode/100 != 2 {
		return Call{}, c.classify(resp, secrets)
	}
	return c.decode(resp, secrets)
}

// decode reads a call resource. A 2xx that is not one is transient: the
// provider did the work and a gateway spoiled the answer.
func (c *Client) decode(resp *httpx.Response, secrets []string) (Call, error) {
	var r callResource
	if err := json.Unmarshal(resp.Body, &r); err != nil || r.SID == "" || r.Status == "" {
		e := c.http.Fail(resp, resilience.Transient, CodeMalformed, "answer is not a call: "+httpx.Describe(resp), secrets...)
		e.Err = err
		return Call{}, e
	}
	return r.call(), nil
}

func (c *Client) header() http.Header {
	return http.Header{"Authorization": {c.auth}, "Accept": {"application/json"}}
}

func (c *Client) openCall(callID string) (string, bool) {
	if callID == "" {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.open[callID]
	if !ok || c.clock.Now().Sub(o.placed) > maxCallAge {
		delete(c.open, callID)
		return "", false
	}
	return o.sid, true
}

func (c *Client) remember(callID, sid string) {
	if callID == "" {
		// Without a call id a retry cannot be told from a new call.
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	c.pruneLocked(now)
	o := openCall{sid: sid, callID: callID, placed: now}
	c.open[callID] = o
	c.owner[sid] = o
	delete(c.unsure, callID)
}

// markUnsure notes that a create for callID begun at start may have placed
// a call; the earliest such start is kept.
func (c *Client) markUnsure(callID string, start time.Time) {
	if callID == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(c.clock.Now())
	if first, ok := c.unsure[callID]; !ok || start.Before(first) {
		c.unsure[callID] = start
	}
}

func (c *Client) unsureSince(callID string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	first, ok := c.unsure[callID]
	return first, ok
}

// pruneLocked forgets, at most once a minute, what is older than the
// longest call: such a call is over and no retry looks for it.
func (c *Client) pruneLocked(now time.Time) {
	if now.Sub(c.pruned) < time.Minute {
		return
	}
	c.pruned = now
	for id, o := range c.open {
		if now.Sub(o.placed) > maxCallAge {
			delete(c.open, id)
		}
	}
	for sid, o := range c.owner {
		if now.Sub(o.placed) > maxCallAge {
			delete(c.owner, sid)
		}
	}
	for id, at := range c.unsure {
		if now.Sub(at) > maxCallAge {
			delete(c.unsure, id)
		}
	}
}

func (c *Client) forget(callID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.open, callID)
}

type account struct {
	Status string `json:"status"`
}

// Health reads the account (GET /Accounts/{sid}.json): reachability, the
// credentials, and an account that is not suspended or closed.
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.http.Do(ctx, httpx.Request{Method: http.MethodGet, URL: c.account + ".json", Header: c.header()})
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return c.classify(resp, []string{c.key})
	}
	var a account
	if err := json.Unmarshal(resp.Body, &a); err != nil {
		e := c.http.Fail(resp, resilience.Transient, CodeMalformed, "account answer is not json: "+httpx.Describe(resp))
		e.Err = err
		return e
	}
	if a.Status == "suspended" || a.Status == "closed" {
		return c.http.Fail(resp, resilience.Permanent, CodeAccountInactive, "the account is "+a.Status)
	}
	return nil
}

// apiError is Twilio's error body.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// classify turns an error answer into a *resilience.Error: 20429 is always
// transient; an invalid or non-E.164 number (21211, 13224) and an
// unverified caller id (21210) are permanent; otherwise 408, 429 and 5xx are
// transient and other statuses (401 bad credentials, 404 unknown account)
// permanent.
func (c *Client) classify(resp *httpx.Response, secrets []string) *resilience.Error {
	var body apiError
	code, msg := "", ""
	if json.Unmarshal(resp.Body, &body) == nil {
		msg = body.Message
		if body.Code != 0 {
			code = strconv.Itoa(body.Code)
		}
	}
	if msg == "" {
		msg = httpx.Describe(resp)
	}
	cat := httpx.Category(resp.StatusCode)
	switch body.Code {
	case CodeTooManyRequests:
		cat = resilience.Transient
		msg = "too many concurrent requests: " + msg
	case CodeInvalidTo, CodeInvalidFormat:
		cat = resilience.Permanent
		msg = "invalid phone number: " + msg
	case CodeUnverifiedFrom:
		cat = resilience.Permanent
		msg = "the caller id (from_number) is not verified for the account: " + msg
	default:
		if resp.StatusCode == http.StatusUnauthorized {
			msg = "authentication failed, check account_sid and api_key: " + msg
		}
	}
	return c.http.Fail(resp, cat, code, msg, secrets...)
}
