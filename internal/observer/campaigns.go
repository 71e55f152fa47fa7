package observer

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/control"
)

// terminalStatuses are the contact statuses a campaign is done with. The
// dispatcher owns the list (internal/dispatcher); the page needs only the
// names, and a status it does not know counts as not done.
var terminalStatuses = []string{"completed", "failed", "exhausted", "cancelled", "suppressed"}

// CampaignView is one campaign's progress as the page shows it.
type CampaignView struct {
	Name string `json:"name"`
	// Total is the campaign's contacts; Done those in a terminal status.
	Total int `json:"total"`
	Done  int `json:"done"`
	// Counts is the number of contacts per status (pending, queued,
	// in_progress, completed, failed, skipped, exhausted, ...).
	Counts  map[string]int `json:"counts"`
	Updated time.Time      `json:"updated"`
	// State is what the operator said (running, paused, cancelled), and the
	// pacing limits (0: none), from the bucket campaign_control.
	State              string `json:"state"`
	MaxCallsPerSecond  int    `json:"max_calls_per_second"`
	MaxConcurrentCalls int    `json:"max_concurrent_calls"`
}

// Running reports whether the campaign has contacts still to finish.
func (c CampaignView) Running() bool { return c.Done < c.Total }

// Campaigns follows the dispatcher's campaign state bucket, read-only,
// and counts each campaign's contacts by status: the progress bars of the
// status page. It reads the contact entries ("<campaign>.<contact_id>" with
// campaign, contact_id and status) and ignores any other key.
type Campaigns struct {
	bucket   string
	onChange func()
	log      *slog.Logger

	mu       sync.Mutex
	contacts map[string]contactEntry // by key
	byName   map[string]*CampaignView
	controls map[string]control.Control // by campaign
}

type contactEntry struct {
	campaign, status string
}

// NewCampaigns returns a tracker of bucket (dispatcher.state_bucket);
// onChange (may be nil) runs after every change.
func NewCampaigns(bucket string, log *slog.Logger, onChange func()) *Campaigns {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Campaigns{bucket: bucket, onChange: onChange, log: log,
		contacts: map[string]contactEntry{}, byName: map[string]*CampaignView{}, controls: map[string]control.Control{}}
}

// Run watches the bucket, and the operator's campaign_control bucket, until
// ctx is done; while one does not exist (no campaign has run yet, nothing
// provisioned) it retries every retry.
func (c *Campaigns) Run(ctx context.Context, conn *bus.Conn, retry time.Duration) {
	var wg sync.WaitGroup
	wg.Go(func() { c.follow(ctx, conn, c.bucket, retry, c.apply) })
	wg.Go(func() { c.follow(ctx, conn, control.Bucket, retry, c.applyControl) })
	wg.Wait()
}

func (c *Campaigns) follow(ctx context.Context, conn *bus.Conn, bucket string, retry time.Duration, apply func(jetstream.KeyValueEntry)) {
	warned := false
	conn.FollowKeyValue(ctx, bucket, retry, func(e jetstream.KeyValueEntry) {
		if e != nil {
			apply(e)
		}
	}, func(err error) {
		if !warned {
			c.log.Info("campaigns not followed yet, retrying", "bucket", bucket, "err", err)
			warned = true
		}
	})
}

// applyControl follows one campaign's control record; a deleted one is a
// running campaign without limits.
func (c *Campaigns) applyControl(e jetstream.KeyValueEntry) {
	c.mu.Lock()
	delete(c.controls, e.Key())
	if e.Operation() == jetstream.KeyValuePut {
		ctl, err := control.Decode(e.Value())
		if err != nil {
			c.mu.Unlock()
			c.log.Warn("unreadable campaign control record", "campaign", e.Key(), "err", err)
			return
		}
		c.controls[e.Key()] = ctl
	}
	c.mu.Unlock()
	c.onChange()
}

func (c *Campaigns) apply(e jetstream.KeyValueEntry) {
	var v struct {
		Campaign  string `json:"campaign"`
		ContactID string `json:"contact_id"`
		Status    string `json:"status"`
	}
	put := e.Operation() == jetstream.KeyValuePut
	if put && (json.Unmarshal(e.Value(), &v) != nil || v.Campaign == "" || v.ContactID == "" || v.Status == "") {
		return // not a contact entry
	}
	c.mu.Lock()
	if old, ok := c.contacts[e.Key()]; ok {
		c.count(old, -1)
		delete(c.contacts, e.Key())
	}
	if put {
		ce := contactEntry{campaign: v.Campaign, status: v.Status}
		c.contacts[e.Key()] = ce
		c.count(ce, 1)
		c.byName[v.Campaign].Updated = e.Created()
	}
	c.mu.Unlock()
	c.onChange()
}

func (c *Campaigns) count(ce contactEntry, n int) {
	cv := c.byName[ce.campaign]
	if cv == nil {
		cv = &CampaignView{Name: ce.campaign, Counts: map[string]int{}}
		c.byName[ce.campaign] = cv
	}
	cv.Total += n
	cv.Counts[ce.status] += n
	if cv.Counts[ce.status] == 0 {
		delete(cv.Counts, ce.status)
	}
	if slices.Contains(terminalStatuses, ce.status) {
		cv.Done += n
	}
	if cv.Total == 0 {
		delete(c.byName, ce.campaign)
	}
}

// View returns every campaign, running ones first, then the latest updated.
func (c *Campaigns) View() []CampaignView {
	c.mu.Lock()
	out := make([]CampaignView, 0, len(c.byName))
	for _, cv := range c.byName {
		v := *cv
		v.Counts = maps.Clone(cv.Counts)
		ctl := c.controls[cv.Name]
		v.State = string(ctl.Effective())
		v.MaxCallsPerSecond, v.MaxConcurrentCalls = ctl.MaxCallsPerSecond, ctl.MaxConcurrentCalls
		out = append(out, v)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b CampaignView) int {
		if a.Running() != b.Running() {
			if a.Running() {
				return -1
			}
			return 1
		}
		return cmp.Or(b.Updated.Compare(a.Updated), cmp.Compare(a.Name, b.Name))
	})
	return out
}
