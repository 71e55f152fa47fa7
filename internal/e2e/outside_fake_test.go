//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/internal/provider/crm"
)

// outside fakes the four provider APIs the way their public documentation
// shapes the answers, written here and sharing nothing with
// internal/simulator: optional fields absent (HubSpot's search has no
// total), fields the clients do not read present (OpenAI's usage and
// system_fingerprint, Twilio's nulls and subresource_uris, HubSpot's
// createdAt/archived), headers the real services add. Like Twilio, once a
// call is created it fetches the call's Url (TwiML) with a form POST and
// then the <Play> audio, and the call counts as played only when that audio
// is byte for byte what the text-to-speech endpoint returned.
type outside struct {
	srv *httptest.Server

	mu sync.Mutex
	// ttsFailures is how many text-to-speech requests, from the first, get
	// ElevenLabs' 503 system_busy.
	ttsFailures int
	tts         int // text-to-speech requests
	llm         int // chat completions
	audio       map[[32]byte]bool
	calls       []*twilioCall
	records     map[string]string // agent_call_id -> record id
	creates     map[string]int    // agent_call_id -> records created
}

// twilioCall is one call the fake placed.
type twilioCall struct {
	sid, to, from, url string
	created            time.Time
	status             string // queued, in-progress, completed or failed
	played             bool   // the TwiML's audio was the TTS output
	why                string // why it was not played
}

func newOutside(t *testing.T, ttsFailures int) *outside {
	o := &outside{ttsFailures: ttsFailures, audio: map[[32]byte]bool{},
		records: map[string]string{}, creates: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /llm/v1/chat/completions", o.chat)
	mux.HandleFunc("POST /elevenlabs/v1/text-to-speech/{voice}", o.speak)
	mux.HandleFunc("POST /telephony/2010-04-01/Accounts/{account}/Calls.json", o.createCall)
	mux.HandleFunc("GET /telephony/2010-04-01/Accounts/{account}/Calls.json", o.listCalls)
	mux.HandleFunc("GET /telephony/2010-04-01/Accounts/{account}/Calls/{sid}", o.fetchCall)
	mux.HandleFunc("POST /crm/crm/v3/objects/calls/search", o.searchRecords)
	mux.HandleFunc("POST /crm/crm/v3/objects/calls", o.createRecord)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("outside fake: unexpected %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	})
	o.srv = httptest.NewServer(mux)
	t.Cleanup(o.srv.Close)
	return o
}

// URL is the base URL of service (llm, elevenlabs, telephony, crm).
func (o *outside) URL(service string) string { return o.srv.URL + "/" + service }

// chat answers a chat completion as OpenAI documents it.
func (o *outside) chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if r.Header.Get("Authorization") == "" || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	o.mu.Lock()
	o.llm++
	n := o.llm
	o.mu.Unlock()
	script := fmt.Sprintf("Hello! This is a short reminder call, number %d. %s", n, lastWords(req.Messages[len(req.Messages)-1].Content))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-request-id", fmt.Sprintf("req_%d", n))
	w.Header().Set("openai-processing-ms", "412")
	w.Header().Set("x-ratelimit-remaining-requests", "9999")
	w.Header().Set("x-ratelimit-reset-requests", "6ms")
	body, _ := json.Marshal(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", n), "object": "chat.completion", "created": time.Now().Unix(),
		"model": req.Model + "-2026-01-01", "system_fingerprint": "fp_44709d6fcb", "service_tier": "default",
		"choices": []any{map[string]any{
			"index": 0, "logprobs": nil, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": script, "refusal": nil, "annotations": []any{}},
		}},
		"usage": map[string]any{"prompt_tokens": 57, "completion_tokens": 17, "total_tokens": 74,
			"prompt_tokens_details": map[string]any{"cached_tokens": 0, "audio_tokens": 0}},
	})
	_, _ = w.Write(body)
}

// lastWords is the end of a prompt, so that each script differs.
func lastWords(s string) string {
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return s
}

// speak answers text to speech as ElevenLabs does: audio/mpeg bytes with
// its headers, or, for the first ttsFailures requests, 503 system_busy with
// the documented detail object.
func (o *outside) speak(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Text    string `json:"text"`
		ModelID string `json:"model_id"`
	}
	if r.Header.Get("Xi-Api-Key") == "" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Text == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"detail":[{"type":"missing","loc":["body","text"],"msg":"Field required","input":null}]}`)
		return
	}
	o.mu.Lock()
	o.tts++
	n, fail := o.tts, o.tts <= o.ttsFailures
	audio := []byte(fmt.Sprintf("ID3\x04\x00\x00\x00\x00\x00\x00 fake mpeg frames for request %d: %s", n, req.Text))
	if !fail {
		o.audio[sha256.Sum256(audio)] = true
	}
	o.mu.Unlock()
	w.Header().Set("request-id", fmt.Sprintf("tts-%d", n))
	if fail {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"detail":{"type":"service_unavailable","code":"system_busy","status":"system_busy","message":"The system is experiencing heavy traffic, please try again later.","request_id":"tts-%d","param":null}}`, n)
		return
	}
	w.Header().Set("Content-Type", "audio/mpeg")
	w.Header().Set("history-item-id", fmt.Sprintf("hist%d", n))
	w.Header().Set("character-cost", fmt.Sprint(len(req.Text)))
	w.Header().Set("x-region", "us-central1")
	_, _ = w.Write(audio)
}

// createCall places a call as Twilio does: 201 with the call resource,
// status queued, then (in the background) the TwiML and audio fetches.
func (o *outside) createCall(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if err := r.ParseForm(); err != nil || !ok || user == "" || pass == "" {
		twilioError(w, http.StatusBadRequest, 21201, "No 'To' number is specified")
		return
	}
	to, from, twiml := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("Url")
	if to == "" || from == "" || twiml == "" {
		twilioError(w, http.StatusBadRequest, 21205, "Url parameter is required.")
		return
	}
	o.mu.Lock()
	c := &twilioCall{sid: fmt.Sprintf("CA%032x", len(o.calls)+1), to: to, from: from, url: twiml,
		created: time.Now().UTC(), status: "queued"}
	o.calls = append(o.calls, c)
	res := o.resource(r.PathValue("account"), c)
	o.mu.Unlock()
	go o.play(r.PathValue("account"), c)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Twilio-Request-Id", "RQ"+c.sid[2:])
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(res)
}

// play is Twilio answering the call: it POSTs the call's parameters to its
// Url, reads the <Play> of the TwiML and fetches that audio.
func (o *outside) play(account string, c *twilioCall) {
	played, why := false, ""
	defer func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		c.played, c.why = played, why
		if played {
			c.status = "completed"
		} else {
			c.status = "failed" // Twilio's 11200: the document could not be fetched
		}
	}()
	o.mu.Lock()
	c.status = "in-progress"
	o.mu.Unlock()
	form := url.Values{"CallSid": {c.sid}, "AccountSid": {account}, "From": {c.from}, "To": {c.to},
		"CallStatus": {"in-progress"}, "Direction": {"outbound-api"}, "ApiVersion": {"2010-04-01"}}
	resp, err := http.PostForm(c.url, form)
	if err != nil {
		why = "twiml: " + err.Error()
		return
	}
	defer resp.Body.Close()
	var doc struct {
		Play []string `xml:"Play"`
	}
	if resp.StatusCode != http.StatusOK || xml.NewDecoder(resp.Body).Decode(&doc) != nil || len(doc.Play) != 1 {
		why = fmt.Sprintf("twiml: %s, %d <Play>", resp.Status, len(doc.Play))
		return
	}
	audioURL, err := url.Parse(strings.TrimSpace(doc.Play[0]))
	if err != nil {
		why = "play url: " + err.Error()
		return
	}
	base, _ := url.Parse(c.url)
	ar, err := http.Get(base.ResolveReference(audioURL).String())
	if err != nil {
		why = "audio: " + err.Error()
		return
	}
	defer ar.Body.Close()
	audio, err := io.ReadAll(ar.Body)
	if err != nil || ar.StatusCode != http.StatusOK {
		why = fmt.Sprintf("audio: %s %v", ar.Status, err)
		return
	}
	o.mu.Lock()
	played = o.audio[sha256.Sum256(audio)]
	o.mu.Unlock()
	if !played {
		why = fmt.Sprintf("audio of %d bytes is not what the TTS returned", len(audio))
	}
}

// fetchCall answers GET Calls/{sid}.json.
func (o *outside) fetchCall(w http.ResponseWriter, r *http.Request) {
	sid := strings.TrimSuffix(r.PathValue("sid"), ".json")
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range o.calls {
		if c.sid == sid {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_ = json.NewEncoder(w).Encode(o.resource(r.PathValue("account"), c))
			return
		}
	}
	twilioError(w, http.StatusNotFound, 20404, "The requested resource /Calls/"+sid+".json was not found")
}

// listCalls answers GET Calls.json?To=&From=, newest first, with Twilio's
// paging fields.
func (o *outside) listCalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o.mu.Lock()
	defer o.mu.Unlock()
	list := []map[string]any{}
	for i := len(o.calls) - 1; i >= 0; i-- {
		c := o.calls[i]
		if (q.Get("To") == "" || q.Get("To") == c.to) && (q.Get("From") == "" || q.Get("From") == c.from) {
			list = append(list, o.resource(r.PathValue("account"), c))
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"calls": list, "end": len(list) - 1, "first_page_uri": r.URL.RequestURI(), "next_page_uri": nil,
		"page": 0, "page_size": 50, "previous_page_uri": nil, "start": 0, "uri": r.URL.RequestURI(),
	})
}

// resource is Twilio's call resource, nulls included. Callers hold o.mu.
func (o *outside) resource(account string, c *twilioCall) map[string]any {
	var duration, start, end any
	if c.status != "queued" {
		start = c.created.Add(time.Second).Format(time.RFC1123Z)
	}
	if c.status == "completed" {
		duration, end = "4", c.created.Add(5*time.Second).Format(time.RFC1123Z)
	}
	uri := "/2010-04-01/Accounts/" + account + "/Calls/" + c.sid + ".json"
	return map[string]any{
		"account_sid": account, "annotation": nil, "answered_by": nil, "api_version": "2010-04-01",
		"caller_name": nil, "date_created": c.created.Format(time.RFC1123Z), "date_updated": time.Now().UTC().Format(time.RFC1123Z),
		"direction": "outbound-api", "duration": duration, "end_time": end, "forwarded_from": nil,
		"from": c.from, "from_formatted": c.from, "group_sid": nil, "parent_call_sid": nil,
		"phone_number_sid": "PN00000000000000000000000000000000", "price": nil, "price_unit": "USD",
		"queue_time": "0", "sid": c.sid, "start_time": start, "status": c.status, "to": c.to, "to_formatted": c.to,
		"trunk_sid": nil, "uri": uri,
		"subresource_uris": map[string]any{"notifications": strings.TrimSuffix(uri, ".json") + "/Notifications.json",
			"recordings": strings.TrimSuffix(uri, ".json") + "/Recordings.json"},
	}
}

func twilioError(w http.ResponseWriter, status, code int, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"code":%d,"message":%q,"more_info":"https://www.twilio.com/docs/errors/%d","status":%d}`, code, message, code, status)
}

// searchRecords answers HubSpot's search: results (and no total, no
// paging when there is no next page).
func (o *outside) searchRecords(w http.ResponseWriter, r *http.Request) {
	var req struct {
		FilterGroups []struct {
			Filters []struct {
				PropertyName string `json:"propertyName"`
				Operator     string `json:"operator"`
				Value        string `json:"value"`
			} `json:"filters"`
		} `json:"filterGroups"`
	}
	if !bearer(r) || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.FilterGroups) != 1 || len(req.FilterGroups[0].Filters) != 1 ||
		req.FilterGroups[0].Filters[0].PropertyName != crm.PropertyCallID {
		hubSpotError(w, http.StatusBadRequest, "VALIDATION_ERROR", "one agent_call_id filter expected")
		return
	}
	callID := req.FilterGroups[0].Filters[0].Value
	o.mu.Lock()
	id, ok := o.records[callID]
	o.mu.Unlock()
	results := []any{}
	if ok {
		results = append(results, o.record(id, callID))
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"results": results})
}

// createRecord answers HubSpot's create with the record and fields the
// client does not read.
func (o *outside) createRecord(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Properties map[string]string `json:"properties"`
	}
	if !bearer(r) || json.NewDecoder(r.Body).Decode(&req) != nil || req.Properties[crm.PropertyCallID] == "" {
		hubSpotError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Property values were not valid")
		return
	}
	callID := req.Properties[crm.PropertyCallID]
	o.mu.Lock()
	o.creates[callID]++
	id := fmt.Sprint(51_000_000_000 + len(o.records) + 1)
	o.records[callID] = id
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(o.record(id, callID))
}

func (o *outside) record(id, callID string) map[string]any {
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	return map[string]any{
		"id": id, "createdAt": now, "updatedAt": now, "archived": false,
		"properties": map[string]any{crm.PropertyCallID: callID, "hs_createdate": now, "hs_lastmodifieddate": now, "hs_object_id": id},
	}
}

func bearer(r *http.Request) bool { return strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") }

func hubSpotError(w http.ResponseWriter, status int, category, message string) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"status":"error","message":%q,"correlationId":"3f0c7a8e-2b1d-4c5e-9f6a-7b8c9d0e1f2a","category":%q}`, message, category)
}

// outsideCounts is what the fake saw, for the test's checks.
type outsideCounts struct {
	llm, tts int
	calls    []twilioCall
	creates  map[string]int
}

func (o *outside) counts() outsideCounts {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := outsideCounts{llm: o.llm, tts: o.tts, creates: map[string]int{}}
	for _, call := range o.calls {
		c.calls = append(c.calls, *call)
	}
	for k, v := range o.creates {
		c.creates[k] = v
	}
	return c
}
