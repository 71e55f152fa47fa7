package contacts

import (
	"bytes"
	"encoding/json"
	"fmt"
)

func (p *parser) readJSONLines(data []byte) error {
	line := 0
	for len(data) > 0 {
		line++
		var text []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			text, data = data[:i], data[i+1:]
		} else {
			text, data = data, nil
		}
		text = bytes.TrimSpace(text)
		p.list.Lines = line
		if len(text) == 0 {
			p.list.BlankLines++
			continue
		}
		row, err := jsonRow(text)
		if err != nil {
			p.list.Rows++
			p.list.Rejected = append(p.list.Rejected, Problem{Line: line, Reason: err.Error()})
			continue
		}
		row.line = line
		p.add(row)
	}
	return nil
}

// jsonRow reads one object. Known keys (phone, id or contact_id, name,
// timezone) fill the contact; any other scalar becomes a script variable.
func jsonRow(text []byte) (raw, error) {
	var row raw
	if text[0] != '{' {
		return row, fmt.Errorf("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return row, fmt.Errorf("invalid JSON: %v", err)
	}
	if dec.More() {
		return row, fmt.Errorf("invalid JSON: more than one value on the line")
	}
	seen := map[string]string{}
	for k, v := range obj {
		s, err := scalar(v)
		if err != nil {
			return row, fmt.Errorf("%s: %v", k, err)
		}
		name := normalizeColumn(k)
		role := columnRole(name)
		if other, ok := seen[role]; ok {
			return row, fmt.Errorf("keys %q and %q are both %q", other, k, role)
		}
		seen[role] = k
		row.set(role, name, s)
	}
	if _, ok := seen["phone"]; !ok {
		return row, fmt.Errorf("no \"phone\" key")
	}
	return row, nil
}

// scalar turns a JSON scalar into the string a CSV cell would have held.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("must be a string, number or boolean, not an object or array")
}
