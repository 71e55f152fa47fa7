package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
	"github.com/callagent/agent/sink/sinktest"
)

// plugin is the real telegram binary, built once for the package.
var plugin string

func TestMain(m *testing.M) { os.Exit(sinktest.Main(m, &plugin, ".", "telegram")) }

const token = "123456:TEST-token_secret"

// sent is one sendMessage request the fake API accepted or refused.
type sent struct {
	ChatID    string `json:"chat_id"`
	Text      string `json:"text"`
	ParseMode string `json:"parse_mode"`
}

// reply is a scripted Bot API answer.
type reply struct {
	status int
	body   string
}

// botAPI is a fake Telegram Bot API on 127.0.0.1. It answers sendMessage
// with the scripted replies in order, then with success, and refuses texts
// over 4096 UTF-16 units as Telegram does.
type botAPI struct {
	*httptest.Server
	mu      sync.Mutex
	replies []reply
	sent    []sent
	calls   int
}

func newBotAPI(t *testing.T, replies ...reply) *botAPI {
	b := &botAPI{replies: replies}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	return b
}

func (b *botAPI) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/bot" + token + "/getMe":
		fmt.Fprint(w, `{"ok":true,"result":{"id":123456,"is_bot":true,"username":"agent_bot"}}`)
		return
	case "/bot" + token + "/sendMessage":
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"ok":false,"error_code":404,"description":"Not Found"}`)
		return
	}
	b.calls++
	var m sent
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"ok":false,"error_code":400,"description":%q}`, err.Error())
		return
	}
	if len(b.replies) > 0 {
		rep := b.replies[0]
		b.replies = b.replies[1:]
		w.WriteHeader(rep.status)
		fmt.Fprint(w, rep.body)
		return
	}
	if len(utf16.Encode([]rune(parsed(m.Text, m.ParseMode)))) > 4096 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"ok":false,"error_code":400,"description":"Bad Request: message is too long"}`)
		return
	}
	b.sent = append(b.sent, m)
	fmt.Fprintf(w, `{"ok":true,"result":{"message_id":%d}}`, len(b.sent))
}

// parsed is the text as Telegram measures it: after entity parsing, without
// markup and escapes.
func parsed(text, mode string) string {
	switch mode {
	case "HTML":
		return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(text, ""))
	case "MarkdownV2":
		var b strings.Builder
		escaped := false
		for _, r := range text {
			switch {
			case escaped:
				b.WriteRune(r)
				escaped = false
			case r == '\\':
				escaped = true
			case r == '*':
			default:
				b.WriteRune(r)
			}
		}
		return b.String()
	}
	return text
}

func (b *botAPI) messages() []sent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sent(nil), b.sent...)
}

func (b *botAPI) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

func config(api string, extra ...any) map[string]any {
	return sinktest.With(map[string]any{"api_url": api, "token": token, "chat_id": -1001234567890, "rate": 1000}, extra...)
}

func alert(t *testing.T, service, summary, message string) sink.Record {
	a := sinktest.Alert(service, summary)
	a.Message = message
	return sinktest.Record(t, a)
}

func TestDeliversAlertsInOneMessage(t *testing.T) {
	api := newBotAPI(t)
	p := sinktest.Start(t, plugin, config(api.URL, "parse_mode", "HTML"))
	batch := []sink.Record{
		alert(t, "elevenlabs", "elevenlabs circuit breaker opened", "5 consecutive failures (503 <Service Unavailable>)"),
		alert(t, "crm", "crm error rate above 50%", ""),
	}
	sinktest.DeliverAll(t, p, batch)
	msgs := api.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.ChatID != "-1001234567890" || m.ParseMode != "HTML" {
		t.Errorf("chat_id %q parse_mode %q", m.ChatID, m.ParseMode)
	}
	for _, want := range []string{
		"<b>🔴 CRITICAL: elevenlabs circuit breaker opened</b>",
		"5 consecutive failures (503 &lt;Service Unavailable&gt;)",
		"\n\n<b>🔴 CRITICAL: crm error rate above 50%</b>",
		"labels: campaign=spring-renewals",
	} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, m.Text)
		}
	}
}

func TestClassifiesAnswers(t *testing.T) {
	tests := []struct {
		name    string
		reply   reply
		status  sink.Status
		after   time.Duration
		closed  bool // the API is down: connection refused
		inText  string
		notSent bool
	}{
		{name: "429 retry_after", reply: reply{429, `{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}`},
			status: sink.Retryable, after: 7 * time.Second, inText: "Too Many Requests"},
		{name: "400 chat not found", reply: reply{400, `{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}`},
			status: sink.Permanent, inText: "chat not found"},
		{name: "403 bot blocked", reply: reply{403, `{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}`},
			status: sink.Permanent, inText: "bot was blocked"},
		{name: "400 group migrated", reply: reply{400, `{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1009999}}`},
			status: sink.Permanent, inText: "-1009999"},
		{name: "500", reply: reply{500, `{"ok":false,"error_code":500,"description":"Internal Server Error"}`},
			status: sink.Retryable, inText: "500"},
		{name: "502 html from a proxy", reply: reply{502, `<html><body>Bad Gateway</body></html>`},
			status: sink.Retryable, inText: "Bad Gateway"},
		{name: "connection refused", closed: true, status: sink.Retryable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newBotAPI(t, tt.reply)
			if tt.closed {
				api.Close()
			}
			p := sinktest.Start(t, plugin, config(api.URL))
			res, err := p.Deliver(t.Context(), []sink.Record{alert(t, "llm", "llm down", "")})
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Status != tt.status || r.RetryAfter != tt.after || !strings.Contains(r.Reason, tt.inText) {
				t.Errorf("result %+v, want %v after %v with %q", r, tt.status, tt.after, tt.inText)
			}
			if strings.Contains(r.Reason, token) {
				t.Errorf("reason leaks the token: %s", r.Reason)
			}
		})
	}
}

func TestRateLimitBlocksTheBot(t *testing.T) {
	api := newBotAPI(t, reply{429, `{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 30","parameters":{"retry_after":30}}`})
	p := sinktest.Start(t, plugin, config(api.URL))
	res, err := p.Deliver(t.Context(), []sink.Record{alert(t, "llm", "llm down", "")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != sink.Retryable || res[0].RetryAfter != 30*time.Second {
		t.Fatalf("first: %+v", res[0])
	}
	// While the bot is blocked, the sink does not call the API at all.
	res, err = p.Deliver(t.Context(), []sink.Record{alert(t, "crm", "crm down", "")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != sink.Retryable || res[0].RetryAfter <= 25*time.Second || res[0].RetryAfter > 30*time.Second {
		t.Errorf("while blocked: %+v", res[0])
	}
	if n := api.callCount(); n != 1 {
		t.Errorf("%d calls to sendMessage, want 1", n)
	}
}

func TestSplitsLongMessages(t *testing.T) {
	// 3000 lines of text with astral characters, which count twice in UTF-16.
	var long strings.Builder
	for i := range 300 {
		fmt.Fprintf(&long, "line %03d 📞 provider said: 503 Service Unavailable\n", i)
	}
	huge := strings.Repeat("x", 9000) // one line longer than two messages

	tests := []struct {
		name     string
		batch    func(t *testing.T) []sink.Record
		messages int
	}{
		{"long message", func(t *testing.T) []sink.Record {
			return []sink.Record{alert(t, "tts", "tts failing", strings.TrimSpace(long.String()))}
		}, 4},
		{"line longer than a message", func(t *testing.T) []sink.Record {
			return []sink.Record{alert(t, "tts", "tts failing", huge)}
		}, 3},
		{"many alerts", func(t *testing.T) []sink.Record {
			var b []sink.Record
			for i := range 40 {
				b = append(b, alert(t, fmt.Sprintf("svc%02d", i), "service down", strings.Repeat("detail ", 40)))
			}
			return b
		}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newBotAPI(t)
			p := sinktest.Start(t, plugin, config(api.URL, "parse_mode", "MarkdownV2"))
			batch := tt.batch(t)
			sinktest.DeliverAll(t, p, batch)
			msgs := api.messages()
			if len(msgs) != tt.messages {
				t.Errorf("%d messages, want %d", len(msgs), tt.messages)
			}
			var all strings.Builder
			for _, m := range msgs {
				all.WriteString(m.Text)
			}
			// Every record's content arrived: no line was lost in the split.
			for i := range batch {
				a := mustAlert(t, batch[i])
				if !strings.Contains(unescape(all.String()), a.Service) {
					t.Errorf("record %d (%s) missing", i, a.Service)
				}
			}
			if tt.name == "long message" && !strings.Contains(unescape(all.String()), "line 299 📞") {
				t.Error("last line missing")
			}
		})
	}
}

func mustAlert(t *testing.T, r sink.Record) *events.Alert {
	ev, err := events.Decode(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ev.(*events.Alert)
}

func unescape(s string) string { return strings.ReplaceAll(s, "\\", "") }

func TestPartialFailure(t *testing.T) {
	// The second message fails: records wholly in the first are delivered,
	// the rest are retryable.
	api := newBotAPI(t, reply{200, `{"ok":true,"result":{"message_id":1}}`},
		reply{500, `{"ok":false,"error_code":500,"description":"Internal Server Error"}`})
	p := sinktest.Start(t, plugin, config(api.URL))
	var batch []sink.Record
	for i := range 40 {
		batch = append(batch, alert(t, fmt.Sprintf("svc%02d", i), "service down", strings.Repeat("detail ", 40)))
	}
	res, err := p.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	delivered, retryable := 0, 0
	for _, r := range res {
		switch r.Status {
		case sink.Delivered:
			delivered++
		case sink.Retryable:
			retryable++
		}
	}
	if delivered == 0 || retryable == 0 || delivered+retryable != len(batch) {
		t.Errorf("delivered %d retryable %d of %d", delivered, retryable, len(batch))
	}
	if res[0].Status != sink.Delivered || res[len(res)-1].Status != sink.Retryable {
		t.Errorf("first %v last %v", res[0], res[len(res)-1])
	}
}

func TestHealthAndConfig(t *testing.T) {
	api := newBotAPI(t)
	p := sinktest.Start(t, plugin, config(api.URL))
	if err := p.Health(t.Context()); err != nil {
		t.Errorf("health: %v", err)
	}
	if err := p.Configure(t.Context(), sinktest.JSON(t, map[string]any{"api_url": api.URL, "token": "654321:other", "chat_id": "@alerts", "rate": 1000})); err != nil {
		t.Fatal(err)
	}
	if err := p.Health(t.Context()); err == nil || strings.Contains(err.Error(), "654321") {
		t.Errorf("health with a wrong token: %v", err)
	}

	for name, cfg := range map[string]map[string]any{
		"no token":         {"chat_id": 1},
		"no chat":          {"token": token},
		"bad parse mode":   {"token": token, "chat_id": 1, "parse_mode": "BBCode"},
		"misspelt key":     {"token": token, "chatid": 1},
		"bad api url":      {"token": token, "chat_id": 1, "api_url": "ftp://x"},
		"negative rate":    {"token": token, "chat_id": 1, "rate": -1},
		"bad timeout":      {"token": token, "chat_id": 1, "timeout": "soon"},
		"token with slash": {"token": "1/2", "chat_id": 1},
	} {
		t.Run(name, func(t *testing.T) {
			if err := p.Configure(t.Context(), sinktest.JSON(t, cfg)); !errors.Is(err, sink.ErrConfig) {
				t.Errorf("configure: %v, want ErrConfig", err)
			}
		})
	}
}
