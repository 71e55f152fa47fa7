package simulator

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Webhook signature headers: X-Agent-Signature is "sha256=" + hex
// HMAC-SHA256(secret, X-Agent-Timestamp + "." + body).
const (
	HeaderSignature = "X-Agent-Signature"
	HeaderTimestamp = "X-Agent-Timestamp"
)

// SignatureTolerance is how far X-Agent-Timestamp may be from the
// simulator's clock (replay protection).
const SignatureTolerance = 5 * time.Minute

// Sign returns the X-Agent-Signature value for body sent at timestamp.
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp + "."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// annotate changes the request's recording under the lock.
func (s *Server) annotate(r *http.Request, fn func(rec *Received)) {
	if rec := received(r); rec != nil {
		s.update(func() { fn(rec) })
	}
}

func (s *Server) telegramFail(w http.ResponseWriter, status int, desc string) {
	writeError(w, ServiceTelegram, apiError{Status: status, Message: desc}, s.now())
}

// telegramToken checks the "bot<token>" path segment.
func (s *Server) telegramToken(w http.ResponseWriter, r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.PathValue("bot"), "bot")
	if !ok || tok == "" {
		s.telegramFail(w, http.StatusNotFound, "Not Found")
		return false
	}
	if !s.authorized(ServiceTelegram, tok) {
		s.telegramFail(w, http.StatusUnauthorized, "Unauthorized")
		return false
	}
	return true
}

var telegramBot = map[string]any{"id": 7000000001, "is_bot": true, "first_name": "Agent Simulator", "username": "agent_sim_bot"}

func (s *Server) telegramMe(w http.ResponseWriter, r *http.Request) {
	if s.telegramToken(w, r) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "result": telegramBot})
	}
}

// telegramParams reads a Bot API call's parameters: JSON, a form or the query.
func telegramParams(r *http.Request) (map[string]string, error) {
	params := map[string]string{}
	for k, v := range r.URL.Query() {
		params[k] = v[0]
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var m map[string]json.RawMessage
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("can't parse JSON object: %w", err)
		}
		for k, raw := range m {
			var str string
			if json.Unmarshal(raw, &str) == nil {
				params[k] = str
			} else {
				params[k] = string(raw)
			}
		}
	case "multipart/form-data":
		if err := r.ParseMultipartForm(maxBody); err != nil {
			return nil, err
		}
		for k, v := range r.MultipartForm.Value {
			params[k] = v[0]
		}
	default:
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		for k, v := range r.PostForm {
			params[k] = v[0]
		}
	}
	return params, nil
}

func (s *Server) telegram(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	s.annotate(r, func(rec *Received) { rec.Path = method })
	if !s.telegramToken(w, r) {
		return
	}
	switch strings.ToLower(method) {
	case "getme":
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "result": telegramBot})
		return
	case "sendmessage":
	default:
		s.telegramFail(w, http.StatusNotFound, "Not Found: method not found")
		return
	}
	p, err := telegramParams(r)
	if err != nil {
		s.telegramFail(w, http.StatusBadRequest, "Bad Request: "+err.Error())
		return
	}
	s.annotate(r, func(rec *Received) {
		rec.Fields = map[string]string{"chat_id": p["chat_id"], "text": p["text"], "parse_mode": p["parse_mode"]}
	})
	switch {
	case p["chat_id"] == "":
		s.telegramFail(w, http.StatusBadRequest, "Bad Request: chat_id is empty")
		return
	case strings.TrimSpace(p["text"]) == "":
		s.telegramFail(w, http.StatusBadRequest, "Bad Request: message text is empty")
		return
	case utf8.RuneCountInString(p["text"]) > 4096:
		s.telegramFail(w, http.StatusBadRequest, "Bad Request: message is too long")
		return
	case !slices.Contains([]string{"", "HTML", "Markdown", "MarkdownV2"}, p["parse_mode"]):
		s.telegramFail(w, http.StatusBadRequest, "Bad Request: unsupported parse_mode")
		return
	}
	chat := map[string]any{"type": "private"}
	if id, err := strconv.ParseInt(p["chat_id"], 10, 64); err == nil {
		chat["id"] = id
		if id < 0 {
			chat["type"] = "group"
			chat["title"] = "Alerts"
		}
	} else {
		chat["id"] = int64(-1001000000001)
		chat["type"] = "channel"
		chat["username"] = strings.TrimPrefix(p["chat_id"], "@")
	}
	s.mu.Lock()
	s.msgID++
	id := s.msgID
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "result": map[string]any{
		"message_id": id,
		"from":       telegramBot,
		"chat":       chat,
		"date":       s.now().Unix(),
		"text":       p["text"],
	}})
}

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	body, _ := io.ReadAll(r.Body)
	s.annotate(r, func(rec *Received) { rec.Path = name })
	s.mu.Lock()
	secret := s.sc.Services[ServiceWebhook].Secret
	s.mu.Unlock()
	if secret != "" {
		ok := s.verify(secret, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body)
		s.annotate(r, func(rec *Received) { rec.Verified = &ok })
		if !ok {
			writeError(w, ServiceWebhook, apiError{Status: http.StatusUnauthorized, Message: "invalid signature"}, s.now())
			return
		}
	}
	if !json.Valid(body) {
		writeError(w, ServiceWebhook, apiError{Status: http.StatusBadRequest, Message: "body is not JSON"}, s.now())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// verify checks a webhook signature and that its timestamp (Unix seconds or
// milliseconds, or RFC 3339) is recent.
func (s *Server) verify(secret, ts, sig string, body []byte) bool {
	if ts == "" || sig == "" {
		return false
	}
	var at time.Time
	if n, err := strconv.ParseInt(ts, 10, 64); err == nil {
		if n > 1e12 {
			at = time.UnixMilli(n)
		} else {
			at = time.Unix(n, 0)
		}
	} else if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		at = t
	} else {
		return false
	}
	if d := s.now().Sub(at); d > SignatureTolerance || d < -SignatureTolerance {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(sig), []byte(Sign(secret, ts, body))) == 1
}

var (
	a1         = regexp.MustCompile(`^\$?[A-Za-z]{1,3}\$?[0-9]*(:\$?[A-Za-z]{1,3}\$?[0-9]*)?$`)
	plainSheet = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
)

// sheetName returns the sheet a range is on ("Sheet1" when it names none).
func sheetName(rng string) string {
	name := rng
	if i := strings.LastIndex(rng, "!"); i >= 0 {
		name = rng[:i]
	} else if a1.MatchString(rng) {
		return "Sheet1"
	}
	if len(name) > 1 && name[0] == '\'' && name[len(name)-1] == '\'' {
		name = strings.ReplaceAll(name[1:len(name)-1], "''", "'")
	}
	return name
}

func quoteSheet(name string) string {
	if plainSheet.MatchString(name) {
		return name
	}
	return "'" + strings.ReplaceAll(name, "'", "''") + "'"
}

// column returns the A1 letters of the 1-based column n.
func column(n int) string {
	var b []byte
	for n > 0 {
		n--
		b = append([]byte{byte('A' + n%26)}, b...)
		n /= 26
	}
	return string(b)
}

func (s *Server) sheetsFail(w http.ResponseWriter, status int, msg string) {
	writeError(w, ServiceSheets, apiError{Status: status, Message: msg}, s.now())
}

func (s *Server) sheetsAppend(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rng, ok := strings.CutSuffix(r.PathValue("rangeop"), ":append")
	q := r.URL.Query()
	s.annotate(r, func(rec *Received) {
		rec.Path = rng
		rec.Fields = map[string]string{
			"spreadsheet_id":     id,
			"range":              rng,
			"value_input_option": q.Get("valueInputOption"),
			"insert_data_option": q.Get("insertDataOption"),
		}
	})
	if !ok {
		s.sheetsFail(w, http.StatusNotFound, "Requested entity was not found.")
		return
	}
	vio := q.Get("valueInputOption")
	switch {
	case vio == "":
		s.sheetsFail(w, http.StatusBadRequest, "'valueInputOption' is required but not specified")
		return
	case vio != "RAW" && vio != "USER_ENTERED":
		s.sheetsFail(w, http.StatusBadRequest, fmt.Sprintf("Invalid value at 'value_input_option' (%s)", vio))
		return
	}
	if ido := q.Get("insertDataOption"); ido != "" && ido != "INSERT_ROWS" && ido != "OVERWRITE" {
		s.sheetsFail(w, http.StatusBadRequest, fmt.Sprintf("Invalid value at 'insert_data_option' (%s)", ido))
		return
	}
	var req struct {
		Range          string  `json:"range"`
		MajorDimension string  `json:"majorDimension"`
		Values         [][]any `json:"values"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
		s.sheetsFail(w, http.StatusBadRequest, "Invalid JSON payload received. "+err.Error())
		return
	}
	if req.MajorDimension != "" && req.MajorDimension != "ROWS" && req.MajorDimension != "COLUMNS" {
		s.sheetsFail(w, http.StatusBadRequest, fmt.Sprintf("Invalid value at 'data.major_dimension' (%s)", req.MajorDimension))
		return
	}
	rows, cols := len(req.Values), 0
	for _, row := range req.Values {
		cols = max(cols, len(row))
	}
	if req.MajorDimension == "COLUMNS" {
		rows, cols = cols, rows
	}
	s.annotate(r, func(rec *Received) { rec.Fields["rows"] = strconv.Itoa(rows) })

	sheet := sheetName(rng)
	key := id + "\x00" + sheet
	s.mu.Lock()
	before := s.sheets[key]
	s.sheets[key] = before + rows
	s.mu.Unlock()

	qs := quoteSheet(sheet)
	out := map[string]any{"spreadsheetId": id}
	width := column(cmp.Or(cols, 1))
	if before > 0 {
		out["tableRange"] = fmt.Sprintf("%s!A1:%s%d", qs, width, before)
	}
	updates := map[string]any{"spreadsheetId": id}
	if rows > 0 {
		updates["updatedRange"] = fmt.Sprintf("%s!A%d:%s%d", qs, before+1, width, before+rows)
		updates["updatedRows"] = rows
		updates["updatedColumns"] = cols
		updates["updatedCells"] = rows * cols
	}
	out["updates"] = updates
	writeJSON(w, http.StatusOK, out)
}
