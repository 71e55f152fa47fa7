package caller

import "github.com/nats-io/nats.go/jetstream"

// WrapProgress lets a test put a faulty bucket between a caller and its
// per-call progress.
func WrapProgress(c *Caller, wrap func(jetstream.KeyValue) jetstream.KeyValue) {
	c.progress = wrap(c.progress)
}

// WrapDialer puts a test's dialer around the caller's telephony.
func WrapDialer(c *Caller, wrap func(Dialer) Dialer) { c.svc.Telephony = wrap(c.svc.Telephony) }
