package sink

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/callagent/agent/backoff"
)

// Record kinds.
const (
	KindAlert = "alert" // an alert event from the ALERTS stream
	KindEvent = "event" // any other event, for log sinks
)

// Record is one message handed to a sink.
type Record struct {
	// ID is the event id; results are matched to records by it.
	ID string
	// Kind is KindAlert or KindEvent.
	Kind string
	// Subject is the NATS subject the event was published on.
	Subject string
	// Data is the event's JSON as published; decode it with events.Decode.
	Data []byte
}

// Status is what became of one record.
type Status int

// The statuses a sink reports. The zero value is not a valid status: a
// result left at zero is treated by the host as Retryable, so a sink that
// forgets to say never loses a record.
const (
	Delivered Status = iota + 1 // the channel accepted the record
	Retryable                   // try again later (network, 5xx, rate limit)
	Permanent                   // retrying cannot help (bad address, 4xx, rejected credentials)
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// Result reports the fate of one record of a batch.
type Result struct {
	ID     string
	Status Status
	// Reason says why a record was not delivered, for the dead letter and
	// the log. It must not contain secrets.
	Reason string
	// RetryAfter is the channel's own hint for a retryable record (a
	// Telegram retry_after, a Retry-After header); 0 leaves the delay to the
	// host's policy.
	RetryAfter time.Duration
}

// Sink is what a plugin implements. The host calls Configure once before
// anything else (and again after a restart), then Deliver with one batch at a
// time; Health may run concurrently with Deliver.
type Sink interface {
	// Configure hands the sink its own configuration section as JSON. An
	// invalid configuration is an error wrapping ErrConfig that names the key.
	Configure(ctx context.Context, config []byte) error
	// Deliver sends a batch and returns one Result per record, in any order.
	// A non-nil error means the fate of every record is unknown and the whole
	// batch is retried; per-record outcomes belong in the results.
	// Sinks classify, they do not retry: the host owns the retry policy.
	Deliver(ctx context.Context, batch []Record) ([]Result, error)
	// Health reports whether the sink can deliver now.
	Health(ctx context.Context) error
}

// Errors matched with errors.Is. They survive the trip between plugin and
// host.
var (
	// ErrConfig marks an invalid sink configuration: restarting cannot fix it.
	ErrConfig = errors.New("invalid sink config")
	// ErrUnavailable means the plugin process is not running or not
	// answering; the batch was not delivered and should be retried.
	ErrUnavailable = errors.New("sink plugin unavailable")
	// ErrChecksum means the plugin binary does not match its pinned SHA-256.
	ErrChecksum = errors.New("sink plugin checksum mismatch")
)

// Each returns one Result with the same status, reason and delay for every
// record of batch: what a sink reports when a batch shares one fate.
func Each(batch []Record, status Status, reason string, retryAfter time.Duration) []Result {
	out := make([]Result, len(batch))
	for i, r := range batch {
		out[i] = Result{ID: r.ID, Status: status, Reason: reason, RetryAfter: retryAfter}
	}
	return out
}

// RetryAfter returns the wait an HTTP response asks for in Retry-After-Ms
// or Retry-After (delay-seconds or an HTTP date, measured from now), 0 when
// it asks for none: put it in Result.RetryAfter of a Retryable record. It is
// the parser the whole product uses (package backoff).
func RetryAfter(h http.Header, now time.Time) time.Duration {
	return backoff.RetryAfter(h, now)
}
