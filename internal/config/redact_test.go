package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

// secretConfig has a distinctive secret in every place one can hide, and
// returns them with the non-secret values that must still show.
func secretConfig() (c Config, secrets, kept []string) {
	c = Default()
	c.NATS.URL = "nats://agent:NATS-URL-PASS@127.0.0.1:4222,nats://127.0.0.1:4223"
	c.NATS.User, c.NATS.Password = "agent", "NATS-PASSWORD"
	c.NATS.Roles = map[string]Credentials{
		RoleCaller: {User: "caller", Password: "ROLE-CALLER-PASSWORD"},
		RoleTail:   {Creds: "-----BEGIN NATS USER JWT-----\nINLINE-CREDS-JWT\n------END NATS USER JWT------\n"},
		RoleAdmin:  {Creds: "/etc/agent/admin.creds"},
	}
	el := c.Services[ServiceElevenLabs]
	el.APIKey = "sk-ELEVEN-API-KEY"
	el.Options = map[string]string{"voice_id": "VOICE-KEPT", "webhook_secret": "EL-WEBHOOK-SECRET"}
	c.Services[ServiceElevenLabs] = el
	crm := c.Services[ServiceCRM]
	crm.BaseURL = "https://crmuser:CRM-URL-PASS@crm.example.com/v3?hapikey=HUBSPOT-HAPIKEY&portal=PORTAL-KEPT&api_key=CRM-QUERY-KEY"
	crm.Options = map[string]string{"access_token": "CRM-ACCESS-TOKEN", "PrivateKey": "CRM-PRIVATEKEY-CAMEL", "private_key": "CRM-PRIVATE-KEY"}
	c.Services[ServiceCRM] = crm
	llm := c.Services[ServiceLLM]
	llm.Options = map[string]string{"ApiKey": "LLM-APIKEY-MIXED-CASE", "model": "MODEL-KEPT"}
	c.Services[ServiceLLM] = llm
	c.Sinks = []Sink{
		{Name: "telegram", Plugin: "telegram", Config: map[string]any{
			"bot_token": "TELEGRAM-BOT-TOKEN",
			"chat_id":   "CHAT-KEPT",
		}},
		{Name: "webhook", Plugin: "webhook", Config: map[string]any{
			"url":     "https://hooks.example.com/alert?token=WEBHOOK-URL-TOKEN&team=TEAM-KEPT",
			"headers": map[string]any{"Authorization": "Bearer WEBHOOK-AUTH-HEADER", "X-Team": "HEADER-KEPT"},
			"targets": []any{map[string]any{"url": "https://a.example.com", "signing_secret": "WEBHOOK-LIST-SECRET"}},
		}},
		{Name: "email", Plugin: "email", Config: map[string]any{
			"smtp":     map[string]any{"host": "SMTP-HOST-KEPT", "password": "SMTP-PASSWORD"},
			"password": "",
		}},
		{Name: "sheets", Plugin: "sheets", Kind: "log", Config: map[string]any{
			"credentials":      map[string]any{"type": "service_account", "private_key": "SHEETS-PRIVATE-KEY", "client_email": "SA-EMAIL"},
			"credentials_json": "SHEETS-CREDENTIALS-JSON",
		}},
	}
	secrets = []string{
		"NATS-URL-PASS", "NATS-PASSWORD", "ROLE-CALLER-PASSWORD", "INLINE-CREDS-JWT",
		"sk-ELEVEN-API-KEY", "EL-WEBHOOK-SECRET", "CRM-URL-PASS", "CRM-QUERY-KEY", "HUBSPOT-HAPIKEY", "CRM-ACCESS-TOKEN", "CRM-PRIVATE-KEY", "CRM-PRIVATEKEY-CAMEL",
		"LLM-APIKEY-MIXED-CASE", "TELEGRAM-BOT-TOKEN", "WEBHOOK-URL-TOKEN", "WEBHOOK-AUTH-HEADER", "WEBHOOK-LIST-SECRET",
		"SMTP-PASSWORD", "SHEETS-PRIVATE-KEY", "SA-EMAIL", "SHEETS-CREDENTIALS-JSON",
	}
	kept = []string{
		"agent", "4223", "/etc/agent/admin.creds", "VOICE-KEPT", "crm.example.com", "PORTAL-KEPT", "MODEL-KEPT",
		"CHAT-KEPT", "TEAM-KEPT", "HEADER-KEPT", "SMTP-HOST-KEPT", "crmuser",
	}
	return c, secrets, kept
}

// TestNoSecretPrinted prints the configuration every careless way.
func TestNoSecretPrinted(t *testing.T) {
	c, secrets, kept := secretConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	slogJSON := func(v any) string {
		var b bytes.Buffer
		slog.New(slog.NewJSONHandler(&b, nil)).Info("loaded", "config", v)
		return b.String()
	}
	slogText := func(v any) string {
		var b bytes.Buffer
		slog.New(slog.NewTextHandler(&b, nil)).Info("loaded", "config", v)
		return b.String()
	}
	yamlOut, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	outputs := []struct {
		name    string
		out     string
		hasKept bool // the output includes everything, so every kept value must show
	}{
		{"String", c.String(), true},
		{"YAML", string(yamlOut), true},
		{"%v", fmt.Sprintf("%v", c), true},
		{"%+v", fmt.Sprintf("%+v", c), true},
		{"%#v", fmt.Sprintf("%#v", c), true},
		{"%v pointer", fmt.Sprintf("%v", &c), true},
		{"%s", fmt.Sprintf("%s", c), true},
		{"slog JSON", slogJSON(c), true},
		{"slog text", slogText(c), true},
		{"slog JSON pointer", slogJSON(&c), true},
		{"%v Redacted", fmt.Sprintf("%v", c.Redacted()), true},
		{"%v NATS", fmt.Sprintf("%v", c.NATS), false},
		{"%+v NATS", fmt.Sprintf("%+v", c.NATS), false},
		{"%#v NATS", fmt.Sprintf("%#v", c.NATS), false},
		{"slog NATS", slogJSON(c.NATS), false},
		{"%v NATS.For", fmt.Sprintf("%v", c.NATS.For(RoleCaller)), false},
		{"%v Credentials", fmt.Sprintf("%v", c.NATS.Roles[RoleCaller]), false},
		{"%+v Credentials", fmt.Sprintf("%+v", c.NATS.Roles[RoleTail]), false},
		{"slog Credentials", slogJSON(c.NATS.Roles[RoleCaller]), false},
		{"%v roles map", fmt.Sprintf("%v", c.NATS.Roles), false},
		{"%v Service", fmt.Sprintf("%v", c.Services[ServiceCRM]), false},
		{"%+v Service", fmt.Sprintf("%+v", c.Services[ServiceElevenLabs]), false},
		{"%#v Service", fmt.Sprintf("%#v", c.Services[ServiceLLM]), false},
		{"%v services map", fmt.Sprintf("%v", c.Services), false},
		{"slog Service", slogJSON(c.Services[ServiceCRM]), false},
		{"slog text Service", slogText(c.Services[ServiceElevenLabs]), false},
		{"%v Sink", fmt.Sprintf("%v", c.Sinks[1]), false},
		{"%+v sinks", fmt.Sprintf("%+v", c.Sinks), false},
		{"slog Sink", slogJSON(c.Sinks[3]), false},
	}
	for _, o := range outputs {
		t.Run(o.name, func(t *testing.T) {
			for _, s := range secrets {
				if strings.Contains(o.out, s) {
					t.Errorf("secret %s printed:\n%s", s, o.out)
				}
			}
			if !strings.Contains(o.out, Mask) {
				t.Errorf("no %s in:\n%s", Mask, o.out)
			}
			if o.hasKept {
				for _, s := range kept {
					if !strings.Contains(o.out, s) {
						t.Errorf("non-secret %q masked or missing:\n%s", s, o.out)
					}
				}
			}
		})
	}
}

// TestRedactedIsACopy: redacting neither changes the original nor shares
// memory with it.
func TestRedactedIsACopy(t *testing.T) {
	c, secrets, _ := secretConfig()
	before := fmt.Sprintf("%#v", plain(reflect.ValueOf(c)))
	r := c.Redacted()
	if after := fmt.Sprintf("%#v", plain(reflect.ValueOf(c))); after != before {
		t.Fatal("Redacted changed the original")
	}
	all := fmt.Sprintf("%#v", plain(reflect.ValueOf(c)))
	for _, s := range secrets {
		if !strings.Contains(all, s) {
			t.Errorf("original lost secret %s", s)
		}
	}
	r.Services[ServiceCRM].Options["x"] = "y"
	r.Sinks[1].Config["headers"].(map[string]any)["X-Team"] = "changed"
	r.NATS.Roles[RoleCaller] = Credentials{}
	if _, ok := c.Services[ServiceCRM].Options["x"]; ok {
		t.Error("redacted options share the original map")
	}
	if c.Sinks[1].Config["headers"].(map[string]any)["X-Team"] != "HEADER-KEPT" {
		t.Error("redacted sink config shares the original map")
	}
	if c.NATS.Roles[RoleCaller].Password == "" {
		t.Error("redacted roles share the original map")
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:8900/crm", "http://127.0.0.1:8900/crm"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:pw@127.0.0.1:4222", "nats://user:******@127.0.0.1:4222"},
		{"nats://token-only@127.0.0.1:4222", "nats://******@127.0.0.1:4222"},
		{"https://user-only@x.example/", "https://user-only@x.example/"},
		{"https://x.example/a?token=abc&b=1", "https://x.example/a?token=******&b=1"},
		{"https://x.example/a?Api_Key=abc&token=", "https://x.example/a?Api_Key=******&token="},
		{"https://u:p@x.example/?secret=s#frag", "https://u:******@x.example/?secret=******#frag"},
		{"not a url", "not a url"},
		{"", ""},
		{"http://u:p@[::1:bad", Mask},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := redactURL(tt.in); got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	in := "nats://a:pw1@h1:4222, nats://b:pw2@h2:4222,nats://c:pw3@h3:4222"
	want := "nats://a:******@h1:4222,nats://b:******@h2:4222,nats://c:******@h3:4222"
	if got := RedactURLs(in); got != want {
		t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
	}
}

func TestIsSecretKey(t *testing.T) {
	for key, want := range map[string]bool{
		"api_key": true, "APIKEY": true, "bot_token": true, "smtp_password": true, "client_secret": true,
		"credentials_file": true, "private_key": true, "PrivateKey": true, "Authorization": true, "passwd": true,
		"voice_id": false, "model": false, "from_number": false, "url": false, "chat_id": false,
	} {
		if got := IsSecretKey(key); got != want {
			t.Errorf("IsSecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}
