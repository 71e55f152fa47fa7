package simulator

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAdminScenarioSwitch(t *testing.T) {
	s := start(t, "name: start\nservices:\n  llm: {api_key: sk-old}\n", nil)
	put := func(body string) result {
		return req{method: "PUT", path: "/admin/scenario", body: body}.do(t, s, nil)
	}
	if r := chatReq("c", "sk-old", "hi").do(t, s, nil); r.status != 200 {
		t.Fatalf("before rotation: %d", r.status)
	}

	// A key rotation: the old key is now refused as invalid_api_key.
	if r := put("name: rotated\nservices:\n  llm: {api_key: sk-new}\n"); r.status != 200 || r.json(t)["name"] != "rotated" {
		t.Fatalf("PUT yaml: %d %s", r.status, r.body)
	}
	r := chatReq("c", "sk-old", "hi").do(t, s, nil)
	if r.status != 401 || dig(r.json(t), "error", "code") != "invalid_api_key" {
		t.Errorf("old key after rotation: %d %s", r.status, r.body)
	}
	if r := chatReq("c", "sk-new", "hi").do(t, s, nil); r.status != 200 {
		t.Errorf("new key: %d", r.status)
	}

	// JSON works as well, and faults take effect at once.
	if r := put(`{"name":"outage","services":{"llm":{"faults":[{"kind":"status","status":503}]}}}`); r.status != 200 {
		t.Fatalf("PUT json: %d %s", r.status, r.body)
	}
	if r := chatReq("c", "any", "hi").do(t, s, nil); r.status != 503 {
		t.Errorf("after switching to an outage: %d", r.status)
	}

	// A bad scenario is refused with its reason, and the current one stays.
	r = put("name: bad\nservices:\n  llm: {faults: [{kind: meltdown}]}\n")
	if msg, _ := r.json(t)["error"].(string); r.status != 400 || !strings.Contains(msg, "meltdown") || !strings.Contains(msg, "services.llm.faults[0].kind") {
		t.Errorf("bad scenario: %d %s", r.status, r.body)
	}
	if got := s.Scenario().Name; got != "outage" {
		t.Errorf("scenario after a refused PUT = %q", got)
	}

	// GET shows the scenario without its secrets.
	s.SetScenario(Scenario{Name: "keys", Services: map[string]Service{ServiceLLM: {APIKey: "sk-secret"}}})
	r = req{method: "GET", path: "/admin/scenario"}.do(t, s, nil)
	if r.status != 200 || strings.Contains(string(r.body), "sk-secret") || dig(r.json(t), "name") != "keys" {
		t.Errorf("GET scenario: %d %s", r.status, r.body)
	}
}

func TestAdminCountersAndReset(t *testing.T) {
	s := start(t, "name: x\nservices:\n  llm: {faults: [{kind: status, status: 503, count: 1}]}\n", nil)
	chatReq("call-1", "sk", "hi").do(t, s, nil) // 503
	chatReq("call-1", "sk", "hi").do(t, s, nil) // 200
	ttsReq("call-1", "hi").do(t, s, nil)
	telegramReq("alert").do(t, s, nil)

	get := func(path string, v any) {
		t.Helper()
		r := req{method: "GET", path: path}.do(t, s, nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	var effects map[string]map[string]int
	get("/admin/side-effects", &effects)
	if effects["llm"]["call-1"] != 1 || effects["elevenlabs"]["call-1"] != 1 {
		t.Errorf("side effects = %v", effects)
	}
	var requests map[string]map[string]int
	get("/admin/requests", &requests)
	if requests["llm"]["503"] != 1 || requests["llm"]["200"] != 1 || requests["telegram"]["200"] != 1 {
		t.Errorf("requests = %v", requests)
	}
	var all map[string][]Received
	get("/admin/received", &all)
	if len(all["telegram"]) != 1 || len(all["smtp"]) != 0 {
		t.Errorf("received = %v", all)
	}
	var tg []Received
	get("/admin/received/telegram", &tg)
	if len(tg) != 1 || tg[0].Fields["text"] != "alert" {
		t.Errorf("received/telegram = %+v", tg)
	}
	if r := (req{method: "GET", path: "/admin/received/fax"}).do(t, s, nil); r.status != 404 {
		t.Errorf("unknown receiver: %d", r.status)
	}
	var peak map[string]any
	get("/admin/peak?service=llm&window=1m", &peak)
	if peak["peak"] != float64(2) {
		t.Errorf("peak = %v", peak)
	}

	if r := (req{method: "POST", path: "/admin/reset"}).do(t, s, nil); r.status != 200 {
		t.Fatalf("reset: %d", r.status)
	}
	if n := s.SideEffects(ServiceLLM, "call-1"); n != 0 || len(s.Received(ServiceTelegram)) != 0 || len(s.Requests(ServiceLLM)) != 0 {
		t.Errorf("after reset: effects %d, %d received, requests %v", n, len(s.Received(ServiceTelegram)), s.Requests(ServiceLLM))
	}
	// The fault counters start again: the scenario plays from the top.
	if r := chatReq("call-1", "sk", "hi").do(t, s, nil); r.status != 503 {
		t.Errorf("first request after reset: %d, want 503 again", r.status)
	}
	var index map[string]any
	get("/", &index)
	if dig(index, "urls", "elevenlabs") != s.URL()+"/elevenlabs" || index["smtp"] != s.SMTPAddr() {
		t.Errorf("index = %v", index)
	}
}
