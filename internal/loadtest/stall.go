package loadtest

import (
	"context"
	"slices"
	"time"

	"github.com/callagent/agent/internal/stack"
)

// Stalls is Stall of each kill of kills (in order), each one's window
// ending within after it or at the next kill, whichever is first.
func Stalls(progress, kills []time.Time, within time.Duration) []time.Duration {
	out := make([]time.Duration, len(kills))
	for i, k := range kills {
		if i+1 == len(kills) {
			out[i] = Stall(progress, k, within)
			continue
		}
		// The gap the next kill falls in is the next kill's.
		next := kills[i+1]
		var before []time.Time
		for _, t := range progress {
			if t.Before(next) {
				before = append(before, t)
			}
		}
		out[i] = Stall(before, k, min(within, next.Sub(k)))
	}
	return out
}

// Stall is how long progress stopped around a disruption at k (a node
// killed): the longest gap between consecutive progress times (calls
// ending) that starts between the last one before k and k+within. With no
// progress after k at all, it is the time from the last progress before k
// to k+within: at least that long.
func Stall(progress []time.Time, k time.Time, within time.Duration) time.Duration {
	ts := slices.Clone(progress)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	end := k.Add(within)
	prev := k
	// The last progress at or before k starts the gap the kill fell in.
	if i, _ := slices.BinarySearchFunc(ts, k, func(a, b time.Time) int { return a.Compare(b) }); i > 0 {
		prev = ts[i-1]
		ts = ts[i:]
	}
	if len(ts) == 0 {
		return end.Sub(prev)
	}
	var longest time.Duration
	for _, t := range ts {
		if prev.After(end) {
			break
		}
		longest = max(longest, t.Sub(prev))
		prev = t
	}
	return longest
}

// killLeaders kills the node leading CALLS a fifth of the way through,
// restarts it a tenth later and, once every replica is current, kills the
// node leading EVENTS (two nodes down of three would leave no quorum). It
// returns the kills made; a failure is reported and ends the kills.
func (e *env) killLeaders(ctx context.Context, t *tally, started time.Time) []Kill {
	var kills []Kill
	wait := func(n int) bool {
		for t.ended() < n {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(20 * time.Millisecond):
			}
		}
		return true
	}
	kill := func(stream string) (string, bool) {
		leader, err := stack.Leader(ctx, e.admin, stream, 10*time.Second)
		if err == nil {
			at := time.Now()
			if err = e.cluster.Kill(ctx, leader); err == nil {
				kills = append(kills, Kill{Node: leader, Stream: stream, At: at.Sub(started), at: at})
				e.progressf("kill -9 %s, the leader of %s, after %d contacts ended", leader, stream, t.ended())
				return leader, true
			}
		}
		e.progressf("kill the leader of %s: %v", stream, err)
		return "", false
	}
	total := t.total()
	if !wait(total / 5) {
		return kills
	}
	first, ok := kill("CALLS")
	if !ok || !wait(total/5+total/10) {
		return kills
	}
	if err := e.cluster.Restart(ctx, first); err != nil {
		e.progressf("restart %s: %v", first, err)
		return kills
	}
	streams := []string{"CALLS", "EVENTS", "ALERTS", "KV_calls", "OBJ_call_audio"}
	if err := stack.Current(ctx, e.admin, time.Minute, streams...); err != nil {
		e.progressf("%s back: %v", first, err)
		return kills
	}
	if err := stack.ConsumersCurrent(ctx, e.admin, time.Minute, "CALLS", "callers"); err != nil {
		e.progressf("%s back: %v", first, err)
		return kills
	}
	e.progressf("%s restarted and current", first)
	kill("EVENTS")
	return kills
}
