package loadtest

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. It returns 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted)) * p / 100))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// ParseRate reads a rate such as "5/s", "300/m", "2/h" or "5" (per second)
// and returns it per second.
func ParseRate(s string) (float64, error) {
	num, unit, found := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("rate %q: want a positive number per unit, such as 5/s or 300/m", s)
	}
	if !found {
		return n, nil
	}
	per := map[string]time.Duration{"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[strings.TrimSpace(unit)]
	if per == 0 {
		return 0, fmt.Errorf("rate %q: unit %q: want ms, s, m or h", s, unit)
	}
	return n * float64(time.Second) / float64(per), nil
}
