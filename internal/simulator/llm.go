package simulator

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text returns a message's content: a string, or the text parts of an array.
func (m chatMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &parts) != nil {
		return ""
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			sb.WriteString(p.Text + "\n")
		}
	}
	return sb.String()
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	fail := func(status int, code, msg string) {
		writeError(w, ServiceLLM, apiError{Status: status, Code: code, Message: msg}, now)
	}
	key := bearer(r)
	if key == "" {
		fail(http.StatusUnauthorized, "invalid_api_key", "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.")
		return
	}
	if !s.authorized(ServiceLLM, key) {
		fail(http.StatusUnauthorized, "invalid_api_key", "")
		return
	}
	var req struct {
		Model               string        `json:"model"`
		Messages            []chatMessage `json:"messages"`
		MaxTokens           int           `json:"max_tokens"`
		MaxCompletionTokens int           `json:"max_completion_tokens"`
		Stream              bool          `json:"stream"`
		N                   int           `json:"n"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		fail(http.StatusBadRequest, "invalid_request", "We could not parse the JSON body of your request.")
		return
	}
	switch {
	case req.Model == "":
		fail(http.StatusBadRequest, "invalid_request", "you must provide a model parameter")
		return
	case len(req.Messages) == 0:
		fail(http.StatusBadRequest, "invalid_request", "[] is too short - 'messages'")
		return
	case req.Stream:
		fail(http.StatusBadRequest, "unsupported_parameter", "stream: the simulator answers with whole completions only")
		return
	}
	for _, m := range req.Messages {
		if !slices.Contains([]string{"system", "developer", "user", "assistant", "tool"}, m.Role) {
			fail(http.StatusBadRequest, "invalid_request", "Invalid value for 'messages.role': "+strconv.Quote(m.Role))
			return
		}
	}

	var prompt strings.Builder
	for _, m := range req.Messages {
		prompt.WriteString(m.text() + "\n")
	}
	script := callScript(contactName(req.Messages))
	finish := "stop"
	if limit := max(req.MaxTokens, req.MaxCompletionTokens); limit > 0 && tokens(script) > limit {
		script = script[:min(len(script), limit*4)]
		finish = "length"
	}
	promptTokens, completionTokens := tokens(prompt.String()), tokens(script)

	s.sideEffect(ServiceLLM, r.Header.Get(HeaderCallID))
	h := w.Header()
	h.Set("x-request-id", "req_"+randHex(16))
	h.Set("openai-processing-ms", "412")
	h.Set("openai-version", "2020-10-01")
	h.Set("openai-model", req.Model)
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      "chatcmpl-" + randHex(12),
		"object":  "chat.completion",
		"created": now.Unix(),
		"model":   req.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": script, "refusal": nil},
			"logprobs":      nil,
			"finish_reason": finish,
		}},
		"usage": map[string]int{
			"prompt_tokens":     promptTokens,
			"completion_tokens": completionTokens,
			"total_tokens":      promptTokens + completionTokens,
		},
		"system_fingerprint": "fp_sim0001",
	})
}

// tokens estimates a token count the way people do: four characters a token.
func tokens(s string) int { return (len(s) + 3) / 4 }

// namePatterns find a contact's name in a prompt, most explicit first.
var namePatterns = []*regexp.Regexp{
	regexp.MustCompile(`"(?:contact_name|first_name|full_name|name)"\s*:\s*"([^"]{1,60})"`),
	regexp.MustCompile(`(?i:\b(?:contact(?:'s)?\s+name|first\s+name|full\s+name|name|contact|customer|recipient))\s*(?:is|:|=)\s*"?(\p{Lu}[\p{L}'-]*(?:[ \t]+\p{Lu}[\p{L}'-]*){0,2})`),
	regexp.MustCompile(`(?i:\b(?:calling|call|named|greet|for))\s+(\p{Lu}[\p{L}'-]+(?:[ \t]+\p{Lu}[\p{L}'-]+)?)`),
}

// notNames are capitalised words the loose pattern would take for a name.
var notNames = []string{"The", "A", "An", "This", "That", "Our", "Your", "Contact", "Customer", "Call", "Calls", "Outbound", "E"}

// contactName finds the contact's name in the user and system messages.
func contactName(msgs []chatMessage) string {
	for _, re := range namePatterns {
		for _, m := range msgs {
			if m.Role == "assistant" {
				continue
			}
			for _, sub := range re.FindAllStringSubmatch(m.text(), -1) {
				name := strings.TrimSpace(strings.Trim(sub[1], `"'.,`))
				if name != "" && !slices.Contains(notNames, strings.Fields(name)[0]) {
					return name
				}
			}
		}
	}
	return ""
}

// callScript is the short outbound call script the simulated model writes.
func callScript(name string) string {
	greet, thanks := "Hi there", "Thank you"
	if name != "" {
		first := strings.Fields(name)[0]
		greet, thanks = "Hi "+first, "Thank you, "+first
	}
	return greet + ", this is Sam calling from Northwind Health. " +
		"I'm reaching out about your upcoming appointment next week. " +
		"Could you confirm that the time still works for you? " +
		"If you'd rather reschedule, just say so and I'll find another slot. " +
		thanks + ", and have a great day."
}

func (s *Server) llmModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(ServiceLLM, bearer(r)) {
		writeError(w, ServiceLLM, apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key"}, s.now())
		return
	}
	var data []map[string]any
	for _, id := range []string{"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o", "sim-call-script-1"} {
		data = append(data, map[string]any{"id": id, "object": "model", "created": 1715367049, "owned_by": "system"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
