package bus_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
)

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A connect error names every server it tried but no password in the URL
// list: a cluster's list carries credentials in each URL.
func TestConnectErrorHidesEveryPassword(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	real := strings.TrimPrefix(srv.URL(), "nats://")
	tests := []struct {
		name string
		urls []string
	}{
		{"unreachable", []string{
			"nats://a:secret-one@" + closedPort(t),
			"nats://b:secret-two@" + closedPort(t),
			"nats://c:secret-three@" + closedPort(t),
		}},
		{"refused credentials", []string{
			"nats://a:secret-one@" + real,
			"nats://b:secret-two@" + real,
			"nats://c:secret-three@" + real,
		}},
		{"tokens", []string{
			"nats://secret-one@" + closedPort(t),
			"nats://secret-two@" + closedPort(t),
			"nats://secret-three@" + closedPort(t),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.NATS{URL: strings.Join(tt.urls, ","), ConnectTimeout: 300 * time.Millisecond}
			_, err := bus.Connect(context.Background(), cfg, "", "test", nil)
			if err == nil {
				t.Fatal("connected with bad URLs")
			}
			msg := err.Error()
			for _, pw := range []string{"secret-one", "secret-two", "secret-three"} {
				if strings.Contains(msg, pw) {
					t.Errorf("error shows password %q: %s", pw, msg)
				}
			}
			if got := strings.Count(msg, "******"); got != 3 {
				t.Errorf("error masks %d URLs, want 3: %s", got, msg)
			}
		})
	}
}
