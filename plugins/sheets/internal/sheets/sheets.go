// Package sheets is a log sink that appends rows to a Google Sheets
// spreadsheet with spreadsheets.values.append.
//
// Each row is the seeds' log schema: timestamp, service, error_category,
// retry_count, circuit_breaker_state, message. The quota is 60 write
// requests a minute per user, so a whole batch is one append request, and
// requests are paced by a token bucket below that rate. A 429
// RESOURCE_EXHAUSTED is retryable after min(2^n s + random ms, 64 s), n
// counting the 429s in a row, as Google advises.
package sheets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	gsheets "google.golang.org/api/sheets/v4"

	"github.com/callagent/agent/backoff"
	"github.com/callagent/agent/events"
	"github.com/callagent/agent/plugins/internal/conf"
	"github.com/callagent/agent/sink"
)

// Value input options.
const (
	InputRaw         = "RAW"
	InputUserEntered = "USER_ENTERED"
)

// Defaults for the configuration.
const (
	DefaultRange   = "Sheet1!A:F"
	DefaultTimeout = 30 * time.Second
	// DefaultWritesPerMinute keeps under the 60 writes/minute/user quota
	// with room for a person editing the same sheet.
	DefaultWritesPerMinute = 50
	// MaxBackoff caps the wait after a 429.
	MaxBackoff = 64 * time.Second
)

// Config is the sink's configuration section.
type Config struct {
	// Endpoint replaces the Sheets API's URL (an emulator, a test server).
	// Without credentials it is called unauthenticated.
	Endpoint string `json:"endpoint"`
	// SpreadsheetID is the id in the spreadsheet's URL.
	SpreadsheetID string `json:"spreadsheet_id"`
	// Range is where rows are appended, in A1 notation; default DefaultRange.
	Range string `json:"range"`
	// CredentialsFile is a service-account key file; CredentialsJSON the
	// same key inline. With neither, Application Default Credentials apply.
	CredentialsFile string `json:"credentials_file"`
	CredentialsJSON string `json:"credentials_json"`
	// ValueInputOption is RAW (default) or USER_ENTERED.
	ValueInputOption string `json:"value_input_option"`
	// WritesPerMinute paces append requests; default DefaultWritesPerMinute.
	WritesPerMinute int `json:"writes_per_minute"`
	// Timeout bounds one request; default DefaultTimeout.
	Timeout conf.Duration `json:"timeout"`
}

// Sink appends rows to a spreadsheet. Its zero value is ready for
// Configure.
type Sink struct {
	// Log is where the sink logs; default slog.Default().
	Log *slog.Logger
	// Jitter returns the random part of the 429 backoff; default a random
	// duration under a second.
	Jitter func() time.Duration

	mu        sync.Mutex
	cfg       Config
	svc       *gsheets.Service
	limit     *rate.Limiter
	throttled int // 429s in a row
}

var _ sink.Sink = (*Sink)(nil)

// Configure validates the configuration and builds the API client.
func (s *Sink) Configure(ctx context.Context, raw []byte) error {
	var c Config
	if err := conf.Decode(raw, &c); err != nil {
		return err
	}
	if err := conf.Required("spreadsheet_id", c.SpreadsheetID); err != nil {
		return err
	}
	if c.Range == "" {
		c.Range = DefaultRange
	}
	switch c.ValueInputOption {
	case "":
		c.ValueInputOption = InputRaw
	case InputRaw, InputUserEntered:
	default:
		return conf.Errorf("value_input_option", "%q: want RAW or USER_ENTERED", c.ValueInputOption)
	}
	if c.WritesPerMinute < 0 {
		return conf.Errorf("writes_per_minute", "must not be negative")
	}
	if c.WritesPerMinute == 0 {
		c.WritesPerMinute = DefaultWritesPerMinute
	}
	if c.CredentialsFile != "" && c.CredentialsJSON != "" {
		return conf.Errorf("credentials_file", "set it or credentials_json, not both")
	}
	opts := []option.ClientOption{option.WithScopes(gsheets.SpreadsheetsScope)}
	switch {
	case c.CredentialsFile != "":
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, c.CredentialsFile))
	case c.CredentialsJSON != "":
		opts = append(opts, option.WithAuthCredentialsJSON(option.ServiceAccount, []byte(c.CredentialsJSON)))
	case c.Endpoint != "":
		opts = append(opts, option.WithoutAuthentication())
	}
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimRight(c.Endpoint, "/")+"/"))
	}
	// The client keeps this context for fetching tokens later; the
	// Configure call's own ends when the call does.
	svc, err := gsheets.NewService(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return fmt.Errorf("%w: sheets client: %w", sink.ErrConfig, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg, s.svc = c, svc
	// One request at a time, evenly spaced: a burst would spend the
	// minute's quota at once.
	s.limit = rate.NewLimiter(rate.Every(time.Minute/time.Duration(c.WritesPerMinute)), 1)
	s.throttled = 0
	return nil
}

func (s *Sink) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

func (s *Sink) jitter() time.Duration {
	if s.Jitter != nil {
		return s.Jitter()
	}
	return time.Duration(rand.IntN(1000)) * time.Millisecond
}

// throttleWait is the wait after the n-th 429 in a row (n from 0).
func throttleWait(n int, jitter time.Duration) time.Duration {
	return min(backoff.Exponential(n+1, time.Second, MaxBackoff, 2)+jitter, MaxBackoff)
}

// Row is the spreadsheet row of an event: the seeds' log schema, in the
// columns timestamp, service, error_category, retry_count,
// circuit_breaker_state, message.
func Row(ev events.Event, input string) []any {
	r := events.LogRecordOf(ev)
	return []any{
		r.Timestamp.UTC().Format(time.RFC3339Nano),
		text(r.Service, input),
		text(r.ErrorCategory, input),
		r.RetryCount,
		text(r.BreakerState, input),
		text(r.Message, input),
	}
}

// text protects a cell under USER_ENTERED, where Sheets would run a message
// starting with = (or + - @) as a formula: a provider's error text must
// never become one. The leading apostrophe makes it plain text.
func text(s, input string) string {
	if input == InputUserEntered && s != "" && strings.ContainsRune("=+-@", rune(s[0])) {
		return "'" + s
	}
	return s
}

// Deliver appends the whole batch in one request.
func (s *Sink) Deliver(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc == nil {
		return nil, fmt.Errorf("sheets: %w: not configured", sink.ErrUnavailable)
	}
	results := make([]sink.Result, len(batch))
	var rows [][]any
	var idx []int
	for i, rec := range batch {
		ev, err := events.Decode(rec.Data)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		rows = append(rows, Row(ev, s.cfg.ValueInputOption))
		idx = append(idx, i)
	}
	if len(rows) == 0 {
		return results, nil
	}
	set := func(r sink.Result) {
		for _, i := range idx {
			r.ID = batch[i].ID
			results[i] = r
		}
	}
	if wait, ok := s.pace(ctx); !ok {
		set(sink.Result{Status: sink.Retryable, RetryAfter: wait,
			Reason: fmt.Sprintf("sheets: pacing under %d writes a minute", s.cfg.WritesPerMinute)})
		return results, nil
	}

	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout.Or(DefaultTimeout))
	defer cancel()
	_, err := s.svc.Spreadsheets.Values.Append(s.cfg.SpreadsheetID, s.cfg.Range, &gsheets.ValueRange{Values: rows}).
		ValueInputOption(s.cfg.ValueInputOption).
		InsertDataOption("INSERT_ROWS").
		Context(cctx).
		Do()
	if err != nil {
		set(s.classify(err))
		return results, nil
	}
	s.throttled = 0
	set(sink.Result{Status: sink.Delivered})
	return results, nil
}

// pace waits for the token bucket. When ctx would end first it waits not at
// all and reports how long the wait would be.
func (s *Sink) pace(ctx context.Context) (time.Duration, bool) {
	r := s.limit.Reserve()
	wait := r.Delay()
	if wait == 0 {
		return 0, true
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
		r.Cancel()
		return wait, false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, true
	case <-ctx.Done():
		r.Cancel()
		return wait, false
	}
}

// classify maps an append failure to a result.
func (s *Sink) classify(err error) sink.Result {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		// No answer from the API: network, timeout.
		return sink.Result{Status: sink.Retryable, Reason: "sheets: " + err.Error()}
	}
	reason := fmt.Sprintf("sheets %d: %s", ge.Code, ge.Message)
	throttled := ge.Code == http.StatusTooManyRequests
	for _, it := range ge.Errors {
		// Some Google APIs refuse over quota with a 403 and these reasons.
		throttled = throttled || (ge.Code == http.StatusForbidden &&
			(it.Reason == "rateLimitExceeded" || it.Reason == "userRateLimitExceeded"))
	}
	switch {
	case throttled:
		wait := throttleWait(s.throttled, s.jitter())
		s.throttled++
		s.log().Warn("sheets quota exhausted", "in_a_row", s.throttled, "retry_after", wait.String())
		return sink.Result{Status: sink.Retryable, Reason: reason, RetryAfter: wait}
	case ge.Code >= 500, ge.Code == http.StatusRequestTimeout:
		return sink.Result{Status: sink.Retryable, Reason: reason}
	default:
		// 400 bad range, 401/403 credentials or sharing, 404 no such sheet.
		return sink.Result{Status: sink.Permanent, Reason: reason}
	}
}

// Health reads the spreadsheet's id back: it checks the credentials, the
// sharing and the API in one read (reads have their own, larger quota).
func (s *Sink) Health(ctx context.Context) error {
	s.mu.Lock()
	svc, cfg := s.svc, s.cfg
	s.mu.Unlock()
	if svc == nil {
		return fmt.Errorf("sheets: not configured")
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout.Or(DefaultTimeout))
	defer cancel()
	if _, err := svc.Spreadsheets.Get(cfg.SpreadsheetID).Fields("spreadsheetId").Context(cctx).Do(); err != nil {
		return fmt.Errorf("sheets: %w", err)
	}
	return nil
}
