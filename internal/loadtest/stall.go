package loadtest

import (
	"slices"
	"time"
)

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
