// Command email is the email alert sink plugin: it sends plain-text alert
// mail over SMTP with STARTTLS and authentication, one message per service.
// The observer loads it; run by hand it only says so.
package main

import (
	"github.com/callagent/agent/plugins/email/internal/email"
	"github.com/callagent/agent/sink"
)

func main() { sink.Serve(&email.Sink{}) }
