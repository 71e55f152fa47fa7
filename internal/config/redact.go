package config

import (
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// Mask replaces every non-empty secret when configuration is printed.
const Mask = "******"

// secretWords mark a free-form key (sinks[].config, services.*.options, a URL
// query parameter) as holding a secret.
var secretWords = []string{"token", "password", "passwd", "secret", "api_key", "apikey", "credentials", "private_key", "privatekey", "authorization"}

// IsSecretKey reports whether a free-form key names a secret: it contains
// token, password, secret, api_key, apikey, credentials, private_key (or
// passwd, privatekey, authorization), in any case.
func IsSecretKey(key string) bool {
	key = strings.ToLower(key)
	for _, w := range secretWords {
		if strings.Contains(key, w) {
			return true
		}
	}
	return false
}

// Redacted returns a deep copy of c with every secret masked: API keys,
// passwords, credentials given inline, secret-named keys of sinks[].config and
// services.*.options, and passwords or secret query parameters inside URLs.
// Nothing in the copy shares memory with c.
func (c Config) Redacted() Config {
	out := c
	out.NATS = c.NATS.Redacted()
	out.Media.SigningKey = mask(c.Media.SigningKey)
	if c.Services != nil {
		out.Services = make(map[string]Service, len(c.Services))
		for name, s := range c.Services {
			out.Services[name] = s.Redacted()
		}
	}
	if c.Sinks != nil {
		out.Sinks = make([]Sink, len(c.Sinks))
		for i, s := range c.Sinks {
			out.Sinks[i] = s.Redacted()
		}
	}
	return out
}

// Redacted returns a copy of n with its and its roles' secrets masked.
func (n NATS) Redacted() NATS {
	out := n
	out.URL = RedactURLs(n.URL)
	creds := Credentials{User: n.User, Password: n.Password, Creds: n.Creds}.Redacted()
	out.Password, out.Creds = creds.Password, creds.Creds
	if n.Roles != nil {
		out.Roles = make(map[string]Credentials, len(n.Roles))
		for role, c := range n.Roles {
			out.Roles[role] = c.Redacted()
		}
	}
	return out
}

// Redacted returns c with the password masked, and Creds masked when it holds
// a credentials file's content rather than its path.
func (c Credentials) Redacted() Credentials {
	c.Password = mask(c.Password)
	if inlineCreds(c.Creds) {
		c.Creds = Mask
	}
	return c
}

// inlineCreds tells credentials content (a JWT and an nkey seed) from a path.
func inlineCreds(s string) bool {
	return strings.ContainsAny(s, "\n\r") || strings.Contains(s, "-----BEGIN") ||
		strings.HasPrefix(s, "SU") && len(s) == 58 || strings.HasPrefix(s, "eyJ")
}

// Redacted returns a copy of s with the API key, secret options and URL
// passwords masked.
func (s Service) Redacted() Service {
	s.APIKey = mask(s.APIKey)
	s.BaseURL = redactURL(s.BaseURL)
	if s.Options != nil {
		opts := make(map[string]string, len(s.Options))
		for k, v := range s.Options {
			if IsSecretKey(k) {
				opts[k] = mask(v)
			} else {
				opts[k] = redactURL(v)
			}
		}
		s.Options = opts
	}
	return s
}

// Redacted returns a deep copy of s with secret-named keys of its config
// masked, at any depth.
func (s Sink) Redacted() Sink {
	s.Subjects = slices.Clone(s.Subjects)
	if s.Config != nil {
		s.Config = redactMap(s.Config)
	}
	return s
}

func redactMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if IsSecretKey(k) && !empty(v) {
			out[k] = Mask
			continue
		}
		out[k] = redactAny(v)
	}
	return out
}

func redactAny(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return redactMap(v)
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return redactMap(m)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redactAny(x)
		}
		return out
	case []string:
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = redactURL(x)
		}
		return out
	case string:
		return redactURL(v)
	default:
		// Other composite values (from a caller that built a Config in Go) are
		// copied through the printable tree, which holds no shared memory.
		if rv := reflect.ValueOf(v); rv.IsValid() {
			switch rv.Kind() {
			case reflect.Map, reflect.Slice, reflect.Pointer, reflect.Struct:
				return redactAny(toMap(plain(rv)))
			}
		}
		return v
	}
}

func empty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Map, reflect.Slice:
		return rv.Len() == 0
	}
	return false
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return Mask
}

// redactURL masks the password and any secret-named query parameter of a URL;
// anything that is not an absolute URL comes back as it is.
// natsSchemes are the URL schemes of NATS servers, where a user name
// without a password is a token.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// RedactURLs masks the password in every URL of a comma-separated list (a
// NATS cluster's server list), keeping user names and hosts so that an
// error still says where it tried to connect.
func RedactURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		urls[i] = redactURL(strings.TrimSpace(u))
	}
	return strings.Join(urls, ",")
}

func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Unparseable yet URL-shaped: it may still hold a password.
		if strings.Contains(s, "@") {
			return Mask
		}
		return s
	}
	changed := false
	var userinfo string
	if u.User != nil {
		userinfo = u.User.Username()
		switch _, ok := u.User.Password(); {
		case ok:
			userinfo += ":" + Mask
			changed = true
		case natsSchemes[u.Scheme]:
			// nats://secret@host is token authentication: the
			// "user" is the token.
			userinfo = Mask
			changed = true
		}
		userinfo += "@"
		u.User = nil
	}
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, v, _ := strings.Cut(p, "=")
			name, err := url.QueryUnescape(k)
			if err != nil {
				name = k
			}
			if IsSecretKey(name) && v != "" {
				params[i] = k + "=" + Mask
				changed = true
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	if !changed {
		return s
	}
	out := u.String()
	if userinfo != "" {
		scheme, rest, _ := strings.Cut(out, "://")
		out = scheme + "://" + userinfo + rest
	}
	return out
}

// String prints the redacted configuration as YAML, so a careless %v or
// %+v shows no secret.
func (c Config) String() string {
	b, err := c.YAML()
	if err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return string(b)
}

// GoString keeps %#v redacted too.
func (c Config) GoString() string {
	type fields Config // no methods: fmt prints the fields
	return fmt.Sprintf("%#v", fields(c.Redacted()))
}

// YAML is the redacted configuration as a YAML document, keys named and
// ordered as in config.example.yaml.
func (c Config) YAML() ([]byte, error) {
	return toYAML(plain(reflect.ValueOf(c.Redacted())))
}

// LogValue logs the redacted configuration as nested groups.
func (c Config) LogValue() slog.Value { return toSlog(plain(reflect.ValueOf(c.Redacted()))) }

// String prints the redacted NATS section.
func (n NATS) String() string { return oneLine(n.Redacted()) }

// GoString keeps %#v redacted.
func (n NATS) GoString() string {
	type fields NATS
	return fmt.Sprintf("%#v", fields(n.Redacted()))
}

// LogValue logs the redacted NATS section.
func (n NATS) LogValue() slog.Value { return toSlog(plain(reflect.ValueOf(n.Redacted()))) }

// String prints the redacted credentials.
func (c Credentials) String() string { return oneLine(c.Redacted()) }

// GoString keeps %#v redacted.
func (c Credentials) GoString() string {
	type fields Credentials
	return fmt.Sprintf("%#v", fields(c.Redacted()))
}

// LogValue logs the redacted credentials.
func (c Credentials) LogValue() slog.Value {
	return toSlog(plain(reflect.ValueOf(c.Redacted())))
}

// String prints the redacted service.
func (s Service) String() string { return oneLine(s.Redacted()) }

// GoString keeps %#v redacted.
func (s Service) GoString() string {
	type fields Service
	return fmt.Sprintf("%#v", fields(s.Redacted()))
}

// LogValue logs the redacted service.
func (s Service) LogValue() slog.Value { return toSlog(plain(reflect.ValueOf(s.Redacted()))) }

// String prints the redacted sink.
func (s Sink) String() string { return oneLine(s.Redacted()) }

// GoString keeps %#v redacted.
func (s Sink) GoString() string {
	type fields Sink
	return fmt.Sprintf("%#v", fields(s.Redacted()))
}

// LogValue logs the redacted sink.
func (s Sink) LogValue() slog.Value { return toSlog(plain(reflect.ValueOf(s.Redacted()))) }

// oneLine prints an already redacted value as {key: value, ...} on one line,
// koanf key names and all.
func oneLine(v any) string {
	var b strings.Builder
	writeFlow(&b, plain(reflect.ValueOf(v)))
	return b.String()
}

func writeFlow(b *strings.Builder, x any) {
	switch x := x.(type) {
	case section:
		b.WriteByte('{')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.key)
			b.WriteString(": ")
			writeFlow(b, e.val)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, v := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeFlow(b, v)
		}
		b.WriteByte(']')
	case string:
		if x == "" || strings.ContainsAny(x, ",:{}[]\"' ") {
			fmt.Fprintf(b, "%q", x)
		} else {
			b.WriteString(x)
		}
	default:
		fmt.Fprint(b, x)
	}
}

// keysOf is a helper for messages: the sorted keys of a map.
func keysOf[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
