package webhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
)

// AlertmanagerPayload is Prometheus Alertmanager's webhook body, version 4.
type AlertmanagerPayload struct {
	Version           string              `json:"version"`
	GroupKey          string              `json:"groupKey"`
	TruncatedAlerts   int                 `json:"truncatedAlerts"`
	Status            string              `json:"status"`
	Receiver          string              `json:"receiver"`
	GroupLabels       map[string]string   `json:"groupLabels"`
	CommonLabels      map[string]string   `json:"commonLabels"`
	CommonAnnotations map[string]string   `json:"commonAnnotations"`
	ExternalURL       string              `json:"externalURL"`
	Alerts            []AlertmanagerAlert `json:"alerts"`
}

// AlertmanagerAlert is one alert in an AlertmanagerPayload.
type AlertmanagerAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"` // zero while firing, as Alertmanager sends it
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// alertmanagerAlert maps an alert: the rule is the alertname, severity and
// service are labels beside the alert's own, summary and message are
// annotations.
func alertmanagerAlert(a *events.Alert, externalURL string) AlertmanagerAlert {
	labels := make(map[string]string, len(a.Labels)+3)
	maps.Copy(labels, a.Labels)
	labels["alertname"] = a.Rule
	labels["severity"] = a.Severity
	if a.Service != "" {
		labels["service"] = a.Service
	}
	ann := map[string]string{"summary": a.Summary}
	if a.Message != "" {
		ann["description"] = a.Message
	}
	if a.Count > 1 {
		ann["count"] = strconv.Itoa(a.Count)
	}
	if len(a.CallIDs) > 0 {
		ann["call_ids"] = strings.Join(a.CallIDs, ",")
	}
	out := AlertmanagerAlert{
		Status:       a.Status,
		Labels:       labels,
		Annotations:  ann,
		StartsAt:     a.StartsAt.UTC(),
		GeneratorURL: externalURL,
		Fingerprint:  a.Fingerprint,
	}
	if a.Status == events.AlertResolved && a.EndsAt != nil {
		out.EndsAt = a.EndsAt.UTC()
	}
	return out
}

// alertmanagerGroups groups the batch's alerts by service, as an
// Alertmanager route grouped by service would, in order of first
// appearance. Records that are not alerts are permanent failures: the
// format has no place for them.
func alertmanagerGroups(batch []sink.Record, results []sink.Result, cfg Config) []group {
	type acc struct {
		service string
		alerts  []AlertmanagerAlert
		recs    []int
	}
	var order []*acc
	byService := map[string]*acc{}
	for i, rec := range batch {
		ev, err := events.Decode(rec.Data)
		if err != nil {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent, Reason: err.Error()}
			continue
		}
		a, ok := ev.(*events.Alert)
		if !ok {
			results[i] = sink.Result{ID: rec.ID, Status: sink.Permanent,
				Reason: fmt.Sprintf("webhook: alertmanager format carries alerts only, not %s events", ev.Head().Type)}
			continue
		}
		g := byService[a.Service]
		if g == nil {
			g = &acc{service: a.Service}
			byService[a.Service] = g
			order = append(order, g)
		}
		g.alerts = append(g.alerts, alertmanagerAlert(a, cfg.ExternalURL))
		g.recs = append(g.recs, i)
	}
	out := make([]group, 0, len(order))
	for _, g := range order {
		p := AlertmanagerPayload{
			Version:           "4",
			Status:            events.AlertResolved,
			Receiver:          cfg.Receiver,
			GroupLabels:       map[string]string{},
			CommonLabels:      common(g.alerts, func(a AlertmanagerAlert) map[string]string { return a.Labels }),
			CommonAnnotations: common(g.alerts, func(a AlertmanagerAlert) map[string]string { return a.Annotations }),
			ExternalURL:       cfg.ExternalURL,
			Alerts:            g.alerts,
		}
		if g.service != "" {
			p.GroupLabels["service"] = g.service
		}
		p.GroupKey = groupKey(p.GroupLabels)
		for _, a := range g.alerts {
			if a.Status == events.AlertFiring {
				p.Status = events.AlertFiring // a group fires while any alert does
			}
		}
		body, _ := json.Marshal(p) // maps of strings and times always marshal
		out = append(out, group{body: body, recs: g.recs})
	}
	return out
}

// common returns the pairs every alert has with the same value.
func common(alerts []AlertmanagerAlert, of func(AlertmanagerAlert) map[string]string) map[string]string {
	out := map[string]string{}
	if len(alerts) == 0 {
		return out
	}
	maps.Copy(out, of(alerts[0]))
	for _, a := range alerts[1:] {
		m := of(a)
		for k, v := range out {
			if m[k] != v {
				delete(out, k)
			}
		}
	}
	return out
}

// groupKey is written like Alertmanager's: route matchers, then the group's
// labels.
func groupKey(labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return "{}:{" + strings.Join(kv, ", ") + "}"
}
