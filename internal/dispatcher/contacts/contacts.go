// Package contacts reads a campaign's contact file (CSV with a header row, or
// JSON lines), validates every phone number to E.164 with libphonenumber and
// every time zone against the IANA database, removes duplicates, and reports
// each rejected row by its line number so the rest of the file can go ahead.
package contacts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // validate time zones the same way on hosts without a zoneinfo database
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

	"github.com/callagent/agent/events"
)

// File-level errors, matched with errors.Is. Row-level problems are not
// errors: they are listed in List.Rejected and the valid rows go ahead.
var (
	ErrEmpty         = errors.New("contacts file is empty")
	ErrNoRows        = errors.New("contacts file has a header but no contact rows")
	ErrNoPhoneColumn = errors.New("contacts file has no phone column")
	ErrHeader        = errors.New("bad header row")
	ErrBinary        = errors.New("contacts file is not text")
	ErrFormat        = errors.New("unsupported contacts file format")
)

// MaxIDLength bounds a contact id so that keys, message ids and call ids built
// from it stay short.
const MaxIDLength = 64

// Format is the contact file's syntax.
type Format string

// The supported formats. FormatAuto picks one from the file name's extension
// (.csv, .tsv, .jsonl, .ndjson) or, failing that, from the content.
const (
	FormatAuto      Format = ""
	FormatCSV       Format = "csv"
	FormatJSONLines Format = "jsonl"
)

// Options configure reading. The zero value accepts only numbers written with
// their country code, and gives contacts without a time zone UTC.
type Options struct {
	// DefaultRegion (ISO 3166 alpha-2, such as "US") parses national numbers
	// like "(415) 555-0100". Empty means every number needs its +country code.
	DefaultRegion string
	// DefaultTimezone is the IANA zone of contacts without one. Default "UTC".
	DefaultTimezone string
	// Format forces a format instead of detecting it.
	Format Format
}

// Contact is one valid, unique contact.
type Contact struct {
	// Line is the line of the file the contact was read from (1-based).
	Line int `json:"line"`
	// ID is the contact's id, safe to use in subjects, key-value keys and call
	// ids: the file's id (made safe if needed) or one derived from the number.
	ID string `json:"id"`
	// Phone is the number in E.164. It is sent only in the call request, and
	// never written out with the contact.
	Phone    string            `json:"-"`
	Name     string            `json:"name,omitempty"`
	Timezone string            `json:"timezone"`
	Vars     map[string]string `json:"vars,omitempty"`
}

// Masked returns the contact's number masked for logs and reports.
func (c Contact) Masked() string { return events.MaskPhone(c.Phone) }

// Problem is a rejected row.
type Problem struct {
	Line   int    `json:"line"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func (p Problem) String() string {
	if p.Field == "" {
		return fmt.Sprintf("line %d: %s", p.Line, p.Reason)
	}
	return fmt.Sprintf("line %d: %s: %s", p.Line, p.Field, p.Reason)
}

// Span is a row read from several physical lines.
type Span struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func (s Span) String() string {
	return fmt.Sprintf("lines %d-%d: one row (a quoted field holds line breaks)", s.From, s.To)
}

// Duplicate is a row whose number (or id) an earlier row already has.
type Duplicate struct {
	Line      int    `json:"line"`
	FirstLine int    `json:"first_line"`
	Contact   string `json:"contact"` // masked
	// Reason says what was duplicated: "same number" or "same contact id".
	Reason string `json:"reason"`
}

func (d Duplicate) String() string {
	return fmt.Sprintf("line %d: duplicate of line %d (%s %s), skipped", d.Line, d.FirstLine, d.Reason, d.Contact)
}

// List is what a contact file holds: the valid contacts in file order and
// what was left out and why.
type List struct {
	Name   string `json:"file"`
	Format Format `json:"format"`
	// Lines is the file's physical line count: HeaderLines + BlankLines +
	// the lines of every row (Rows, plus the extra lines of Spans).
	Lines       int `json:"lines"`
	HeaderLines int `json:"header_lines"`
	BlankLines  int `json:"blank_lines"`
	Rows        int `json:"rows"`
	// Spans are the rows that take more than one line (a quoted field
	// holding line breaks), said so a reader can check where lines went.
	Spans      []Span      `json:"multi_line_rows,omitempty"`
	Contacts   []Contact   `json:"-"`
	Rejected   []Problem   `json:"rejected"`
	Duplicates []Duplicate `json:"duplicates"`
}

// WriteReport writes a readable validation report: one summary line, then one
// line per rejected or duplicate row. Numbers are masked.
func (l *List) WriteReport(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d lines: %d header, %d blank, %d rows: %d valid, %d rejected, %d duplicates\n",
		l.Name, l.Lines, l.HeaderLines, l.BlankLines, l.Rows, len(l.Contacts), len(l.Rejected), len(l.Duplicates))
	for _, s := range l.Spans {
		fmt.Fprintf(&b, "  note      %s\n", s)
	}
	for _, p := range l.Rejected {
		fmt.Fprintf(&b, "  rejected  %s\n", p)
	}
	for _, d := range l.Duplicates {
		fmt.Fprintf(&b, "  duplicate %s\n", d)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the validation report as JSON: counts, rejected rows,
// duplicates, and the valid contacts with their numbers masked.
func (l *List) WriteJSON(w io.Writer) error {
	type contact struct {
		Line     int      `json:"line"`
		ID       string   `json:"id"`
		Contact  string   `json:"contact"`
		Timezone string   `json:"timezone"`
		Vars     []string `json:"vars,omitempty"` // names only: values may be personal
	}
	out := struct {
		Name        string      `json:"file"`
		Format      Format      `json:"format"`
		Lines       int         `json:"lines"`
		HeaderLines int         `json:"header_lines"`
		BlankLines  int         `json:"blank_lines"`
		Rows        int         `json:"rows"`
		Spans       []Span      `json:"multi_line_rows,omitempty"`
		Valid       int         `json:"valid"`
		Rejected    []Problem   `json:"rejected"`
		Duplicates  []Duplicate `json:"duplicates"`
		Contacts    []contact   `json:"contacts"`
	}{l.Name, l.Format, l.Lines, l.HeaderLines, l.BlankLines, l.Rows, l.Spans, len(l.Contacts), l.Rejected, l.Duplicates, make([]contact, 0, len(l.Contacts))}
	for _, c := range l.Contacts {
		out.Contacts = append(out.Contacts, contact{c.Line, c.ID, c.Masked(), c.Timezone, slices.Sorted(maps.Keys(c.Vars))})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// ReadFile reads and validates the contact file at path.
func ReadFile(path string, opts Options) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open contacts: %w", err)
	}
	defer f.Close()
	return Read(f, path, opts)
}

// Read reads and validates a contact file. name is used to detect the format
// by extension and to label the report.
func Read(r io.Reader, name string, opts Options) (*List, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read contacts %s: %w", name, err)
	}
	p, err := newParser(opts)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // spreadsheet exports often start with a BOM
	if err := checkText(data); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrEmpty)
	}
	format, err := detect(name, data, opts.Format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p.list = &List{Name: name, Format: format, Contacts: []Contact{}, Rejected: []Problem{}, Duplicates: []Duplicate{}}
	switch format {
	case FormatCSV:
		err = p.readCSV(data)
	case FormatJSONLines:
		err = p.readJSONLines(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	slices.SortStableFunc(p.list.Rejected, func(a, b Problem) int { return a.Line - b.Line })
	if p.list.Rows == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrNoRows)
	}
	return p.list, nil
}

// checkText rejects binary files before they are parsed into nonsense rows.
func checkText(data []byte) error {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return fmt.Errorf("%w: NUL byte at offset %d on line %d", ErrBinary, i, lineAt(data, i))
	}
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			i += size
		}
		return fmt.Errorf("%w: invalid UTF-8 at offset %d on line %d (save the file as UTF-8)", ErrBinary, i, lineAt(data, i))
	}
	return nil
}

func lineAt(data []byte, offset int) int { return bytes.Count(data[:offset], []byte("\n")) + 1 }

func detect(name string, data []byte, forced Format) (Format, error) {
	switch forced {
	case FormatCSV, FormatJSONLines:
		return forced, nil
	case FormatAuto:
	default:
		return "", fmt.Errorf("%w: %q", ErrFormat, forced)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv", ".tsv", ".txt":
		return FormatCSV, nil
	case ".jsonl", ".ndjson":
		return FormatJSONLines, nil
	}
	switch bytes.TrimSpace(data)[0] {
	case '{':
		return FormatJSONLines, nil
	case '[':
		return "", fmt.Errorf("%w: a JSON array; write one JSON object per line (JSON lines) instead", ErrFormat)
	}
	return FormatCSV, nil
}

// parser holds what validation of one file accumulates.
type parser struct {
	region      string
	defaultZone string
	zones       map[string]error
	byPhone     map[string]int // E.164 -> first line
	byID        map[string]int // contact id -> first line
	list        *List
}

func newParser(opts Options) (*parser, error) {
	p := &parser{
		region:      strings.ToUpper(strings.TrimSpace(opts.DefaultRegion)),
		defaultZone: strings.TrimSpace(opts.DefaultTimezone),
		zones:       map[string]error{},
		byPhone:     map[string]int{},
		byID:        map[string]int{},
	}
	if p.region != "" && !phonenumbers.GetSupportedRegions()[p.region] {
		return nil, fmt.Errorf("default region %q is not a known ISO 3166 region code", opts.DefaultRegion)
	}
	if p.defaultZone == "" {
		p.defaultZone = "UTC"
	}
	if err := p.checkZone(p.defaultZone); err != nil {
		return nil, fmt.Errorf("default time zone: %w", err)
	}
	return p, nil
}

// raw is one row before validation, whatever its format.
type raw struct {
	line     int
	phone    string
	id       string
	name     string
	timezone string
	vars     map[string]string
}

// set files one value under its column's role; any other column becomes a
// script variable named column, empty values left out.
func (r *raw) set(role, column, v string) {
	switch role {
	case "phone":
		r.phone = v
	case "id":
		r.id = v
	case "name":
		r.name = v
	case "timezone":
		r.timezone = v
	default:
		if v = strings.TrimSpace(v); v != "" {
			if r.vars == nil {
				r.vars = map[string]string{}
			}
			r.vars[column] = v
		}
	}
}

// add validates one row and keeps it, or records why not.
func (p *parser) add(r raw) {
	p.list.Rows++
	reject := func(field, format string, args ...any) {
		p.list.Rejected = append(p.list.Rejected, Problem{Line: r.line, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	phone, err := p.normalize(r.phone)
	if err != nil {
		reject("phone", "%v", err)
		return
	}
	zone := strings.TrimSpace(r.timezone)
	if zone == "" {
		zone = p.defaultZone
	}
	if err := p.checkZone(zone); err != nil {
		reject("timezone", "%v", err)
		return
	}
	id := strings.TrimSpace(r.id)
	if id == "" {
		id = PhoneID(phone)
	} else {
		id = SafeID(id)
	}
	if first, ok := p.byPhone[phone]; ok {
		p.list.Duplicates = append(p.list.Duplicates, Duplicate{Line: r.line, FirstLine: first, Contact: events.MaskPhone(phone), Reason: "same number"})
		return
	}
	if first, ok := p.byID[id]; ok {
		p.list.Duplicates = append(p.list.Duplicates, Duplicate{Line: r.line, FirstLine: first, Contact: events.MaskPhone(phone), Reason: "same contact id " + id})
		return
	}
	p.byPhone[phone] = r.line
	p.byID[id] = r.line
	p.list.Contacts = append(p.list.Contacts, Contact{
		Line:     r.line,
		ID:       id,
		Phone:    phone,
		Name:     strings.TrimSpace(r.name),
		Timezone: zone,
		Vars:     r.vars,
	})
}

// normalize parses a number as written in a contact file and returns it in
// E.164, or says in a few words why it is not a number anyone can call.
func (p *parser) normalize(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("missing")
	}
	if strings.HasPrefix(s, "00") { // international prefix written out, as in much of Europe
		s = "+" + s[2:]
	}
	if !strings.ContainsAny(s, "0123456789") {
		return "", errors.New("not a phone number")
	}
	if !strings.HasPrefix(s, "+") && p.region == "" {
		return "", errors.New("national number without a country code, and no default region is set (dispatcher.default_region)")
	}
	n, err := phonenumbers.Parse(s, p.region)
	switch {
	case errors.Is(err, phonenumbers.ErrInvalidCountryCode):
		return "", errors.New("unknown country code")
	case errors.Is(err, phonenumbers.ErrNotANumber):
		return "", errors.New("not a phone number")
	case errors.Is(err, phonenumbers.ErrTooShortNSN), errors.Is(err, phonenumbers.ErrTooShortAfterIDD):
		return "", errors.New("too short")
	case errors.Is(err, phonenumbers.ErrNumTooLong):
		return "", errors.New("too long")
	case err != nil:
		return "", fmt.Errorf("not a phone number: %v", err)
	}
	switch phonenumbers.IsPossibleNumberWithReason(n) {
	case phonenumbers.TOO_SHORT:
		return "", errors.New("too short")
	case phonenumbers.TOO_LONG:
		return "", errors.New("too long")
	case phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
		return "", errors.New("local number: add its area code")
	case phonenumbers.INVALID_LENGTH:
		return "", errors.New("wrong number of digits for its country")
	case phonenumbers.INVALID_COUNTRY_CODE:
		return "", errors.New("unknown country code")
	}
	if !phonenumbers.IsValidNumber(n) {
		region := phonenumbers.GetRegionCodeForCountryCode(int(n.GetCountryCode()))
		if region == "" || region == "ZZ" || region == "001" {
			return "", errors.New("not a valid number")
		}
		return "", fmt.Errorf("not a valid number in %s", region)
	}
	e164 := phonenumbers.Format(n, phonenumbers.E164)
	if len(e164) < minE164 {
		// The wire contract (events.CallRequest) takes 8 to 15 digits.
		return "", errors.New("too short: fewer than 8 digits with the country code")
	}
	return e164, nil
}

// minE164 is the shortest number the call request accepts: '+' and 8 digits.
const minE164 = 9

func (p *parser) checkZone(name string) error {
	if err, ok := p.zones[name]; ok {
		return err
	}
	var err error
	switch {
	case name == "Local":
		// "Local" is whatever zone the dispatcher's host is in: never the callee's.
		err = errors.New(`"Local" is not a time zone: use an IANA name such as "America/New_York"`)
	default:
		if _, lerr := time.LoadLocation(name); lerr != nil {
			err = fmt.Errorf("unknown time zone %q: use an IANA name such as \"America/New_York\"", name)
		}
	}
	p.zones[name] = err
	return err
}

// PhoneID is the id of a contact whose file gives none: stable across runs and
// edits of the file (it depends only on the number), and free of the number
// itself, since ids travel in events and logs where numbers must not.
func PhoneID(e164 string) string {
	sum := sha256.Sum256([]byte(e164))
	return "c-" + hex.EncodeToString(sum[:8])
}

// SafeID returns id if it is made only of letters, digits, '-', '_' and '=',
// and is at most MaxIDLength long. Otherwise it returns a readable safe form
// with a short hash of the original appended, so two ids that differ only in
// unsafe characters stay distinct.
func SafeID(id string) string {
	if isSafe(id) && len(id) <= MaxIDLength {
		return id
	}
	var b strings.Builder
	lastUnderscore := false
	for _, r := range id {
		if r < utf8.RuneSelf && isSafeByte(byte(r)) {
			b.WriteRune(r)
			lastUnderscore = false
			continue
		}
		if !lastUnderscore {
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	s := strings.Trim(b.String(), "_")
	sum := sha256.Sum256([]byte(id))
	suffix := "-" + hex.EncodeToString(sum[:4])
	if len(s) > MaxIDLength-len(suffix) {
		s = s[:MaxIDLength-len(suffix)]
	}
	return s + suffix
}

func isSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isSafeByte(s[i]) {
			return false
		}
	}
	return true
}

func isSafeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '='
}

// Normalize turns one phone number into E.164 the way contact files are read
// (opts.DefaultRegion for national numbers), for lists keyed by number such
// as the do-not-call list.
func Normalize(number string, opts Options) (string, error) {
	p, err := newParser(opts)
	if err != nil {
		return "", err
	}
	n, err := p.normalize(number)
	if err != nil {
		return "", fmt.Errorf("phone number: %w", err)
	}
	return n, nil
}
