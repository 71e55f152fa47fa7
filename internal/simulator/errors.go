package simulator

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// apiError is an error answer, written in the shape of the service that gives it.
type apiError struct {
	Status  int
	Code    string // "" picks the service's default for Status
	Message string // "" picks the default for Code
	// RetryAfter is the resolved Retry-After value (seconds or an HTTP date);
	// Telegram carries it in the body as parameters.retry_after.
	RetryAfter string
	Policy     string    // CRM 429 policyName
	Kind       FaultKind // the fault behind it, "" for a handler's own error
	Limit      int       // the concurrency limit, for its message
}

// writeError writes e as service does.
func writeError(w http.ResponseWriter, service string, e apiError, now time.Time) {
	switch service {
	case ServiceElevenLabs:
		code := cmp.Or(e.Code, elevenCode(e))
		id := randHex(16)
		w.Header().Set("request-id", id)
		writeJSON(w, e.Status, map[string]any{"detail": map[string]any{
			"type":       elevenType(e.Status, code),
			"code":       code,
			"message":    cmp.Or(e.Message, elevenMessage(code, e)),
			"status":     code,
			"request_id": id,
			"param":      nil,
		}})
	case ServiceLLM:
		code := cmp.Or(e.Code, llmCode(e.Status))
		w.Header().Set("x-request-id", "req_"+randHex(16))
		writeJSON(w, e.Status, map[string]any{"error": map[string]any{
			"message": cmp.Or(e.Message, llmMessage(code, e.Status)),
			"type":    llmType(code, e.Status),
			"param":   nil,
			"code":    code,
		}})
	case ServiceCRM:
		w.Header().Set("X-HubSpot-Correlation-Id", uuid())
		body := map[string]any{"status": "error", "correlationId": uuid()}
		if e.Status == http.StatusTooManyRequests {
			policy := cmp.Or(e.Policy, "TEN_SECONDLY_ROLLING")
			body["errorType"] = "RATE_LIMIT"
			body["policyName"] = policy
			body["groupName"] = "publicapi:private-app"
			body["message"] = cmp.Or(e.Message, crmLimitMessage(policy))
		} else {
			body["category"] = cmp.Or(e.Code, crmCategory(e.Status))
			body["message"] = cmp.Or(e.Message, crmMessage(e.Status))
		}
		writeJSON(w, e.Status, body)
	case ServiceTelephony:
		code := twilioCode(e.Status)
		if n, err := strconv.Atoi(e.Code); err == nil {
			code = n
		}
		w.Header().Set("Twilio-Request-Id", "RQ"+randHex(16))
		writeJSON(w, e.Status, map[string]any{
			"code":      code,
			"message":   cmp.Or(e.Message, twilioMessage(code)),
			"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
			"status":    e.Status,
		})
	case ServiceTelegram:
		body := map[string]any{"ok": false, "error_code": e.Status}
		desc := cmp.Or(e.Message, telegramDescription(e.Status))
		if e.Status == http.StatusTooManyRequests {
			after := retryAfterSeconds(cmp.Or(e.RetryAfter, "1"), now)
			body["parameters"] = map[string]int{"retry_after": after}
			if e.Message == "" {
				desc = fmt.Sprintf("Too Many Requests: retry after %d", after)
			}
		}
		body["description"] = desc
		writeJSON(w, e.Status, body)
	case ServiceSheets:
		status := cmp.Or(e.Code, googleStatus(e.Status))
		body := map[string]any{
			"code":    e.Status,
			"message": cmp.Or(e.Message, googleMessage(e.Status)),
			"status":  status,
		}
		if e.Status == http.StatusTooManyRequests {
			body["details"] = []any{map[string]any{
				"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
				"reason": "RATE_LIMIT_EXCEEDED",
				"domain": "googleapis.com",
				"metadata": map[string]string{
					"quota_metric": "sheets.googleapis.com/write_requests",
					"quota_limit":  "WriteRequestsPerMinutePerUser",
					"service":      "sheets.googleapis.com",
				},
			}}
		}
		writeJSON(w, e.Status, map[string]any{"error": body})
	default: // webhook
		writeJSON(w, e.Status, map[string]string{"error": cmp.Or(e.Message, e.Code, http.StatusText(e.Status))})
	}
}

func elevenCode(e apiError) string {
	switch e.Status {
	case http.StatusBadRequest:
		return "invalid_request"
	case http.StatusUnauthorized:
		return "invalid_api_key"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusUnprocessableEntity:
		return "validation_error"
	case http.StatusTooManyRequests:
		if e.Kind == KindConcurrency {
			return "concurrent_limit_exceeded"
		}
		return "rate_limit_exceeded"
	case http.StatusServiceUnavailable:
		return "system_busy"
	}
	if e.Status >= 500 {
		return "internal_server_error"
	}
	return "error"
}

func elevenType(status int, code string) string {
	switch {
	case code == "quota_exceeded":
		return "quota_error"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	}
	return "validation_error"
}

func elevenMessage(code string, e apiError) string {
	switch code {
	case "system_busy":
		return "The system is experiencing heavy traffic, please try again. Higher subscriptions have higher priority."
	case "rate_limit_exceeded":
		return "Too many requests: you have exceeded the rate limit of your subscription."
	case "concurrent_limit_exceeded":
		return fmt.Sprintf("Too many concurrent requests: your subscription allows %d at a time.", cmp.Or(e.Limit, 5))
	case "quota_exceeded":
		return "This request exceeds your quota of 100000. You have 12 credits remaining, while 340 credits are required for this request."
	case "invalid_api_key":
		return "Invalid API key"
	case "voice_not_found":
		return "A voice with the given voice_id was not found."
	case "max_character_limit_exceeded":
		return "The text is longer than the model's maximum number of characters per request."
	}
	return http.StatusText(e.Status)
}

func llmCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request"
	case http.StatusUnauthorized:
		return "invalid_api_key"
	case http.StatusForbidden:
		return "unsupported_country_region_territory"
	case http.StatusNotFound:
		return "model_not_found"
	case http.StatusRequestTimeout:
		return "timeout"
	case http.StatusConflict:
		return "conflict"
	case http.StatusTooManyRequests:
		return "rate_limit_exceeded"
	case http.StatusServiceUnavailable:
		return "service_unavailable"
	case 529:
		return "overloaded_error"
	}
	return "server_error"
}

func llmType(code string, status int) string {
	switch code {
	case "insufficient_quota":
		return "insufficient_quota"
	case "rate_limit_exceeded", "slow_down":
		return "requests"
	case "overloaded_error":
		return "overloaded_error"
	}
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}

func llmMessage(code string, status int) string {
	switch code {
	case "insufficient_quota":
		return "You exceeded your current quota, please check your plan and billing details."
	case "rate_limit_exceeded":
		return "Rate limit reached for requests. Please try again later."
	case "slow_down":
		return "Please reduce the rate of your requests: a sudden increase in usage is being slowed down."
	case "invalid_api_key":
		return "Incorrect API key provided."
	case "model_not_found":
		return "The model does not exist or you do not have access to it."
	case "overloaded_error":
		return "Overloaded"
	case "service_unavailable":
		return "The engine is currently overloaded, please try again later."
	}
	if status >= 500 {
		return "The server had an error while processing your request. Sorry about that!"
	}
	return http.StatusText(status)
}

func crmLimitMessage(policy string) string {
	switch policy {
	case "DAILY":
		return "You have reached your daily limit."
	case "SECONDLY":
		return "You have reached your secondly limit."
	}
	return "You have reached your ten_secondly_rolling limit."
}

func crmCategory(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "VALIDATION_ERROR"
	case http.StatusUnauthorized:
		return "INVALID_AUTHENTICATION"
	case http.StatusForbidden:
		return "MISSING_SCOPES"
	case http.StatusNotFound:
		return "OBJECT_NOT_FOUND"
	case http.StatusConflict:
		return "CONFLICT"
	}
	return "INTERNAL_ERROR"
}

func crmMessage(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "Authentication credentials not found or invalid."
	case http.StatusNotFound:
		return "Object not found."
	}
	if status >= 500 {
		return "internal error"
	}
	return http.StatusText(status)
}

func twilioCode(status int) int {
	switch status {
	case http.StatusBadRequest:
		return 21211
	case http.StatusUnauthorized:
		return 20003
	case http.StatusNotFound:
		return 20404
	case http.StatusTooManyRequests:
		return 20429
	case http.StatusServiceUnavailable:
		return 20503
	}
	return 20500
}

func twilioMessage(code int) string {
	switch code {
	case 20003:
		return "Authenticate"
	case 20404:
		return "The requested resource was not found"
	case 20429:
		return "Too Many Requests"
	case 20503:
		return "Service Unavailable"
	case 21205:
		return "Url parameter is required."
	case 21210:
		return "The source phone number provided, From, is not yet verified for your account."
	case 21211:
		return "The 'To' number is not a valid phone number."
	case 21212:
		return "The 'From' number is not a valid phone number."
	case 13224:
		return "Dial: Invalid phone number format."
	}
	return "Internal Server Error"
}

func telegramDescription(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "Bad Request: chat not found"
	case http.StatusUnauthorized:
		return "Unauthorized"
	case http.StatusForbidden:
		return "Forbidden: bot was blocked by the user"
	case http.StatusNotFound:
		return "Not Found"
	case http.StatusBadGateway:
		return "Bad Gateway"
	}
	return http.StatusText(status)
}

func googleStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusConflict:
		return "ABORTED"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	}
	return "INTERNAL"
}

func googleMessage(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' of service 'sheets.googleapis.com' for consumer 'project_number:000000000000'."
	case http.StatusServiceUnavailable:
		return "The service is currently unavailable."
	case http.StatusUnauthorized:
		return "Request is missing required authentication credential."
	}
	if status >= 500 {
		return "Internal error encountered."
	}
	return http.StatusText(status)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func uuid() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
