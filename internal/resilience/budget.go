package resilience

import (
	"sync"
	"time"
)

// Defaults of a Budget.
const (
	DefaultBudgetWindow = time.Minute
	// DefaultBudgetMinRetries is granted in every window whatever the traffic,
	// so that a quiet service (a few calls a minute) still gets its retries.
	DefaultBudgetMinRetries = 10
)

// budgetBuckets is how finely the window slides: old traffic leaves it a
// tenth of a window at a time rather than all at once.
const budgetBuckets = 10

// Budget caps a service's retries at a share of its requests over a sliding
// window, plus a minimum per window. Backoff spaces one call's retries; the
// budget bounds what all calls together add when the service is struggling,
// so that a hundred workers retrying at once cannot triple the load on a
// service that is already failing (a retry storm). A nil *Budget grants
// everything. It is safe for concurrent use.
type Budget struct {
	ratio   float64
	min     int
	width   time.Duration
	clock   Clock
	mu      sync.Mutex
	buckets [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	slot     int64 // which width-long slice of time the counts belong to
	requests int
	retries  int
}

// NewBudget returns a budget that grants, within any window, minRetries plus
// ratio times the requests made in it. A window of 0 means
// DefaultBudgetWindow, a minRetries of 0 means DefaultBudgetMinRetries, and a
// nil clock the system clock.
func NewBudget(ratio float64, window time.Duration, minRetries int, clock Clock) *Budget {
	if window <= 0 {
		window = DefaultBudgetWindow
	}
	if minRetries <= 0 {
		minRetries = DefaultBudgetMinRetries
	}
	width := window / budgetBuckets
	if width <= 0 {
		width = 1
	}
	return &Budget{ratio: max(ratio, 0), min: minRetries, width: width, clock: clockOr(clock)}
}

// Request records a first attempt.
func (b *Budget) Request() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bucket().requests++
}

// Retry records a retry and reports true when the budget has room for it;
// otherwise it records nothing and reports false.
func (b *Budget) Retry() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.bucket()
	requests, retries := b.totals(cur.slot)
	if float64(retries) >= float64(b.min)+b.ratio*float64(requests) {
		return false
	}
	cur.retries++
	return true
}

// bucket returns the current bucket, emptied if it last held an older slot.
func (b *Budget) bucket() *budgetBucket {
	slot := b.clock.Now().UnixNano() / int64(b.width)
	bk := &b.buckets[slot%budgetBuckets]
	if bk.slot != slot {
		*bk = budgetBucket{slot: slot}
	}
	return bk
}

func (b *Budget) totals(now int64) (requests, retries int) {
	for i := range b.buckets {
		if bk := &b.buckets[i]; now-bk.slot < budgetBuckets {
			requests += bk.requests
			retries += bk.retries
		}
	}
	return requests, retries
}
