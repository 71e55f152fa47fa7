package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/sink"
)

// DeliverTo sends alerts straight to one sink, outside the bus, for `observer
// replay --deliver SINK`: alerts below the sink's min_severity are left out,
// the rest go in batches of batch_size under the sink's own policy
// (retryable records again after the backoff or the sink's RetryAfter, up to
// max_attempts). It starts the sink's plugin if it is not running.
//
// Nothing is published on agent.delivery.<sink>: the caller is there to see
// the outcome. The error joins one error wrapping ErrNotDelivered per alert
// that was not delivered, with the sink's reason; nil means every alert sent
// was delivered. Alerts without an id are stamped first.
func (m *Manager) DeliverTo(ctx context.Context, sinkName string, alerts []*events.Alert) error {
	w, ok := m.byName[sinkName]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownSink, sinkName)
	}
	source := "observer-replay"
	if m.conn != nil {
		source = m.conn.Source
	}
	var errs []error
	records := make([]sink.Record, 0, len(alerts))
	fingerprints := make(map[string]string, len(alerts))
	for _, a := range alerts {
		if events.SeverityRank(a.Severity) < w.minRank {
			continue
		}
		events.Stamp(a, source, m.now())
		data, err := events.Encode(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("alert %s: %w: %w", a.Fingerprint, ErrNotDelivered, err))
			continue
		}
		records = append(records, sink.Record{ID: a.ID, Kind: sink.KindAlert, Subject: a.Subject(), Data: data})
		fingerprints[a.ID] = a.Fingerprint
	}
	if len(records) == 0 {
		return errors.Join(errs...)
	}
	if err := w.start(ctx); err != nil {
		return err
	}
	failed := func(r sink.Record, attempts int, reason string) {
		errs = append(errs, fmt.Errorf("alert %s (%s) to sink %s: %w after %d attempts: %s",
			r.ID, fingerprints[r.ID], sinkName, ErrNotDelivered, attempts, reason))
	}
	for len(records) > 0 {
		batch := records[:min(len(records), w.cfg.BatchSize)]
		records = records[len(batch):]
		for attempt := 1; len(batch) > 0; attempt++ {
			var again []sink.Record
			var wait time.Duration
			for i, r := range w.deliver(ctx, batch) {
				switch {
				case r.Status == sink.Delivered:
					w.delivered.Add(1)
					w.met.delivered.Inc()
				case r.Status == sink.Permanent:
					failed(batch[i], attempt, orElse(r.Reason, "permanent failure"))
				case attempt >= w.cfg.MaxAttempts:
					failed(batch[i], attempt, orElse(r.Reason, "retryable failure"))
				default:
					again = append(again, batch[i])
					wait = max(wait, w.retryDelay(r, uint64(attempt)))
					w.retried.Add(1)
					w.met.retried.Inc()
				}
			}
			batch = again
			if len(batch) == 0 {
				break
			}
			sleep(ctx, wait)
			if err := ctx.Err(); err != nil {
				for _, r := range append(batch, records...) {
					failed(r, attempt, err.Error())
				}
				return errors.Join(errs...)
			}
		}
	}
	return errors.Join(errs...)
}
