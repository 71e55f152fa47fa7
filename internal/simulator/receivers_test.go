package simulator

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func telegramReq(text string) req {
	return req{
		method: "POST", path: "/telegram/bot123456:ABC-token/sendMessage",
		header: map[string]string{"Content-Type": "application/json"},
		body:   jsonBody(map[string]any{"chat_id": -1001234, "text": text, "parse_mode": "HTML"}),
	}
}

func webhookReq(name, body string, header map[string]string) req {
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range header {
		h[k] = v
	}
	return req{method: "POST", path: "/webhook/" + name, header: h, body: body}
}

// sheetsReq is shaped like the Google client's values.append call.
func sheetsReq(rng string, values [][]any) req {
	return req{
		method: "POST",
		path: "/sheets/v4/spreadsheets/sheet-123/values/" + url.PathEscape(rng) +
			":append?alt=json&insertDataOption=INSERT_ROWS&prettyPrint=false&valueInputOption=RAW",
		header: map[string]string{"Content-Type": "application/json"},
		body:   jsonBody(map[string]any{"values": values}),
	}
}

func TestTelegram(t *testing.T) {
	s := start(t, "", nil)
	form := req{
		method: "POST", path: "/telegram/bot123456:ABC-token/sendMessage",
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		body:   url.Values{"chat_id": {"42"}, "text": {"second <b>alert</b>"}}.Encode(),
	}
	tests := []struct {
		name   string
		req    req
		status int
		desc   string
	}{
		{"json", telegramReq("<b>elevenlabs down</b>"), 200, ""},
		{"form", form, 200, ""},
		{"empty text", telegramReq(""), 400, "Bad Request: message text is empty"},
		{"too long", telegramReq(strings.Repeat("x", 4097)), 400, "Bad Request: message is too long"},
		{"unknown method", func() req { q := telegramReq("x"); q.path = "/telegram/bot1:T/sendSticker"; return q }(), 404, "Not Found: method not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req.do(t, s, nil)
			m := r.json(t)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, m)
			}
			if tt.status == 200 {
				if m["ok"] != true || dig(m, "result", "message_id") == nil || dig(m, "result", "text") == nil {
					t.Errorf("answer %v", m)
				}
			} else if m["ok"] != false || m["description"] != tt.desc {
				t.Errorf("answer %v, want description %q", m, tt.desc)
			}
		})
	}
	got := s.Received(ServiceTelegram)
	if len(got) != len(tests) {
		t.Fatalf("recorded %d requests, want %d", len(got), len(tests))
	}
	if got[0].Fields["chat_id"] != "-1001234" || got[0].Fields["parse_mode"] != "HTML" || got[0].Status != 200 || got[0].Path != "sendMessage" {
		t.Errorf("first recording = %+v", got[0])
	}
	if got[1].Fields["text"] != "second <b>alert</b>" || got[1].Fields["chat_id"] != "42" {
		t.Errorf("form recording = %+v", got[1])
	}
	if got[2].Status != 400 {
		t.Errorf("a rejected message is recorded with status %d", got[2].Status)
	}
	for _, rec := range got {
		if strings.Contains(rec.Path, "token") {
			t.Errorf("the bot token was recorded in %q", rec.Path)
		}
	}
	if r := (req{method: "GET", path: "/telegram/bot1:T/getMe"}).do(t, s, nil); r.status != 200 || dig(r.json(t), "result", "is_bot") != true {
		t.Errorf("getMe: %d %s", r.status, r.body)
	}
}

func TestWebhook(t *testing.T) {
	clk := newClock()
	s := start(t, "name: x\nservices:\n  webhook: {secret: s3cret}\n", clk)
	body := `{"status":"firing","labels":{"alertname":"ServiceDown","service":"elevenlabs"}}`
	now := strconv.FormatInt(clk.Now().Unix(), 10)
	stale := strconv.FormatInt(clk.Now().Add(-10*time.Minute).Unix(), 10)
	tests := []struct {
		name     string
		header   map[string]string
		status   int
		verified bool
	}{
		{"signed", map[string]string{HeaderTimestamp: now, HeaderSignature: Sign("s3cret", now, []byte(body))}, 200, true},
		{"wrong secret", map[string]string{HeaderTimestamp: now, HeaderSignature: Sign("other", now, []byte(body))}, 401, false},
		{"stale timestamp", map[string]string{HeaderTimestamp: stale, HeaderSignature: Sign("s3cret", stale, []byte(body))}, 401, false},
		{"unsigned", nil, 401, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := webhookReq("oncall", body, tt.header).do(t, s, nil); r.status != tt.status {
				t.Errorf("status %d, want %d", r.status, tt.status)
			}
		})
	}
	got := s.Received(ServiceWebhook)
	if len(got) != len(tests) {
		t.Fatalf("recorded %d, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		if got[i].Verified == nil || *got[i].Verified != tt.verified || got[i].Path != "oncall" || got[i].Body != body {
			t.Errorf("%s: recorded %+v", tt.name, got[i])
		}
	}
	if got[0].Headers[HeaderSignature] == "" {
		t.Errorf("headers not recorded: %v", got[0].Headers)
	}

	s.SetScenario(Scenario{Name: "no secret"})
	if r := webhookReq("plain", body, nil).do(t, s, nil); r.status != 200 {
		t.Errorf("without a secret: %d", r.status)
	}
	if last := s.Received(ServiceWebhook)[len(tests)]; last.Verified != nil {
		t.Errorf("Verified = %v without a secret, want nil", *last.Verified)
	}
}

func TestSheets(t *testing.T) {
	clk := newClock()
	s := start(t, "name: x\nservices:\n  sheets: {faults: [{kind: burst, limit: 2, window: 1m}]}\n", clk)
	r := sheetsReq("Call log!A1", [][]any{{"2026-03-02T10:00:00Z", "elevenlabs", "transient", 1, "closed", "503"}, {"t", "llm", "", 0, "closed", "ok"}}).do(t, s, nil)
	m := r.json(t)
	if r.status != 200 || m["spreadsheetId"] != "sheet-123" || m["tableRange"] != nil ||
		dig(m, "updates", "updatedRange") != "'Call log'!A1:F2" || dig(m, "updates", "updatedRows") != float64(2) || dig(m, "updates", "updatedCells") != float64(12) {
		t.Fatalf("first append: %d %v", r.status, m)
	}
	m = sheetsReq("Call log!A1", [][]any{{"a", "b", "c", "d", "e", "f"}}).do(t, s, nil).json(t)
	if m["tableRange"] != "'Call log'!A1:F2" || dig(m, "updates", "updatedRange") != "'Call log'!A3:F3" {
		t.Errorf("second append: %v", m)
	}
	// The third write in a minute hits the scripted per-minute quota.
	r = sheetsReq("Call log!A1", [][]any{{"x"}}).do(t, s, nil)
	if r.status != 429 || dig(r.json(t), "error", "status") != "RESOURCE_EXHAUSTED" {
		t.Errorf("over quota: %d %s", r.status, r.body)
	}
	clk.Advance(time.Minute)
	if r := sheetsReq("Call log!A1", [][]any{{"x"}}).do(t, s, nil); r.status != 200 {
		t.Errorf("next minute: %d", r.status)
	}
	if p := s.PeakRate(ServiceSheets, time.Minute); p != 3 {
		t.Errorf("peak writes a minute = %d, want 3", p)
	}
	got := s.Received(ServiceSheets)
	if len(got) != 4 || got[0].Fields["value_input_option"] != "RAW" || got[0].Fields["rows"] != "2" || got[0].Fields["range"] != "Call log!A1" {
		t.Errorf("recorded %d: %+v", len(got), got)
	}
	clk.Advance(time.Minute)
	root := sheetsReq("Call log!A1", [][]any{{"y"}})
	root.path = strings.TrimPrefix(root.path, "/sheets")
	if m := root.do(t, s, nil).json(t); dig(m, "updates", "updatedRange") != "'Call log'!A5:A5" {
		t.Errorf("append without the /sheets prefix: %v", m)
	}
	noOption := sheetsReq("Log", [][]any{{"x"}})
	noOption.path = strings.Replace(noOption.path, "&valueInputOption=RAW", "", 1)
	if r := noOption.do(t, s, nil); r.status != 400 || dig(r.json(t), "error", "status") != "INVALID_ARGUMENT" {
		t.Errorf("without valueInputOption: %d %s", r.status, r.body)
	}
}

// TestReceivedListsAnsweredRequestsOnly: a poller reading Received while
// requests are in flight (the load harness polls every 20ms) must never see a
// request half recorded, with its path, status or verification still unset:
// it would read it as someone else's and skip it for good. The receiver's
// latency holds each request between its arrival and the answer, where the
// old recording showed it with an empty path.
func TestReceivedListsAnsweredRequestsOnly(t *testing.T) {
	const hold = 200 * time.Millisecond
	tests := []struct {
		name     string
		scenario string
		receiver string
		req      req
		path     string
		status   int
	}{
		{"webhook", "name: x\nservices:\n  webhook: {latency: 200ms}\n", ServiceWebhook,
			webhookReq("oncall", `{"events":[]}`, nil), "oncall", 200},
		{"webhook refusing its body", "name: x\nservices:\n  webhook: {latency: 200ms}\n", ServiceWebhook,
			webhookReq("oncall", `not json`, nil), "oncall", 400},
		{"telegram", "name: x\nservices:\n  telegram: {latency: 200ms}\n", ServiceTelegram,
			telegramReq("<b>down</b>"), "sendMessage", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, tt.scenario, nil)
			done := make(chan result, 1)
			go func() { done <- tt.req.do(t, s, nil) }()
			start := time.Now()
		poll:
			for {
				for _, r := range s.Received(tt.receiver) {
					if r.Path != tt.path || r.Status != tt.status {
						t.Fatalf("listed before it was answered: %+v", r)
					}
				}
				select {
				case res := <-done:
					if res.err != nil || res.status != tt.status {
						t.Fatalf("request: status %d, err %v; want %d", res.status, res.err, tt.status)
					}
					break poll
				case <-time.After(time.Millisecond):
				}
			}
			if elapsed := time.Since(start); elapsed < hold {
				t.Fatalf("answered after %s: the latency did not hold the request, the test proves nothing", elapsed)
			}
			seen := s.Received(tt.receiver)
			if len(seen) != 1 || seen[0].Path != tt.path || seen[0].Status != tt.status || seen[0].Time.After(start.Add(hold/2)) {
				t.Fatalf("after the answer: %+v, want one %s answered %d, timed at its arrival", seen, tt.path, tt.status)
			}
		})
	}
}
