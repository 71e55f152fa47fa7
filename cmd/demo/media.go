package main

import (
	"context"
	"fmt"

	"github.com/callagent/agent/internal/simulator"
)

// media returns what the simulated provider fetched for each answered call,
// by call id.
func (a *admin) media(ctx context.Context) (map[string]simulator.Media, error) {
	var out map[string]simulator.Media
	if err := a.get(ctx, "/admin/media", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// audioNote is what the result line adds about callID's audio: its size as
// the call event reports it stored, and whether the provider fetched exactly
// those bytes, as the simulator reports; "" for a call with no audio stored.
func (d *demo) audioNote(ctx context.Context, callID string) string {
	n := d.tr.audioBytes(callID)
	if callID == "" || n == 0 {
		return ""
	}
	stored := fmt.Sprintf("audio %s stored", kib(n))
	all, err := d.admin.media(ctx)
	if err != nil {
		return fmt.Sprintf(" (%s; %v)", stored, err)
	}
	switch m, ok := all[callID]; {
	case !ok:
		return fmt.Sprintf(" (%s, not fetched by the provider)", stored)
	case m.Error != "":
		return fmt.Sprintf(" (%s, the provider could not load it: %s)", stored, m.Error)
	case !m.Played || int64(m.AudioBytes) != n:
		return fmt.Sprintf(" (%s, the provider fetched %s of other audio)", stored, kib(int64(m.AudioBytes)))
	}
	return fmt.Sprintf(" (%s, fetched by the provider)", stored)
}

// kib shows a size in KiB with one decimal.
func kib(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }
