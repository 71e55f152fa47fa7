package contacts

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/callagent/agent/events"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		data  string
		opts  Options
		want  []string // E.164 numbers kept, in order
		rej   []Problem
		dups  []Duplicate
		check func(t *testing.T, l *List)
	}{
		{
			name: "valid csv with extra columns as vars",
			file: "c.csv",
			data: "phone,name,contact_id,plan\n+918881234882,Asha,a-1,gold\n+14155550100,Bob,b-2,\n",
			want: []string{"+918881234882", "+14155550100"},
			check: func(t *testing.T, l *List) {
				c := l.Contacts[0]
				if c.ID != "a-1" || c.Name != "Asha" || c.Timezone != "UTC" || c.Line != 2 || c.Vars["plan"] != "gold" {
					t.Errorf("contact 0 = %+v", c)
				}
				if l.Contacts[1].Vars != nil {
					t.Errorf("empty extra cell became a var: %+v", l.Contacts[1].Vars)
				}
			},
		},
		{
			name: "bad numbers are rejected with their line",
			file: "c.csv",
			data: "phone\n+14155550100\nabc\n+1555\n\n+999123456789\n+4930901820\n4155550101\n",
			want: []string{"+14155550100", "+4930901820"},
			rej: []Problem{
				{Line: 3, Field: "phone", Reason: "not a phone number"},
				{Line: 4, Field: "phone", Reason: "too short"},
				{Line: 6, Field: "phone", Reason: "unknown country code"},
				{Line: 8, Field: "phone", Reason: "national number without a country code, and no default region is set (dispatcher.default_region)"},
			},
		},
		{
			name: "national numbers with a default region",
			file: "c.csv",
			data: "phone\n(415) 555-0101\n020 7946 0000\n+442079460000\n",
			opts: Options{DefaultRegion: "GB"},
			want: []string{"+442079460000"},
			rej:  []Problem{{Line: 2, Field: "phone", Reason: "not a valid number in GB"}},
			dups: []Duplicate{{Line: 4, FirstLine: 3, Contact: events.MaskPhone("+442079460000"), Reason: "same number"}},
		},
		{
			name: "national US numbers",
			file: "c.csv",
			data: "phone\n(415) 555-0101\n415.555.0102\n0044 20 7946 0000\n555-0100\n",
			opts: Options{DefaultRegion: "us"},
			want: []string{"+14155550101", "+14155550102", "+442079460000"},
			rej:  []Problem{{Line: 5, Field: "phone", Reason: "local number: add its area code"}},
		},
		{
			name: "duplicates by number and by id",
			file: "c.csv",
			data: "phone,id\n+14155550100,x\n+1 415 555 0100,y\n+14155550102,x\n",
			want: []string{"+14155550100"},
			dups: []Duplicate{
				{Line: 3, FirstLine: 2, Contact: events.MaskPhone("+14155550100"), Reason: "same number"},
				{Line: 4, FirstLine: 2, Contact: events.MaskPhone("+14155550102"), Reason: "same contact id x"},
			},
		},
		{
			name: "bad timezone is reported per row, default applies",
			file: "c.csv",
			data: "phone,timezone\n+14155550100,America/New_York\n+14155550101,Mars/Olympus\n+14155550102,\n+14155550103,Local\n",
			opts: Options{DefaultTimezone: "Europe/Paris"},
			want: []string{"+14155550100", "+14155550102"},
			rej: []Problem{
				{Line: 3, Field: "timezone", Reason: `unknown time zone "Mars/Olympus": use an IANA name such as "America/New_York"`},
				{Line: 5, Field: "timezone", Reason: `"Local" is not a time zone: use an IANA name such as "America/New_York"`},
			},
			check: func(t *testing.T, l *List) {
				if l.Contacts[0].Timezone != "America/New_York" || l.Contacts[1].Timezone != "Europe/Paris" {
					t.Errorf("zones = %q, %q", l.Contacts[0].Timezone, l.Contacts[1].Timezone)
				}
			},
		},
		{
			name: "wrong field count and broken quotes",
			file: "c.csv",
			data: "phone,name\n+14155550100,a,extra\n+14155550101,b\"c\n+14155550102,ok\n",
			want: []string{"+14155550102"},
			rej: []Problem{
				{Line: 2, Reason: "3 fields, the header has 2"},
				{Line: 3, Reason: `bad CSV: bare " in non-quoted-field`},
			},
		},
		{
			// The file of issue 9: an unterminated quote on line 5 used to
			// swallow lines 6-11 ("4 rows, 1 valid, 3 rejected").
			name: "unterminated quote is rejected alone, reading resumes at the next line",
			file: "c.csv",
			data: brokenQuoteCSV,
			want: []string{"+14155550100", "+14155550104", "+14155550106", "+14155550107"},
			rej: []Problem{
				{Line: 3, Field: "phone", Reason: "not a phone number"},
				{Line: 4, Field: "phone", Reason: "too short"},
				{Line: 5, Reason: `bad CSV: the quote opened on line 5 is not closed (extraneous or missing " in quoted-field): lines 5-11 would have been one row; row skipped, reading resumed at line 6`},
				{Line: 7, Field: "phone", Reason: "not a phone number"},
			},
			dups: []Duplicate{{Line: 10, FirstLine: 2, Contact: events.MaskPhone("+14155550100"), Reason: "same number"}},
			check: func(t *testing.T, l *List) {
				if l.Lines != 11 || l.HeaderLines != 1 || l.BlankLines != 1 || l.Rows != 9 {
					t.Errorf("lines %d, header %d, blank %d, rows %d; want 11, 1, 1, 9", l.Lines, l.HeaderLines, l.BlankLines, l.Rows)
				}
			},
		},
		{
			name: "unterminated quote running to the end of the file",
			file: "c.csv",
			data: "phone,name\n+14155550100,\"Ann\n+14155550101,Bo\n+14155550102,Cy\n",
			want: []string{"+14155550101", "+14155550102"},
			rej: []Problem{
				{Line: 2, Reason: `bad CSV: the quote opened on line 2 is not closed (extraneous or missing " in quoted-field): lines 2-4 would have been one row; row skipped, reading resumed at line 3`},
			},
		},
		{
			name: "a quoted field with line breaks is one row over several lines, said so",
			file: "c.csv",
			data: "phone,note\n+14155550100,\"two\nlines\"\n\n,\n+14155550101,x",
			want: []string{"+14155550100", "+14155550101"},
			check: func(t *testing.T, l *List) {
				if l.Lines != 6 || l.BlankLines != 2 || l.Rows != 2 || !reflect.DeepEqual(l.Spans, []Span{{From: 2, To: 3}}) {
					t.Errorf("lines %d, blank %d, rows %d, spans %v", l.Lines, l.BlankLines, l.Rows, l.Spans)
				}
				if l.Contacts[0].Vars["note"] != "two\nlines" || l.Contacts[1].Line != 6 {
					t.Errorf("contacts = %+v", l.Contacts)
				}
			},
		},
		{
			name: "semicolons, BOM, header aliases and unsafe ids",
			file: "c.csv",
			data: "\xef\xbb\xbfPhone Number;Contact-ID;TZ\n+14155550100;john.doe@example.com;America/Chicago\n",
			want: []string{"+14155550100"},
			check: func(t *testing.T, l *List) {
				c := l.Contacts[0]
				if !strings.HasPrefix(c.ID, "john_doe_example_com-") || !isSafe(c.ID) || c.Timezone != "America/Chicago" {
					t.Errorf("contact = %+v", c)
				}
			},
		},
		{
			name: "id defaults to a stable id that hides the number",
			file: "c.csv",
			data: "phone\n+14155550100\n",
			want: []string{"+14155550100"},
			check: func(t *testing.T, l *List) {
				id := l.Contacts[0].ID
				if id != PhoneID("+14155550100") || strings.Contains(id, "4155550100") || !isSafe(id) {
					t.Errorf("id = %q", id)
				}
			},
		},
		{
			name: "json lines with a bad line",
			file: "c.jsonl",
			data: `{"phone":"+14155550100","name":"A","id":7,"vip":true}` + "\n" +
				`{"phone": "+1415555` + "\n" +
				"\n" +
				`{"name":"no phone"}` + "\n" +
				`{"phone":"+14155550101","extra":{"a":1}}` + "\n" +
				`[1,2]` + "\n" +
				`{"phone":"+14155550102","timezone":"Asia/Kolkata"}`,
			want: []string{"+14155550100", "+14155550102"},
			rej: []Problem{
				{Line: 2, Reason: "invalid JSON: unexpected EOF"},
				{Line: 4, Reason: `no "phone" key`},
				{Line: 5, Reason: "extra: must be a string, number or boolean, not an object or array"},
				{Line: 6, Reason: "not a JSON object"},
			},
			check: func(t *testing.T, l *List) {
				c := l.Contacts[0]
				if c.ID != "7" || c.Vars["vip"] != "true" || c.Line != 1 || l.Contacts[1].Line != 7 || l.Format != FormatJSONLines {
					t.Errorf("contacts = %+v", l.Contacts)
				}
			},
		},
		{
			name: "json lines detected by content",
			file: "contacts.data",
			data: `{"phone":"+14155550100"}`,
			want: []string{"+14155550100"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Read(strings.NewReader(tt.data), tt.file, tt.opts)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			var got []string
			for _, c := range l.Contacts {
				got = append(got, c.Phone)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("numbers = %q, want %q", got, tt.want)
			}
			if tt.rej == nil {
				tt.rej = []Problem{}
			}
			if !reflect.DeepEqual(l.Rejected, tt.rej) {
				t.Errorf("rejected =\n%+v\nwant\n%+v", l.Rejected, tt.rej)
			}
			if tt.dups == nil {
				tt.dups = []Duplicate{}
			}
			if !reflect.DeepEqual(l.Duplicates, tt.dups) {
				t.Errorf("duplicates =\n%+v\nwant\n%+v", l.Duplicates, tt.dups)
			}
			if n := len(l.Contacts) + len(l.Rejected) + len(l.Duplicates); n != l.Rows {
				t.Errorf("rows = %d, but %d accounted for", l.Rows, n)
			}
			// Every physical line is header, blank, or part of one row.
			rowLines := l.Rows
			for _, s := range l.Spans {
				rowLines += s.To - s.From
			}
			if want := strings.Count(strings.TrimSuffix(tt.data, "\n"), "\n") + 1; l.Lines != want || l.HeaderLines+l.BlankLines+rowLines != want {
				t.Errorf("%d lines (%d header, %d blank, %d in rows), the file has %d", l.Lines, l.HeaderLines, l.BlankLines, rowLines, want)
			}
			if tt.check != nil {
				tt.check(t, l)
			}
		})
	}
}

// brokenQuoteCSV is the file of issue 9: line 5 opens a quote it never
// closes, and the next quote is on line 11.
const brokenQuoteCSV = "phone,name\n" + // 1
	"+14155550100,Ann\n" + // 2 valid
	"abc,Bo\n" + // 3 rejected
	"+1555,Cy\n" + // 4 rejected
	"+14155550103,\"Dan\n" + // 5 broken quote
	"+14155550104,Eve\n" + // 6 valid
	"nope,Fay\n" + // 7 rejected
	"\n" + // 8 blank
	"+14155550106,Gil\n" + // 9 valid
	"+14155550100,Dup\n" + // 10 duplicate of 2
	"+14155550107,\"Hal\"\n" // 11 valid

func TestReadFileErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		data string
		opts Options
		want error
		msg  string // part of the message
	}{
		{name: "empty file", file: "c.csv", data: "", want: ErrEmpty},
		{name: "only whitespace", file: "c.csv", data: " \n\n", want: ErrEmpty},
		{name: "header only", file: "c.csv", data: "phone,name\n", want: ErrNoRows},
		{name: "header and blank lines", file: "c.csv", data: "phone,name\n\n,\n", want: ErrNoRows},
		{name: "jsonl without rows", file: "c.jsonl", data: "\n  \n", want: ErrEmpty},
		{name: "missing phone column", file: "c.csv", data: "name,email\nBob,b@example.com\n", want: ErrNoPhoneColumn, msg: "header: name,email"},
		{name: "headerless numbers", file: "c.csv", data: "+14155550100\n+14155550101\n", want: ErrNoPhoneColumn},
		{name: "duplicate column", file: "c.csv", data: "phone,mobile\n1,2\n", want: ErrHeader, msg: `columns 1 and 2 are both "phone"`},
		{name: "nameless column", file: "c.csv", data: "phone,,x\n1,2,3\n", want: ErrHeader, msg: "column 2 has no name"},
		{name: "NUL bytes", file: "c.csv", data: "phone\n+14155550100\n\x00\x01\x02", want: ErrBinary, msg: "NUL byte at offset 19 on line 3"},
		{name: "invalid UTF-8", file: "c.csv", data: "phone,name\n+14155550100,Jos\xe9\n", want: ErrBinary, msg: "invalid UTF-8 at offset 27 on line 2"},
		{name: "gzip file", file: "c.csv.gz", data: "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", want: ErrBinary},
		{name: "json array", file: "c.json", data: `[{"phone":"+14155550100"}]`, want: ErrFormat},
		{name: "bad default region", file: "c.csv", data: "phone\n1\n", opts: Options{DefaultRegion: "XX"}, msg: `default region "XX"`},
		{name: "bad default timezone", file: "c.csv", data: "phone\n1\n", opts: Options{DefaultTimezone: "Nowhere/City"}, msg: "default time zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := ReadFile(path, tt.opts)
			if err == nil {
				t.Fatalf("ReadFile = %+v, want an error", l)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.csv"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestWriteReportMasksNumbers(t *testing.T) {
	l, err := Read(strings.NewReader("phone\n+14155550100\n+14155550100\nnope\n"), "c.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := l.WriteReport(&b); err != nil {
		t.Fatal(err)
	}
	want := "c.csv: 4 lines: 1 header, 0 blank, 3 rows: 1 valid, 1 rejected, 1 duplicates\n" +
		"  rejected  line 4: phone: not a phone number\n" +
		"  duplicate line 3: duplicate of line 2 (same number " + events.MaskPhone("+14155550100") + "), skipped\n"
	if b.String() != want {
		t.Errorf("report =\n%s\nwant\n%s", b.String(), want)
	}
	if strings.Contains(b.String(), "4155550100") {
		t.Error("report holds a full number")
	}
}

func TestWriteJSONMasksNumbers(t *testing.T) {
	l, err := Read(strings.NewReader("phone,plan\n+14155550100,gold\nx,\n"), "c.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := l.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rows     int       `json:"rows"`
		Valid    int       `json:"valid"`
		Rejected []Problem `json:"rejected"`
		Contacts []struct {
			Contact string   `json:"contact"`
			Vars    []string `json:"vars"`
		} `json:"contacts"`
	}
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if got.Rows != 2 || got.Valid != 1 || len(got.Rejected) != 1 || got.Rejected[0].Line != 3 ||
		got.Contacts[0].Contact != events.MaskPhone("+14155550100") || got.Contacts[0].Vars[0] != "plan" {
		t.Errorf("JSON report = %s", b.String())
	}
	if strings.Contains(b.String(), "4155550100") || strings.Contains(b.String(), "gold") {
		t.Errorf("JSON report holds a number or a value: %s", b.String())
	}
}

func TestSafeID(t *testing.T) {
	tests := []struct{ in, prefix string }{
		{"abc-123_X=", "abc-123_X="},
		{"a.b", "a_b-"},
		{"a/b", "a_b-"},
		{"été", "t-"},
		{strings.Repeat("x", 80), strings.Repeat("x", MaxIDLength-9) + "-"},
	}
	for _, tt := range tests {
		got := SafeID(tt.in)
		if !strings.HasPrefix(got, tt.prefix) || !isSafe(got) || len(got) > MaxIDLength {
			t.Errorf("SafeID(%q) = %q, want prefix %q", tt.in, got, tt.prefix)
		}
	}
	if SafeID("a.b") == SafeID("a/b") {
		t.Error("ids differing only in unsafe characters collide")
	}
}
