package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/control"
)

// Summary is a campaign's outcome, contact by contact. Numbers are masked.
type Summary struct {
	Campaign  string `json:"campaign"`
	Total     int    `json:"total"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Exhausted int    `json:"exhausted"`
	// Cancelled and Suppressed were not rung: the campaign was cancelled,
	// the number is on the do-not-call list.
	Cancelled  int `json:"cancelled"`
	Suppressed int `json:"suppressed"`
	// Waiting counts contacts pending, postponed or skipped (re-queued).
	Waiting  int `json:"waiting"`
	InFlight int `json:"in_flight"`
	// Finished is true when every contact is completed, failed, exhausted,
	// cancelled or suppressed.
	Finished bool `json:"finished"`
	// Control is the campaign's pause/cancel state and pacing, where the
	// status command read it.
	Control  *control.Control `json:"control,omitempty"`
	Contacts []ContactState   `json:"contacts"`
}

func newSummary(campaign string, list []ContactState) *Summary {
	s := &Summary{Campaign: campaign, Total: len(list), Contacts: list}
	for _, c := range list {
		switch {
		case c.Status == StatusCompleted:
			s.Succeeded++
		case c.Status == StatusFailed:
			s.Failed++
		case c.Status == StatusExhausted:
			s.Exhausted++
		case c.Status == StatusCancelled:
			s.Cancelled++
		case c.Status == StatusSuppressed:
			s.Suppressed++
		case c.Status.inFlight():
			s.InFlight++
		default:
			s.Waiting++
		}
	}
	s.Finished = s.done() == s.Total
	return s
}

func (s *Summary) done() int {
	return s.Succeeded + s.Failed + s.Exhausted + s.Cancelled + s.Suppressed
}

// Line is the one-line result, such as "2/3 contacts succeeded (66.7%)".
func (s *Summary) Line() string {
	pct := 0.0
	if s.Total > 0 {
		pct = 100 * float64(s.Succeeded) / float64(s.Total)
	}
	return fmt.Sprintf("%d/%d contacts succeeded (%.1f%%)", s.Succeeded, s.Total, pct)
}

// WriteText writes a table of every contact's outcome, attempts and reason,
// then the result line.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Campaign %s\n", s.Campaign)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTACT\tID\tSTATUS\tATTEMPTS\tREASON")
	for _, c := range s.Contacts {
		reason := c.LastReason
		if c.NextAttemptAt != nil && !c.Status.Terminal() {
			reason = strings.TrimPrefix(reason+"; next attempt "+c.NextAttemptAt.UTC().Format(time.DateTime+" MST"), "; ")
		}
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", c.Contact, c.ContactID, c.Status, c.Attempts, c.MaxAttempts, reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.Control != nil {
		fmt.Fprintln(&b, s.Control)
	}
	if !s.Finished {
		fmt.Fprintf(&b, "Not finished: %d waiting, %d in flight (run again to resume).\n", s.Waiting, s.InFlight)
	}
	fmt.Fprintln(&b, s.Line())
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the summary as one indented JSON document, with the
// result line as "result".
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		*Summary
		Result string `json:"result"`
	}{s, s.Line()})
}

// Summarize summarizes every contact a campaign's state bucket holds, in the
// order of the file that added them.
func Summarize(ctx context.Context, kv jetstream.KeyValue, campaign string) (*Summary, error) {
	lister, err := kv.ListKeysFiltered(ctx, campaign+".*")
	if err != nil {
		return nil, fmt.Errorf("list campaign %s: %w", campaign, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	list := make([]ContactState, 0, len(keys))
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			continue // the lister may repeat a key that changed while listing
		}
		seen[k] = true
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("campaign %s: %w", campaign, err)
		}
		st, err := decodeState(e.Value())
		if err != nil {
			return nil, fmt.Errorf("campaign %s: key %s: %w", campaign, k, err)
		}
		list = append(list, *st)
	}
	if len(list) == 0 {
		if _, err := kv.Get(ctx, campaign); errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: %q", ErrUnknownCampaign, campaign)
		}
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Line != list[j].Line {
			return list[i].Line < list[j].Line
		}
		return list[i].ContactID < list[j].ContactID
	})
	return newSummary(campaign, list), nil
}

// ErrUnknownCampaign means the state bucket has no such campaign.
var ErrUnknownCampaign = errors.New("unknown campaign")
