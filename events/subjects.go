package events

import "fmt"

// Subject prefixes and wildcards of the contract. All subjects start with
// "agent." so that `nats sub 'agent.>'` tails everything, and the service name
// is the last token where there is one.
const (
	Root           = "agent"
	AllSubjects    = "agent.>"
	DispatchPrefix = "agent.dispatch."
	RequeuePrefix  = "agent.requeue."
	CallPrefix     = "agent.call."
	AttemptPrefix  = "agent.attempt."
	RetryPrefix    = "agent.retry."
	BreakerPrefix  = "agent.breaker."
	HealthPrefix   = "agent.health."
	StatusPrefix   = "agent.status."
	AlertPrefix    = "agent.alert."
	DeliveryPrefix = "agent.delivery."
	DispatchAll    = "agent.dispatch.>"
	RequeueAll     = "agent.requeue.>"
	CallAll        = "agent.call.>"
	AttemptAll     = "agent.attempt.>"
	RetryAll       = "agent.retry.>"
	BreakerAll     = "agent.breaker.>"
	HealthAll      = "agent.health.>"
	StatusAll      = "agent.status.>"
	AlertAll       = "agent.alert.>"
	DeliveryAll    = "agent.delivery.>"
)

// Stream names of the contract.
const (
	StreamCalls  = "CALLS"
	StreamEvents = "EVENTS"
	StreamAlerts = "ALERTS"
)

// StreamSubjects maps each stream to the subjects it stores.
var StreamSubjects = map[string][]string{
	StreamCalls:  {DispatchAll, RequeueAll},
	StreamEvents: {CallAll, AttemptAll, RetryAll, BreakerAll, HealthAll, StatusAll},
	StreamAlerts: {AlertAll, DeliveryAll},
}

// ValidToken reports whether s can be one subject token: not empty, no dots,
// no wildcards, no whitespace or control characters (NATS refuses a subject
// with whitespace, and a control character would corrupt the protocol line).
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("empty subject token")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '*' || c == '>':
			return fmt.Errorf("subject token %q contains %q", s, c)
		case c <= ' ' || c == 0x7f:
			return fmt.Errorf("subject token %q contains whitespace or a control character", s)
		}
	}
	return nil
}

// DispatchSubject is where the dispatcher publishes a campaign's call requests.
func DispatchSubject(campaign string) string { return DispatchPrefix + campaign }

// RequeueSubject holds the stored re-queue of one contact: a JetStream
// message schedule on CALLS that publishes the contact's next call request on
// DispatchSubject(campaign) when it is due, whether or not a dispatcher runs.
// One subject per contact, because the server keeps one schedule per subject.
func RequeueSubject(campaign, contactID string) string {
	return RequeuePrefix + campaign + "." + contactID
}

// CallSubject is agent.call.<outcome>.
func CallSubject(outcome string) string { return CallPrefix + outcome }

// AttemptSubject is agent.attempt.<service>.
func AttemptSubject(service string) string { return AttemptPrefix + service }

// RetrySubject is agent.retry.<service>.
func RetrySubject(service string) string { return RetryPrefix + service }

// BreakerSubject is agent.breaker.<service>.
func BreakerSubject(service string) string { return BreakerPrefix + service }

// HealthSubject is agent.health.<service>.
func HealthSubject(service string) string { return HealthPrefix + service }

// StatusSubject is agent.status.<service>.
func StatusSubject(service string) string { return StatusPrefix + service }

// AlertSubject is agent.alert.<severity>.
func AlertSubject(severity string) string { return AlertPrefix + severity }

// DeliverySubject is agent.delivery.<sink>.
func DeliverySubject(sink string) string { return DeliveryPrefix + sink }

func (e *Call) Subject() string     { return CallSubject(e.Outcome) }
func (e *Attempt) Subject() string  { return AttemptSubject(e.Service) }
func (e *Retry) Subject() string    { return RetrySubject(e.Service) }
func (e *Breaker) Subject() string  { return BreakerSubject(e.Service) }
func (e *Health) Subject() string   { return HealthSubject(e.Service) }
func (e *Status) Subject() string   { return StatusSubject(e.Service) }
func (e *Alert) Subject() string    { return AlertSubject(e.Severity) }
func (e *Delivery) Subject() string { return DeliverySubject(e.Sink) }
