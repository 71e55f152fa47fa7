// Package sink is the plugin SDK for alert and log channels: the Sink
// interface a channel implements, the Serve helper its main calls, and the
// host side the observer uses to start, call, health-check and restart
// plugin processes.
//
// A sink plugin is a separate executable served with hashicorp/go-plugin over
// gRPC, so a new channel needs no rebuild of the observer. Its whole main:
//
//	package main
//
//	import (
//		"github.com/callagent/agent/sink"
//		"example.com/mysink"
//	)
//
//	func main() { sink.Serve(&mysink.Sink{}) }
//
// where mysink.Sink implements Configure, Deliver and Health. The observer
// hands Configure the sink's own configuration section (sinks[].config) as
// JSON, then batches of Records: events as JSON, decoded with events.Decode.
// Deliver answers with one Result per record: Delivered, Retryable (with an
// optional RetryAfter hint) or Permanent. Sinks classify; retrying, backoff
// and dead letters are the observer's. Logs written with slog inside the
// plugin (Serve makes Logger the default) reach the observer's log.
//
// On the host, Start runs one plugin process (verifying its SHA-256 first
// when the configuration pins one) and returns it as a Sink; a Supervisor is
// a Sink that keeps a plugin running across crashes and hangs (calls that
// keep timing out), with backoff.
//
// The protocol is sink/internal/pb/sink.proto with go-plugin's handshake
// (environment CALLAGENT_SINK_PLUGIN=9f1c3e7a-sink-v1, protocol version 1,
// gRPC, plugin name "sink"): a plugin in another language implements that
// service the way go-plugin documents for non-Go plugins. A Record's Data is
// the event's JSON; events/schema holds a JSON Schema per event type.
package sink
