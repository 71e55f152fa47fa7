package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/callagent/agent/events"
)

// permanentCauses says, for the provider error codes that fail for good, what
// a human must do. Several share an HTTP status but not a remedy: ElevenLabs
// answers 401 both for a bad key and for a used-up quota, and OpenAI answers
// 429 both for a rate limit and for an unpaid bill, so the text names which.
var permanentCauses = map[string]string{
	"quota_exceeded":               "quota exceeded, not an auth failure: the API key is valid but the account's quota is used up; top up or raise the plan",
	"insufficient_quota":           "billing quota exhausted (insufficient_quota), not a rate limit: add credit to the account; retrying will not help",
	"invalid_api_key":              "authentication failed: the API key is invalid or was rotated; update the service's api_key",
	"unauthorized":                 "authentication failed: the credentials were refused; check the service's api_key",
	"voice_not_found":              "voice not found: check the configured voice_id",
	"max_character_limit_exceeded": "the text is longer than one request may carry",
	"model_not_found":              "model not found: check the configured model",
	"21211":                        "invalid phone number: the number is not dialable",
	"13224":                        "invalid phone number: not a valid E.164 number",
	"21210":                        "caller id not verified: check the configured from_number",
}

// permanentCause describes a permanent failure by its provider code, else by
// its HTTP status.
func permanentCause(code string, status int) string {
	if s, ok := permanentCauses[code]; ok {
		return s
	}
	switch status {
	case 401:
		return "authentication failed (HTTP 401)"
	case 403:
		return "permission denied (HTTP 403)"
	case 404:
		return "not found (HTTP 404): check the service's base_url and options"
	case 400, 422:
		return fmt.Sprintf("request rejected as invalid (HTTP %d)", status)
	}
	switch {
	case code != "" && status != 0:
		return fmt.Sprintf("permanent error %s (HTTP %d)", code, status)
	case code != "":
		return "permanent error " + code
	case status != 0:
		return fmt.Sprintf("permanent error (HTTP %d)", status)
	}
	return "permanent error"
}

// permanentLabels distinguish one permanent failure from another of the same
// service: a quota alert must not be deduplicated into a bad-key alert.
func permanentLabels(a *events.Attempt) map[string]string {
	switch {
	case a.ErrorCode != "":
		return map[string]string{"error_code": a.ErrorCode}
	case a.StatusCode != 0:
		return map[string]string{"status_code": strconv.Itoa(a.StatusCode)}
	}
	return nil
}

func percent(r float64) string {
	return strconv.FormatFloat(r*100, 'f', 0, 64) + "%"
}

func joinNonEmpty(sep string, parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, sep)
}
