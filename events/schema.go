package events

import (
	"embed"
	"fmt"
)

// schemas holds one JSON Schema per message type, named <type>.json. They are
// files rather than generated values so that plugin authors can read them in
// the repository; the package's tests keep them in step with the Go types.
//
//go:embed schema/*.json
var schemas embed.FS

// Schema returns the JSON Schema (draft 2020-12) of the message type t: one of
// Types, or TypeRequest for the call request. Each call returns a fresh copy.
func Schema(t Type) ([]byte, error) {
	if New(t) == nil && t != TypeRequest {
		return nil, fmt.Errorf("schema: %w: %q", ErrUnknownType, t)
	}
	b, err := schemas.ReadFile("schema/" + string(t) + ".json")
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", t, err)
	}
	return b, nil
}
