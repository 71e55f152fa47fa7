// Package events owns the wire contract of the call agent: the event types every
// process publishes under agent.>, the subjects they travel on, their validation,
// the JSON Schemas that plugin authors in other languages read, and the log
// record derived from every event.
//
// # Messages
//
// Every event is one flat JSON object, so that `nats sub`, a JSON-lines file and
// a spreadsheet row all read the same way. The common fields of [Header] stand
// beside the type's own fields:
//
//	id      unique event id, also the Nats-Msg-Id header: a republish is deduplicated
//	type    call, attempt, retry, breaker, health, status, alert or delivery
//	time    RFC 3339 in UTC with sub-second precision
//	source  the emitting process instance
//	v       schema version, 1
//
// Events about a call also carry [CallRef]: call_id, campaign, contact_id and
// contact. The contact is always a masked phone number ([MaskPhone], such as
// +91888****882); an event holding a full number is refused by Validate. The
// only message with the full number is the [CallRequest] on agent.dispatch.
//
// Readers ignore fields they do not know, so fields can be added within a
// version; removing or renaming one, or changing its meaning, takes a new v.
// [Decode] refuses malformed JSON, an unknown type, a missing required field, a
// value outside its enum and a payload over [MaxSize] with an error matched by
// errors.Is against [ErrMalformed], [ErrUnknownType], [ErrMissing],
// [ErrInvalid] or [ErrTooLarge]; a [*FieldError] names the field. A zero
// value (empty string, 0, zero time) counts as absent.
//
// # Schemas
//
// [Schema] returns the JSON Schema (draft 2020-12) of each type, also kept in
// this package's schema/ directory; testdata/ holds one golden example of each,
// checked against its schema and against this package's decoder.
//
// # Subjects
//
// Every subject starts with "agent." and, where there is one, ends with the
// service name, so `nats sub 'agent.>'` tails everything and
// `nats sub 'agent.*.elevenlabs'` one service: agent.call.<outcome>,
// agent.attempt.<service>, agent.retry.<service>, agent.breaker.<service>,
// agent.health.<service>, agent.status.<service>, agent.alert.<severity>,
// agent.delivery.<sink> and agent.dispatch.<campaign>. An event's Subject
// method builds its subject; a service, sink or campaign name must be a valid
// subject token ([ValidToken]).
//
// # Logs
//
// [LogRecordOf] turns any event into a [LogRecord], the seeds' log schema:
// timestamp, service, error category, retry count, circuit breaker state and
// message, which the log sinks write.
package events
