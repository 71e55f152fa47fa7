package simulator

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// phoneCall is one call placed through the telephony API.
type phoneCall struct {
	SID, Account, To, From string
	Created                time.Time
	Outcome                string
	Duration               time.Duration
	Rings                  int
	Polls                  int
	// endsAt, when set (real_time), is when a completed call stops being
	// in progress.
	endsAt time.Time
	// played is closed once the provider has fetched an answered call's
	// media (see fetchMedia); nil for a call that is not answered.
	played chan struct{}
}

const twilioTime = time.RFC1123Z

func (s *Server) telFail(w http.ResponseWriter, status, code int, msg string) {
	writeError(w, ServiceTelephony, apiError{Status: status, Code: strconv.Itoa(code), Message: msg}, s.now())
}

// telAuth checks HTTP basic auth: the account sid as user, the auth token as
// password.
func (s *Server) telAuth(w http.ResponseWriter, r *http.Request, account string) bool {
	user, token, ok := r.BasicAuth()
	if !ok || user != account || !s.authorized(ServiceTelephony, token) {
		s.telFail(w, http.StatusUnauthorized, 20003, "Authenticate")
		return false
	}
	return true
}

func (s *Server) placeCall(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("sid")
	if !s.telAuth(w, r, account) {
		return
	}
	if err := r.ParseForm(); err != nil {
		s.telFail(w, http.StatusBadRequest, 20001, "Could not parse the form body.")
		return
	}
	to, from := r.PostForm.Get("To"), r.PostForm.Get("From")
	switch {
	case to == "":
		s.telFail(w, http.StatusBadRequest, 21201, "No 'To' number is specified")
		return
	case !e164.MatchString(to):
		s.telFail(w, http.StatusBadRequest, 21211, "")
		return
	case from == "" || !(e164.MatchString(from) || strings.HasPrefix(from, "client:")):
		s.telFail(w, http.StatusBadRequest, 21212, "")
		return
	case r.PostForm.Get("Url") == "" && r.PostForm.Get("Twiml") == "" && r.PostForm.Get("ApplicationSid") == "":
		s.telFail(w, http.StatusBadRequest, 21205, "")
		return
	}

	now := s.now()
	s.mu.Lock()
	svc := s.sc.Services[ServiceTelephony]
	c := &phoneCall{
		SID:      "CA" + randHex(16),
		Account:  account,
		To:       to,
		From:     from,
		Created:  now,
		Outcome:  cmp.Or(svc.Outcomes[to], OutcomeCompleted),
		Duration: cmp.Or(svc.CallDuration.D(), 30*time.Second),
		Rings:    svc.Rings,
	}
	if svc.RealTime && c.Outcome == OutcomeCompleted {
		c.endsAt = now.Add(c.Duration)
	}
	s.calls[c.SID] = c
	out := c.json("queued", now)
	callID := r.Header.Get(HeaderCallID)
	if c.Outcome == OutcomeCompleted {
		// Like Twilio, the provider requests the TwiML once the callee
		// answers; a poll that would show the call answered waits for it.
		c.played = make(chan struct{})
		method, twiml, inline := r.PostForm.Get("Method"), r.PostForm.Get("Url"), r.PostForm.Get("Twiml")
		go func() {
			m := s.fetchMedia(c, callID, twiml, method, inline)
			s.mu.Lock()
			if m.Error != "" {
				c.Outcome = OutcomeFailed
			}
			if callID != "" {
				s.media[callID] = m
			}
			s.mu.Unlock()
			close(c.played)
		}()
	}
	s.mu.Unlock()

	s.sideEffect(ServiceTelephony, callID)
	writeJSON(w, http.StatusCreated, out)
}

// json renders the call resource with status.
func (c *phoneCall) json(status string, now time.Time) map[string]any {
	out := map[string]any{
		"sid":              c.SID,
		"account_sid":      c.Account,
		"to":               c.To,
		"to_formatted":     c.To,
		"from":             c.From,
		"from_formatted":   c.From,
		"status":           status,
		"direction":        "outbound-api",
		"api_version":      "2010-04-01",
		"date_created":     c.Created.UTC().Format(twilioTime),
		"date_updated":     now.UTC().Format(twilioTime),
		"start_time":       nil,
		"end_time":         nil,
		"duration":         nil,
		"price":            nil,
		"price_unit":       "USD",
		"answered_by":      nil,
		"caller_name":      nil,
		"parent_call_sid":  nil,
		"phone_number_sid": nil,
		"uri":              fmt.Sprintf("/2010-04-01/Accounts/%s/Calls/%s.json", c.Account, c.SID),
	}
	if start, ok := c.started(status); ok {
		out["start_time"] = start.UTC().Format(twilioTime)
	}
	switch status {
	case OutcomeCompleted:
		out["end_time"] = c.Created.Add(c.Duration).UTC().Format(twilioTime)
		out["duration"] = strconv.Itoa(int(c.Duration / time.Second))
		out["price"] = "-0.01400"
		out["answered_by"] = "human"
	case OutcomeBusy, OutcomeNoAnswer, OutcomeFailed, OutcomeCanceled:
		out["end_time"] = c.Created.UTC().Format(twilioTime)
		out["duration"] = "0"
	}
	return out
}

// started is the call's start_time for status: as on Twilio, empty until the
// call is dialed (queued), and for a call cancelled before it was.
func (c *phoneCall) started(status string) (time.Time, bool) {
	if status == "queued" || status == OutcomeCanceled {
		return time.Time{}, false
	}
	return c.Created, true
}

// status is the call's status after its polls so far: queued until the
// first, ringing (in-progress once answered) for Rings polls, then its
// outcome. Only a poll moves a call on; listing it does not.
func (c *phoneCall) status(now time.Time) string {
	switch {
	case c.Polls == 0:
		return "queued"
	case c.Polls <= c.Rings:
		if c.Polls > 1 && c.Outcome == OutcomeCompleted {
			return "in-progress"
		}
		return "ringing"
	case c.Polls > 1 && now.Before(c.endsAt):
		// A real-time call is answered on its second poll and lasts its
		// duration.
		return "in-progress"
	case now.Before(c.endsAt):
		return "ringing"
	}
	return c.Outcome
}

// answeredAt says whether the call shows answered (in-progress or
// completed) after polls polls.
func (c *phoneCall) answeredAt(polls int, now time.Time) bool {
	saved := c.Polls
	c.Polls = polls
	st := c.status(now)
	c.Polls = saved
	return st == "in-progress" || st == OutcomeCompleted
}

func (s *Server) getCall(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("sid")
	if !s.telAuth(w, r, account) {
		return
	}
	sid := strings.TrimSuffix(r.PathValue("call"), ".json")
	now := s.now()
	s.mu.Lock()
	c := s.calls[sid]
	if c == nil || c.Account != account {
		s.mu.Unlock()
		s.telFail(w, http.StatusNotFound, 20404,
			fmt.Sprintf("The requested resource /2010-04-01/Accounts/%s/Calls/%s.json was not found", url.PathEscape(account), url.PathEscape(sid)))
		return
	}
	if c.played != nil && c.answeredAt(c.Polls+1, now) {
		played := c.played
		s.mu.Unlock()
		select {
		case <-played:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
	}
	c.Polls++
	out := c.json(c.status(now), now)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// Twilio's page sizes for a list.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// listCalls serves Twilio's call list, newest first, in its page shape. To
// and From match exactly. StartTime, StartTime> and StartTime< (sent as
// StartTime=, StartTime>= and StartTime<=) take a UTC date (YYYY-MM-DD),
// compared by whole days, or a date and time (RFC 3339), to the second; they
// compare with start_time, which a call has only once it is dialed, so they
// leave out queued calls. PageSize (default 50, at most 1000) and Page (from
// 0) page through. Listing does not move a call on, as a poll does.
func (s *Server) listCalls(w http.ResponseWriter, r *http.Request) {
	account := r.PathValue("sid")
	if !s.telAuth(w, r, account) {
		return
	}
	q := r.URL.Query()
	size, page := defaultPageSize, 0
	if v := q.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			s.telFail(w, http.StatusBadRequest, 20001, fmt.Sprintf("PageSize must be a number from 1 to %d", maxPageSize))
			return
		}
		size = n
	}
	if v := q.Get("Page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.telFail(w, http.StatusBadRequest, 20001, "Page must be a number from 0")
			return
		}
		page = n
	}
	var filters []func(time.Time) bool
	for _, op := range []string{"StartTime", "StartTime>", "StartTime<"} {
		if !q.Has(op) {
			continue
		}
		f, err := startFilter(op, q.Get(op))
		if err != nil {
			s.telFail(w, http.StatusBadRequest, 20001, "Invalid "+op+" value, want YYYY-MM-DD or an RFC 3339 date and time")
			return
		}
		filters = append(filters, f)
	}
	to, from := q.Get("To"), q.Get("From")

	now := s.now()
	s.mu.Lock()
	var found []*phoneCall
	for _, c := range s.calls {
		if c.Account != account || (to != "" && c.To != to) || (from != "" && c.From != from) {
			continue
		}
		start, dialed := c.started(c.status(now))
		keep := true
		for _, f := range filters {
			keep = keep && dialed && f(start.Truncate(time.Second))
		}
		if keep {
			found = append(found, c)
		}
	}
	slices.SortFunc(found, func(a, b *phoneCall) int {
		return cmp.Or(b.Created.Compare(a.Created), strings.Compare(b.SID, a.SID))
	})
	first := min(page*size, len(found))
	shown := found[first:min(first+size, len(found))]
	calls := make([]map[string]any, 0, len(shown))
	for _, c := range shown {
		calls = append(calls, c.json(c.status(now), now))
	}
	s.mu.Unlock()

	pageURI := func(p int) string {
		v := url.Values{}
		for k, vs := range q {
			if k != "Page" && k != "PageSize" && k != "PageToken" {
				v[k] = vs
			}
		}
		v.Set("PageSize", strconv.Itoa(size))
		v.Set("Page", strconv.Itoa(p))
		return fmt.Sprintf("/2010-04-01/Accounts/%s/Calls.json?%s", account, v.Encode())
	}
	var next, prev any
	if first+size < len(found) {
		next = pageURI(page + 1)
	}
	if page > 0 {
		prev = pageURI(page - 1)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"calls":             calls,
		"start":             first,
		"end":               first + max(len(calls)-1, 0),
		"page":              page,
		"page_size":         size,
		"uri":               pageURI(page),
		"first_page_uri":    pageURI(0),
		"next_page_uri":     next,
		"previous_page_uri": prev,
	})
}

// startFilter reads one StartTime filter: op is StartTime (on that day or
// second), StartTime> (on or after) or StartTime< (on or before).
func startFilter(op, v string) (func(time.Time) bool, error) {
	var lo, hi time.Time // the day or second named: [lo, hi)
	if d, err := time.Parse(time.DateOnly, v); err == nil {
		lo, hi = d, d.AddDate(0, 0, 1)
	} else if t, err := time.Parse(time.RFC3339, v); err == nil {
		lo = t.Truncate(time.Second)
		hi = lo.Add(time.Second)
	} else {
		return nil, err
	}
	switch op {
	case "StartTime>":
		return func(t time.Time) bool { return !t.Before(lo) }, nil
	case "StartTime<":
		return func(t time.Time) bool { return t.Before(hi) }, nil
	}
	return func(t time.Time) bool { return !t.Before(lo) && t.Before(hi) }, nil
}

func (s *Server) telAccount(w http.ResponseWriter, r *http.Request) {
	account, ok := strings.CutSuffix(r.PathValue("account"), ".json")
	if !ok {
		s.telFail(w, http.StatusNotFound, 20404, "The requested resource was not found")
		return
	}
	if !s.telAuth(w, r, account) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sid":           account,
		"friendly_name": "Simulated account",
		"status":        "active",
		"type":          "Full",
		"date_created":  s.now().AddDate(-1, 0, 0).UTC().Format(twilioTime),
		"uri":           fmt.Sprintf("/2010-04-01/Accounts/%s.json", account),
	})
}
