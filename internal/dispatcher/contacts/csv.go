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

func (p *parser) readCSV(data []byte) error {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma = sniffDelimiter(data)
	r.FieldsPerRecord = -1 // row length is checked here, per row, so one bad row does not stop the file
	r.TrimLeadingSpace = true
	r.ReuseRecord = false

	header, err := r.Read()
	if err != nil {
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("%w: line %d: %v", ErrHeader, perr.StartLine, perr.Err)
		}
		return fmt.Errorf("%w: %v", ErrHeader, err)
	}
	cols, err := parseHeader(header)
	if err != nil {
		return err
	}

	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var perr *csv.ParseError
			if !errors.As(err, &perr) {
				return err
			}
			// The csv reader resynchronizes at the next record; record the
			// broken one by the line it started on and go on.
			p.list.Rows++
			p.list.Rejected = append(p.list.Rejected, Problem{Line: perr.StartLine, Reason: "bad CSV: " + perr.Err.Error()})
			continue
		}
		line, _ := r.FieldPos(0)
		if blank(rec) {
			continue
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
