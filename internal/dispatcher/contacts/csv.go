package contacts

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
)

// columnRole maps a column name, after normalization (lower case, spaces and
// dashes as '_'), to the contact field it fills; any other column is a
// script variable of that name.
func columnRole(name string) string {
	switch name {
	case "phone", "phone_number", "mobile", "msisdn":
		return "phone"
	case "id", "contact_id":
		return "id"
	case "timezone", "time_zone", "tz":
		return "timezone"
	}
	return name
}

// readCSV reads the header and every row. A row the csv reader cannot parse
// (typically an unterminated quote, which would otherwise swallow every line
// up to the next quote or the end of the file) is rejected with the lines it
// would have swallowed, and reading starts again at the line after the one it
// began on, so one bad quote costs one row, not the rest of the file. Every
// physical line ends up as header, blank, or part of exactly one row.
func (p *parser) readCSV(data []byte) error {
	comma := sniffDelimiter(data)
	starts := lineStarts(data)
	covered := make([]bool, len(starts)+1) // by line number, 1-based
	cover := func(from, to int) {
		for l := from; l <= to && l < len(covered); l++ {
			covered[l] = true
		}
	}
	// endLine is the last line a record read up to byte offset end (exclusive,
	// its line break included) touched.
	endLine := func(end int) int {
		if end > 0 && end <= len(data) && data[end-1] == '\n' {
			end--
		}
		return lineAt(data, end)
	}

	var (
		header []string
		cols   []string
	)
	base := 1 // line number of the first line the current reader sees
	for base <= len(starts) {
		off := starts[base-1]
		r := csv.NewReader(bytes.NewReader(data[off:]))
		r.Comma = comma
		r.FieldsPerRecord = -1 // row length is checked here, per row, so one bad row does not stop the file
		r.TrimLeadingSpace = true
		restart := 0
		for restart == 0 {
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				var perr *csv.ParseError
				if !errors.As(err, &perr) {
					return err
				}
				first, last := base+perr.StartLine-1, base+perr.Line-1
				if last > len(starts) {
					last = len(starts)
				}
				if header == nil {
					return fmt.Errorf("%w: line %d: %v", ErrHeader, first, perr.Err)
				}
				reason := "bad CSV: " + perr.Err.Error()
				if last > first {
					reason = fmt.Sprintf("bad CSV: the quote opened on line %d is not closed (%v): lines %d-%d would have been one row; row skipped, reading resumed at line %d",
						first, perr.Err, first, last, first+1)
				}
				p.list.Rows++
				p.list.Rejected = append(p.list.Rejected, Problem{Line: first, Reason: reason})
				cover(first, first)
				restart = first + 1
				continue
			}
			rel, _ := r.FieldPos(0)
			line := base + rel - 1
			last := endLine(off + int(r.InputOffset()))
			if header == nil {
				header = rec
				cols, err = parseHeader(header)
				if err != nil {
					return err
				}
				p.list.HeaderLines = last - line + 1
				cover(line, last)
				continue
			}
			cover(line, last)
			if blank(rec) {
				p.list.BlankLines += last - line + 1
				continue
			}
			if last > line {
				p.list.Spans = append(p.list.Spans, Span{From: line, To: last})
			}
			if len(rec) != len(header) {
				p.list.Rows++
				p.list.Rejected = append(p.list.Rejected, Problem{Line: line, Reason: fmt.Sprintf("%d fields, the header has %d", len(rec), len(header))})
				continue
			}
			row := raw{line: line}
			for i, v := range rec {
				row.set(cols[i], cols[i], v)
			}
			p.add(row)
		}
		if restart == 0 {
			break
		}
		base = restart
	}
	if header == nil {
		return fmt.Errorf("%w: no header row", ErrHeader)
	}
	// Lines the csv reader skipped are empty ones; anything else left over
	// would be a line silently lost, so it is reported instead.
	for l := 1; l <= len(starts); l++ {
		if covered[l] {
			continue
		}
		if len(bytes.TrimSpace(lineText(data, starts, l))) == 0 {
			p.list.BlankLines++
			continue
		}
		p.list.Rows++
		p.list.Rejected = append(p.list.Rejected, Problem{Line: l, Reason: "not read as part of any row"})
	}
	p.list.Lines = len(starts)
	return nil
}

// lineStarts returns the byte offset of each physical line; a final line
// break does not start another line.
func lineStarts(data []byte) []int {
	starts := []int{0}
	for i, c := range data {
		if c == '\n' && i+1 < len(data) {
			starts = append(starts, i+1)
		}
	}
	return starts
}

func lineText(data []byte, starts []int, line int) []byte {
	end := len(data)
	if line < len(starts) {
		end = starts[line]
	}
	return data[starts[line-1]:end]
}

// parseHeader maps each column to its role: phone, id, name, timezone, or the
// name of a script variable.
func parseHeader(header []string) ([]string, error) {
	cols := make([]string, len(header))
	seen := map[string]int{}
	hasPhone := false
	for i, h := range header {
		name := normalizeColumn(h)
		if name == "" {
			return nil, fmt.Errorf("%w: column %d has no name", ErrHeader, i+1)
		}
		role := columnRole(name)
		if j, ok := seen[role]; ok {
			return nil, fmt.Errorf("%w: columns %d and %d are both %q", ErrHeader, j+1, i+1, role)
		}
		seen[role] = i
		cols[i] = role
		hasPhone = hasPhone || role == "phone"
	}
	if !hasPhone {
		return nil, fmt.Errorf("%w (header: %s): the first row must name the columns, one of them \"phone\"",
			ErrNoPhoneColumn, strings.Join(header, ","))
	}
	return cols, nil
}

func normalizeColumn(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return '_'
		}
		return r
	}, h)
}

// sniffDelimiter picks ',', ';' or tab from the header line: spreadsheets in
// many locales export with ';' because ',' is their decimal separator.
func sniffDelimiter(data []byte) rune {
	line := data
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	best, count := ',', bytes.Count(line, []byte{','})
	for _, d := range []rune{';', '\t'} {
		if n := bytes.Count(line, []byte(string(d))); n > count {
			best, count = d, n
		}
	}
	return best
}

func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}
