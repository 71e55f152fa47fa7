package simulator

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
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
	s.calls[c.SID] = c
	out := c.json("queued", now)
	s.mu.Unlock()

	s.sideEffect(ServiceTelephony, r.Header.Get(HeaderCallID))
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
	switch status {
	case OutcomeCompleted:
		out["start_time"] = c.Created.UTC().Format(twilioTime)
		out["end_time"] = c.Created.Add(c.Duration).UTC().Format(twilioTime)
		out["duration"] = strconv.Itoa(int(c.Duration / time.Second))
		out["price"] = "-0.01400"
		out["answered_by"] = "human"
	case OutcomeBusy, OutcomeNoAnswer, OutcomeFailed, OutcomeCanceled:
		out["end_time"] = c.Created.UTC().Format(twilioTime)
		out["duration"] = "0"
	case "in-progress":
		out["start_time"] = c.Created.UTC().Format(twilioTime)
	}
	return out
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
	c.Polls++
	status := c.Outcome
	if c.Polls <= c.Rings {
		status = "ringing"
		if c.Polls > 1 && c.Outcome == OutcomeCompleted {
			status = "in-progress"
		}
	}
	out := c.json(status, now)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
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
