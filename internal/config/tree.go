package config

import (
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
)

// A configuration value as a tree keyed by koanf names: sections keep the
// struct's field order (a printed configuration reads like the example file),
// Go maps are sorted, durations are strings like "5s". The same tree seeds
// koanf with the defaults and is printed as YAML or logged with slog, so the
// three cannot disagree on a key's name.
type (
	section []entry
	entry   struct {
		key string
		val any
	}
)

func plain(v reflect.Value) any {
	if !v.IsValid() {
		return nil
	}
	if v.Type() == durationType {
		return formatDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return plain(v.Elem())
	case reflect.Struct:
		t := v.Type()
		s := section{}
		for i := range t.NumField() {
			f := t.Field(i)
			key := f.Tag.Get("koanf")
			if key == "" || !f.IsExported() {
				continue
			}
			s = append(s, entry{key: key, val: plain(v.Field(i))})
		}
		return s
	case reflect.Map:
		if v.IsNil() {
			// Stays nil through koanf and back, so Load with nothing set
			// equals Default(); printed as {}.
			return section(nil)
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		s := section{}
		for _, k := range keys {
			s = append(s, entry{key: fmt.Sprint(k), val: plain(v.MapIndex(k))})
		}
		return s
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any(nil)
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = plain(v.Index(i))
		}
		return out
	default:
		return v.Interface()
	}
}

// formatDuration writes 168h rather than time.Duration's 168h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func toMap(x any) any {
	switch x := x.(type) {
	case section:
		if x == nil {
			return nil
		}
		m := make(map[string]any, len(x))
		for _, e := range x {
			m[e.key] = toMap(e.val)
		}
		return m
	case []any:
		if x == nil {
			return nil
		}
		out := make([]any, len(x))
		for i, v := range x {
			out[i] = toMap(v)
		}
		return out
	default:
		return x
	}
}

func toNode(x any) (*yamlv3.Node, error) {
	switch x := x.(type) {
	case section:
		n := &yamlv3.Node{Kind: yamlv3.MappingNode}
		if len(x) == 0 {
			n.Style = yamlv3.FlowStyle
		}
		for _, e := range x {
			v, err := toNode(e.val)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: e.key}, v)
		}
		return n, nil
	case []any:
		n := &yamlv3.Node{Kind: yamlv3.SequenceNode}
		if len(x) == 0 {
			n.Style = yamlv3.FlowStyle
		}
		for _, v := range x {
			c, err := toNode(v)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		return n, nil
	default:
		n := &yamlv3.Node{}
		if err := n.Encode(x); err != nil {
			return nil, err
		}
		return n, nil
	}
}

func toYAML(x any) ([]byte, error) {
	n, err := toNode(x)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var b strings.Builder
	enc := yamlv3.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return []byte(b.String()), nil
}

func toSlog(x any) slog.Value {
	switch x := x.(type) {
	case section:
		attrs := make([]slog.Attr, len(x))
		for i, e := range x {
			attrs[i] = slog.Attr{Key: e.key, Value: toSlog(e.val)}
		}
		return slog.GroupValue(attrs...)
	case []any:
		return slog.AnyValue(toMap(x))
	default:
		return slog.AnyValue(x)
	}
}
