package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/callagent/agent/events"
)

// allTypes is every message type with a schema: the events and the call request.
func allTypes() []events.Type { return append(slices.Clone(events.Types), events.TypeRequest) }

// goType is the Go struct a message type decodes into.
func goType(typ events.Type) reflect.Type {
	if typ == events.TypeRequest {
		return reflect.TypeFor[events.CallRequest]()
	}
	return reflect.TypeOf(events.New(typ)).Elem()
}

// decodeAs decodes data with the decoder of typ: Decode for events,
// DecodeRequest for the call request.
func decodeAs(typ events.Type, data []byte) error {
	if typ == events.TypeRequest {
		_, err := events.DecodeRequest(data)
		return err
	}
	_, err := events.Decode(data)
	return err
}

// jsonFields lists the JSON names of a struct's fields the way encoding/json
// sees them: untagged embedded structs (Header, CallRef) are flattened.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		tag, hasTag := f.Tag.Lookup("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && !hasTag && f.Type.Kind() == reflect.Struct {
			names = append(names, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

type compiledSchema struct {
	*jsonschema.Schema
	doc        map[string]any
	properties map[string]any
	required   []string
}

func compileSchema(t *testing.T, typ events.Type) compiledSchema {
	t.Helper()
	raw, err := events.Schema(typ)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("schema %s is not JSON: %v", typ, err)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		t.Fatalf("schema %s is not an object", typ)
	}
	url := "https://github.com/callagent/agent/events/schema/" + string(typ) + ".json"
	for key, want := range map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  url,
		"type":                 "object",
		"additionalProperties": true, // unknown fields are ignored by contract
	} {
		if m[key] != want {
			t.Errorf("schema %s: %s is %v, want %v", typ, key, m[key], want)
		}
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compile schema %s: %v", typ, err)
	}
	cs := compiledSchema{Schema: sch, doc: m}
	cs.properties, _ = m["properties"].(map[string]any)
	req, _ := m["required"].([]any)
	for _, r := range req {
		cs.required = append(cs.required, r.(string))
	}
	slices.Sort(cs.required)
	return cs
}

func (s compiledSchema) check(t *testing.T, data []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
	return s.Validate(v)
}

func object(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSchemaMatchesGoType(t *testing.T) {
	for _, typ := range allTypes() {
		t.Run(string(typ), func(t *testing.T) {
			s := compileSchema(t, typ)
			props := slices.Sorted(maps.Keys(s.properties))
			if fields := jsonFields(goType(typ)); !slices.Equal(props, fields) {
				t.Errorf("schema properties %v\n  Go JSON fields %v", props, fields)
			}

			files := goldenFiles(t, typ)
			seen := map[string]bool{}
			for name, data := range files {
				if err := s.check(t, data); err != nil {
					t.Errorf("golden %s does not validate against its schema: %v", name, err)
				}
				for k := range object(t, data) {
					seen[k] = true
				}
			}
			for _, p := range props {
				if !seen[p] {
					t.Errorf("no golden %s file shows field %q", typ, p)
				}
			}

			// Delete each field in turn: Decode must report exactly the schema's
			// required fields as missing, and the schema must refuse exactly those.
			base := files[string(typ)]
			var missing []string
			for _, p := range props {
				m := object(t, base)
				delete(m, p)
				data := marshal(t, m)
				err := decodeAs(typ, data)
				var fe *events.FieldError
				switch {
				case err == nil:
				case errors.Is(err, events.ErrMissing) && errors.As(err, &fe) && fe.Field == p:
					missing = append(missing, p)
				default:
					t.Errorf("without %q: decode error %v, want none or a missing %q", p, err, p)
				}
				schemaErr := s.check(t, data)
				if required := slices.Contains(s.required, p); required != (schemaErr != nil) {
					t.Errorf("without %q: schema error %v, but required=%v", p, schemaErr, required)
				}
			}
			if !slices.Equal(missing, s.required) {
				t.Errorf("schema requires %v\n   Decode misses %v", s.required, missing)
			}

			// Every enum value is accepted by both; a value outside it by neither.
			for p, def := range s.properties {
				enum, ok := def.(map[string]any)["enum"].([]any)
				if !ok {
					continue
				}
				for _, v := range enum {
					m := object(t, base)
					m[p] = v
					data := marshal(t, m)
					if err := decodeAs(typ, data); err != nil {
						t.Errorf("%s=%v: %v", p, v, err)
					}
					if err := s.check(t, data); err != nil {
						t.Errorf("%s=%v: schema: %v", p, v, err)
					}
				}
				m := object(t, base)
				m[p] = "not_" + p
				data := marshal(t, m)
				var fe *events.FieldError
				if err := decodeAs(typ, data); !errors.Is(err, events.ErrInvalid) || !errors.As(err, &fe) || fe.Field != p {
					t.Errorf("%s=not_%s: decode error %v, want invalid %q", p, p, err, p)
				}
				if err := s.check(t, data); err == nil {
					t.Errorf("%s=not_%s: the schema accepts it", p, p)
				}
			}

			// Unknown fields are ignored by both.
			m := object(t, base)
			m["x_added_in_a_later_version"] = map[string]any{"n": 1}
			data := marshal(t, m)
			if err := decodeAs(typ, data); err != nil {
				t.Errorf("unknown field: %v", err)
			}
			if err := s.check(t, data); err != nil {
				t.Errorf("unknown field: schema: %v", err)
			}
		})
	}
}

func TestSchemaUnknownType(t *testing.T) {
	for _, typ := range []events.Type{"", "bogus", "Call", "../schema/call", "call.json"} {
		if b, err := events.Schema(typ); !errors.Is(err, events.ErrUnknownType) || b != nil {
			t.Errorf("Schema(%q) = %d bytes, %v; want ErrUnknownType", typ, len(b), err)
		}
	}
}

// TestSchemaFreshCopy: a caller that edits the schema it got does not change
// what the next caller gets.
func TestSchemaFreshCopy(t *testing.T) {
	a, err := events.Schema(events.TypeCall)
	if err != nil {
		t.Fatal(err)
	}
	orig := slices.Clone(a)
	clear(a)
	b, err := events.Schema(events.TypeCall)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("Schema returned shared memory")
	}
}
