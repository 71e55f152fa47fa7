package bus

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// For bus's own tests, which check what the connection does underneath.

func NATSConn(c *Conn) *nats.Conn           { return c.nc }
func JetStream(c *Conn) jetstream.JetStream { return c.js }
