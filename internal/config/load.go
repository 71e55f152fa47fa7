package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	koanfmaps "github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// Environment variables Load reads.
const (
	// EnvPrefix starts every configuration variable; "__" separates levels and
	// the rest is lower-cased: AGENT_SERVICES__ELEVENLABS__BASE_URL is
	// services.elevenlabs.base_url.
	EnvPrefix = "AGENT_"
	// EnvConfig names the configuration file when --config does not.
	EnvConfig = "AGENT_CONFIG"
)

// LoadOptions is what Load reads besides the file. The zero value loads the
// defaults alone.
type LoadOptions struct {
	// Args are the command-line arguments after the program (and subcommand)
	// name. Load parses them with FlagSet; positional arguments are left in
	// FlagSet.Args().
	Args []string
	// Environ is the environment as os.Environ returns it. Only main passes
	// os.Environ(); nil reads no environment, which keeps tests hermetic.
	Environ []string
	// FlagSet is the command's own flag set, with the command's flags already
	// defined; Load adds --config and --set to it and parses Args. Nil uses a
	// private flag set that knows only those two.
	FlagSet *flag.FlagSet
	// FlagKeys binds some of the command's own flags to configuration keys
	// (flag name -> key, such as "concurrency" -> "caller.concurrency"). A bound
	// flag given on the command line overrides the key like --set does; one
	// left out leaves the key alone.
	FlagKeys map[string]string
}

// Load builds the configuration from, lowest first: Default(); the YAML file
// named by --config, else by AGENT_CONFIG (no file at all is fine, a named
// file that is missing is an error); AGENT_ environment variables; the flags
// bound by FlagKeys; and each --set key=value in order. It then validates the
// result. Every problem is a *KeyError naming the key; all of them are
// returned together, joined. --help returns flag.ErrHelp.
//
// A sink is addressed in the environment and in --set by its name (or index):
// AGENT_SINKS__TELEGRAM__CONFIG__TOKEN sets sinks[name=telegram].config.token,
// adding a sink of that name if the file has none.
func Load(opts LoadOptions) (Config, error) {
	fs := opts.FlagSet
	if fs == nil {
		fs = flag.NewFlagSet("agent", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
	}
	for _, name := range []string{"config", "set"} {
		if fs.Lookup(name) != nil {
			return Config{}, fmt.Errorf("config: the command defines --%s, which config.Load owns", name)
		}
	}
	path := fs.String("config", "", "configuration `file` (YAML); default $"+EnvConfig)
	var sets setFlags
	fs.Var(&sets, "set", "set one configuration `key=value` over the file and environment (repeatable), e.g. --set caller.concurrency=8")
	if err := fs.Parse(opts.Args); err != nil {
		return Config{}, err
	}

	k := koanf.New(".")
	if err := k.Load(confmap.Provider(toMap(plain(reflect.ValueOf(Default()))).(map[string]any), ""), nil); err != nil {
		return Config{}, fmt.Errorf("config: load defaults: %w", err)
	}

	name := *path
	if name == "" {
		name = lookupEnv(opts.Environ, EnvConfig)
	}
	if name != "" {
		if _, err := os.Stat(name); err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if err := k.Load(file.Provider(name), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", name, err)
		}
	}

	// sources remembers which variable or flag set a key, for error messages.
	sources := map[string]string{}
	envLayer, err := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return opts.Environ },
		TransformFunc: func(name, value string) (string, any) {
			if name == EnvConfig {
				return "", nil
			}
			key := envKey(name)
			if key != "" {
				sources[key] = name
			}
			return key, value
		},
	}).Read()
	if err != nil {
		return Config{}, fmt.Errorf("config: read environment: %w", err)
	}
	if err := override(k, envLayer); err != nil {
		return Config{}, err
	}

	flagLayer := map[string]any{}
	var unbound []string
	for flagName := range opts.FlagKeys {
		if fs.Lookup(flagName) == nil {
			unbound = append(unbound, flagName)
		}
	}
	if len(unbound) > 0 {
		sort.Strings(unbound)
		return Config{}, fmt.Errorf("config: FlagKeys names flags the command does not define: %s", strings.Join(unbound, ", "))
	}
	fs.Visit(func(f *flag.Flag) {
		if key, ok := opts.FlagKeys[f.Name]; ok {
			flagLayer[key] = f.Value.String()
			sources[key] = "--" + f.Name
		}
	})
	for _, kv := range sets {
		flagLayer[kv.key] = kv.value
		sources[kv.key] = "--set " + kv.key
	}
	if err := override(k, koanfmaps.Unflatten(flagLayer, ".")); err != nil {
		return Config{}, err
	}

	cfg, err := decode(k.Raw())
	if err != nil && len(keyErrors(err)) == 0 {
		return Config{}, err
	}
	var p problems
	reported := map[string]bool{}
	for _, ke := range keyErrors(err) {
		p = append(p, ke)
		reported[ke.Key] = true
	}
	// Validate even a configuration that did not decode whole, so one run
	// shows every problem; a key that failed to decode is zero there, so its
	// complaints (and those below it) are dropped as repeats.
	for _, ke := range keyErrors(cfg.Validate()) {
		if !underReported(ke.Key, reported) {
			p = append(p, ke)
		}
	}
	for _, e := range p {
		ke := e.(*KeyError)
		ke.Source = sourceOf(ke.Key, sources)
	}
	if err := p.err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// sourceOf finds the variable or flag that set key or, for a section such as
// an unknown one, a key below it.
func sourceOf(key string, sources map[string]string) string {
	if s, ok := sources[key]; ok {
		return s
	}
	for _, k := range slices.Sorted(maps.Keys(sources)) {
		if strings.HasPrefix(k, key+".") {
			return sources[k]
		}
	}
	return ""
}

func underReported(key string, reported map[string]bool) bool {
	for {
		if reported[key] {
			return true
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return false
		}
		key = key[:i]
	}
}

// setFlags is the repeatable --set key=value.
type setFlags []keyValue

type keyValue struct{ key, value string }

func (s *setFlags) String() string {
	if s == nil {
		return ""
	}
	parts := make([]string, len(*s))
	for i, kv := range *s {
		parts[i] = kv.key + "=..."
	}
	return strings.Join(parts, " ")
}

func (s *setFlags) Set(v string) error {
	key, value, ok := strings.Cut(v, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return errors.New("want key=value, like caller.concurrency=8")
	}
	*s = append(*s, keyValue{key: key, value: value})
	return nil
}

// envKey turns AGENT_CALLER__FLEET_MAX_IN_FLIGHT into caller.fleet_max_in_flight.
func envKey(name string) string {
	rest, ok := strings.CutPrefix(name, EnvPrefix)
	if !ok || rest == "" {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(rest, "__", "."))
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range slices.Backward(environ) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// override merges one layer of string values (environment or flags) over k.
// Sinks are a list, which koanf would replace whole, so a sinks.<name>.<key>
// is merged into the list item of that name instead.
func override(k *koanf.Koanf, layer map[string]any) error {
	sinksLayer, hasSinks := layer["sinks"]
	rest := maps.Clone(layer)
	delete(rest, "sinks")
	if err := k.Load(confmap.Provider(rest, ""), nil); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if !hasSinks {
		return nil
	}
	list, _ := k.Get("sinks").([]any)
	switch v := sinksLayer.(type) {
	case string:
		// A whole list, written as YAML: AGENT_SINKS='[{name: log, plugin: jsonl, kind: log}]'.
		var whole []any
		if err := yamlv3.Unmarshal([]byte(v), &whole); err != nil {
			return &KeyError{Key: "sinks", Err: &typeError{value: v, want: "a YAML list of sinks", hint: "or set one sink's keys, like sinks.<name>.plugin"}}
		}
		list = whole
	case map[string]any:
		for _, ref := range slices.Sorted(maps.Keys(v)) {
			fields, ok := v[ref].(map[string]any)
			if !ok {
				return &KeyError{Key: "sinks." + ref, Err: &typeError{value: v[ref], want: "a sink", hint: "set its keys, like sinks." + ref + ".plugin"}}
			}
			i := findSink(list, ref)
			if i < 0 {
				list = append(list, map[string]any{"name": ref})
				i = len(list) - 1
			}
			item, ok := list[i].(map[string]any)
			if !ok {
				continue // not a section: decoding reports it
			}
			item = koanfmaps.Copy(item)
			koanfmaps.Merge(fields, item)
			list[i] = item
		}
	}
	return k.Set("sinks", list)
}

// findSink finds a sink by index or, ignoring case as the environment does, by
// name; -1 if there is none.
func findSink(list []any, ref string) int {
	if i, err := strconv.Atoi(ref); err == nil {
		if i >= 0 && i < len(list) {
			return i
		}
		return -1
	}
	for i, item := range list {
		if m, ok := item.(map[string]any); ok {
			if name, ok := m["name"].(string); ok && strings.EqualFold(name, ref) {
				return i
			}
		}
	}
	return -1
}

var durationType = reflect.TypeOf(time.Duration(0))

// decode turns the merged map into a Config. Unknown keys and sections of the
// wrong shape are found by walking the map beside the Config type (so every
// one is reported, with the keys that would be right); wrong scalar types by
// mapstructure, whose Go-flavoured field paths are translated back to keys.
func decode(raw map[string]any) (Config, error) {
	var p problems
	checkKeys(&p, "", raw, reflect.TypeOf(Config{}))
	reported := map[string]bool{}
	for _, ke := range keyErrors(p.err()) {
		reported[ke.Key] = true
	}

	var cfg Config
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			boolStringHook,
			mapstructure.StringToSliceHookFunc(","),
		),
		// The environment and --set give only strings.
		WeaklyTypedInput: true,
		TagName:          "koanf",
		Result:           &cfg,
	})
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := d.Decode(raw); err != nil {
		des := decodeErrors(err)
		// mapstructure walks maps in random order; sort for a stable message.
		slices.SortFunc(des, func(a, b *mapstructure.DecodeError) int { return strings.Compare(a.Name(), b.Name()) })
		for _, de := range des {
			key := keyPath(de.Name(), raw)
			if underReported(key, reported) {
				continue
			}
			reported[key] = true
			p.add(key, describe(de.Unwrap()))
		}
	}
	return cfg, p.err()
}

// durationHook reads "90s" and "1m30s". A bare number is refused rather than
// taken as nanoseconds: "timeout: 30" almost never means 30ns.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	hint := `write it with a unit, like "30s" or "1m30s"`
	switch v := data.(type) {
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return time.Duration(0), nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, &typeError{value: v, want: "a duration", hint: hint}
		}
		return d, nil
	case int, int64, int32, uint, uint64, uint32, float64, float32:
		if reflect.ValueOf(v).IsZero() {
			return time.Duration(0), nil
		}
		return nil, &typeError{value: v, want: "a duration", hint: hint}
	default:
		return nil, &typeError{value: v, want: "a duration", hint: hint}
	}
}

// boolStringHook keeps "enabled: true" under a free-form string map as
// "true"; weak decoding alone would make it "1".
func boolStringHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.Bool && to.Kind() == reflect.String {
		return strconv.FormatBool(data.(bool)), nil
	}
	return data, nil
}

func decodeErrors(err error) []*mapstructure.DecodeError {
	var out []*mapstructure.DecodeError
	var walk func(error)
	walk = func(err error) {
		if de, ok := err.(*mapstructure.DecodeError); ok {
			out = append(out, de)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
		if w, ok := err.(interface{ Unwrap() error }); ok && w.Unwrap() != nil {
			walk(w.Unwrap()) // mapstructure wraps its joined errors once
		}
	}
	walk(err)
	return out
}

// describe turns a mapstructure error into "x is not an integer".
func describe(err error) error {
	var te *typeError
	if errors.As(err, &te) {
		return te
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return &typeError{value: pe.Value, want: kindName(pe.Expected.Type())}
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return &typeError{value: ue.Value, want: kindName(ue.Expected.Type())}
	}
	return fmt.Errorf("%w: %w", ErrWrongType, err)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a section"
	default:
		return "a " + t.String()
	}
}

// keyPath turns mapstructure's "services[elevenlabs].retry.jitter" into
// "services.elevenlabs.retry.jitter" and "sinks[1].kind" into
// "sinks.telegram.kind".
func keyPath(name string, raw map[string]any) string {
	var segs []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			segs = append(segs, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '.':
			flush()
		case '[':
			flush()
			end := strings.IndexByte(name[i:], ']')
			if end < 0 {
				cur.WriteString(name[i+1:])
				i = len(name)
				break
			}
			segs = append(segs, name[i+1:i+end])
			i += end
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	if len(segs) >= 2 && segs[0] == "sinks" {
		if i, err := strconv.Atoi(segs[1]); err == nil {
			list, _ := raw["sinks"].([]any)
			var item any
			if i < len(list) {
				item = list[i]
			}
			head := sinkKey(i, itemName(item))
			return strings.Join(append([]string{head}, segs[2:]...), ".")
		}
	}
	return strings.Join(segs, ".")
}

func itemName(item any) string {
	m, _ := item.(map[string]any)
	name, _ := m["name"].(string)
	return name
}

// sinkKey names a sink in messages the way the environment and --set address
// it: by name, or by index when the name is not usable.
func sinkKey(i int, name string) string {
	if isToken(name) {
		return "sinks." + name
	}
	return fmt.Sprintf("sinks[%d]", i)
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// checkKeys walks v beside type t and reports keys t does not have and
// sections or lists where t wants the other.
func checkKeys(p *problems, path string, v any, t reflect.Type) {
	if v == nil || t == durationType {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, &typeError{value: v, want: "a section", hint: "keys: " + strings.Join(fieldKeys(t), ", ")})
			return
		}
		for _, key := range slices.Sorted(maps.Keys(m)) {
			f, ok := fieldByKey(t, key)
			if !ok {
				p.add(joinKey(path, key), fmt.Errorf("%w (known: %s)", ErrUnknownKey, strings.Join(fieldKeys(t), ", ")))
				continue
			}
			checkKeys(p, joinKey(path, key), m[key], f.Type)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, &typeError{value: v, want: "a section"})
			return
		}
		if t.Elem().Kind() == reflect.Interface {
			return // free-form: handed on as it is
		}
		for _, key := range slices.Sorted(maps.Keys(m)) {
			checkKeys(p, joinKey(path, key), m[key], t.Elem())
		}
	case reflect.Slice:
		if t.Elem().Kind() != reflect.Struct {
			return // a list of scalars: mapstructure checks the items
		}
		list, ok := v.([]any)
		if !ok {
			p.add(path, &typeError{value: v, want: "a list"})
			return
		}
		for i, item := range list {
			itemKey := fmt.Sprintf("%s[%d]", path, i)
			if path == "sinks" {
				itemKey = sinkKey(i, itemName(item))
			}
			checkKeys(p, itemKey, item, t.Elem())
		}
	}
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("koanf") == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func fieldKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if key := t.Field(i).Tag.Get("koanf"); key != "" {
			keys = append(keys, key)
		}
	}
	return keys
}
