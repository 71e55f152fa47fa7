package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/internal/simulator"
)

// admin reads the simulator's admin API: what its receivers got.
type admin struct {
	base   string // http://127.0.0.1:8900
	client *http.Client
}

func newAdmin(base string) *admin {
	return &admin{base: base, client: &http.Client{Timeout: 5 * time.Second}}
}

// received returns what one receiver (smtp, telegram, webhook, sheets) got.
func (a *admin) received(ctx context.Context, receiver string) ([]simulator.Received, error) {
	var out []simulator.Received
	if err := a.get(ctx, "/admin/received/"+receiver, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// get reads the JSON answer of GET path into out.
func (a *admin) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("simulator admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("simulator admin: GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("simulator admin: %s: %w", path, err)
	}
	return nil
}

// healthy reports whether the simulator answers its admin health check.
func (a *admin) healthy(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/admin/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// accepted keeps what the receiver answered with success: 2xx, or an SMTP
// 250. A refused attempt the sink retried is not a message received.
func accepted(rs []simulator.Received) []simulator.Received {
	var out []simulator.Received
	for _, r := range rs {
		if r.Status >= 200 && r.Status < 300 {
			out = append(out, r)
		}
	}
	return out
}

// telegramSends keeps the sendMessage calls (not the sink's getMe health
// checks).
func telegramSends(rs []simulator.Received) []simulator.Received {
	var out []simulator.Received
	for _, r := range rs {
		if strings.EqualFold(r.Path, "sendMessage") {
			out = append(out, r)
		}
	}
	return out
}

// signed reports whether a webhook POST carries a valid signature made with
// secret: the simulator's own check when it made one, else ours.
func signed(r simulator.Received, secret string) bool {
	if r.Verified != nil {
		return *r.Verified
	}
	ts, sig := header(r.Headers, simulator.HeaderTimestamp), header(r.Headers, simulator.HeaderSignature)
	return ts != "" && sig != "" && sig == simulator.Sign(secret, ts, []byte(r.Body))
}

func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// sheetRows counts the rows appended by the accepted Sheets requests.
func sheetRows(rs []simulator.Received) int {
	n := 0
	for _, r := range rs {
		if v, err := strconv.Atoi(r.Fields["rows"]); err == nil {
			n += v
			continue
		}
		// Without the parsed count, read the request body.
		var body struct {
			Values [][]any `json:"values"`
		}
		if json.Unmarshal([]byte(r.Body), &body) == nil {
			n += len(body.Values)
		}
	}
	return n
}

// firstLine is the first non-empty line of s, cut to n runes.
func firstLine(s string, n int) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return clip(l, n)
		}
	}
	return ""
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
