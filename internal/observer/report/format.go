package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats a report is written in.
const (
	FormatText     = "text"
	FormatMarkdown = "markdown"
	FormatJSON     = "json"
)

// ErrFormat is returned for a format other than text, markdown and json.
var ErrFormat = errors.New("unknown report format")

// Write writes r to w in format.
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case FormatText, "":
		return r.WriteText(w)
	case FormatMarkdown, "md":
		return r.WriteMarkdown(w)
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return fmt.Errorf("%w %q (want text, markdown or json)", ErrFormat, format)
}

const stamp = "2006-01-02 15:04:05.000Z"

func ts(t time.Time) string { return t.UTC().Format(stamp) }

func optTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return ts(*t)
}

func optDur(d *Duration) string {
	if d == nil {
		return "-"
	}
	return d.String()
}

func (r *Report) headline() []string {
	c := r.Calls
	done := c.Completed + c.Failed + c.Skipped
	calls := fmt.Sprintf("%d calls: %d completed, %d failed, %d skipped", c.Total, c.Completed, c.Failed, c.Skipped)
	if c.InFlight > 0 {
		calls += fmt.Sprintf(", %d without an outcome in the window", c.InFlight)
	}
	if done > 0 {
		calls += fmt.Sprintf(" (%d/%d succeeded)", c.Completed, done)
	}
	resolved := len(r.Alerts) - r.Fired()
	return []string{
		fmt.Sprintf("Window: %s .. %s (%s)", ts(r.From), ts(r.To), r.To.Sub(r.From).Round(time.Second)),
		fmt.Sprintf("Events: %d", r.Events),
		"Calls: " + calls,
		fmt.Sprintf("Alerts: %d fired, %d resolved", r.Fired(), resolved),
	}
}

func (s Service) impactEnd() string {
	switch {
	case s.ImpactBegan == nil:
		return "-"
	case s.ImpactEnded == nil:
		return "ongoing"
	}
	return ts(*s.ImpactEnded)
}

// WriteText writes the report for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Post-mortem\n")
	for _, l := range r.headline() {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("\nServices\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tIMPACT BEGAN\tIMPACT ENDED\tDETECT\tRECOVER\tCALLS AFFECTED\tFAILED/ATTEMPTS\tRETRIES\tALERTS\tSTATUS")
	for _, s := range r.Services {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d/%d\t%d\t%d\t%s\n", s.Service, optTime(s.ImpactBegan, "-"), s.impactEnd(),
			optDur(s.TimeToDetect), optDur(s.TimeToRecover), s.CallsAffected, s.Failures, s.Attempts, s.Retries, s.AlertsFired, orElse(s.FinalStatus, "-"))
	}
	tw.Flush()
	if len(r.Alerts) > 0 {
		b.WriteString("\nAlerts\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, a := range r.Alerts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", ts(a.Time), a.Status, a.Severity, a.Rule, alertText(a))
		}
		tw.Flush()
	}
	b.WriteString("\nTimeline\n")
	for _, e := range r.Timeline {
		fmt.Fprintf(&b, "  %s  %-7s  %s\n", ts(e.Time), e.Kind, e.Text)
	}
	if r.TimelineOmitted > 0 {
		fmt.Fprintf(&b, "  ... %d more entries left out\n", r.TimelineOmitted)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func alertText(a AlertLine) string {
	s := a.Summary
	if a.Message != "" {
		s += ": " + a.Message
	}
	if len(a.CallIDs) > 0 {
		s += " [" + strings.Join(a.CallIDs, ", ") + "]"
	}
	return s
}

// WriteMarkdown writes the report as a Markdown document, for an incident ticket.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# Post-mortem\n\n")
	for _, l := range r.headline() {
		b.WriteString("- " + md(l) + "\n")
	}
	b.WriteString("\n## Services\n\n")
	b.WriteString("| Service | Impact began | Impact ended | Time to detect | Time to recover | Calls affected | Failed/attempts | Retries | Alerts | Status |\n")
	b.WriteString("|---|---|---|---|---|---:|---:|---:|---:|---|\n")
	for _, s := range r.Services {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d/%d | %d | %d | %s |\n", md(s.Service), optTime(s.ImpactBegan, "-"), s.impactEnd(),
			optDur(s.TimeToDetect), optDur(s.TimeToRecover), s.CallsAffected, s.Failures, s.Attempts, s.Retries, s.AlertsFired, orElse(s.FinalStatus, "-"))
	}
	if len(r.Alerts) > 0 {
		b.WriteString("\n## Alerts\n\n| Time | Status | Severity | Rule | Alert |\n|---|---|---|---|---|\n")
		for _, a := range r.Alerts {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", ts(a.Time), a.Status, a.Severity, md(a.Rule), md(alertText(a)))
		}
	}
	b.WriteString("\n## Timeline\n\n| Time | Kind | Event |\n|---|---|---|\n")
	for _, e := range r.Timeline {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", ts(e.Time), e.Kind, md(e.Text))
	}
	if r.TimelineOmitted > 0 {
		fmt.Fprintf(&b, "\n%d more entries left out.\n", r.TimelineOmitted)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// md escapes the characters that would break a table cell or start markup.
func md(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "*", `\*`, "_", `\_`, "`", "\\`").Replace(s)
}
