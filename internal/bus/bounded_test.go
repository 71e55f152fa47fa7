package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/natstest"
)

// TestRequestsAreBounded: a request the server takes and never answers (a
// stream leader killed before it replied) fails within bus.RequestTimeout,
// though the caller's context has minutes left; before, a KV write or a
// publish waited for the whole context, holding its work-queue message.
// A plain server stands in for JetStream: it answers the bucket's stream
// info, then swallows every write and publish.
func TestRequestsAreBounded(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)

	raw, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	info, _ := json.Marshal(map[string]any{
		"type":    "io.nats.jetstream.api.v1.stream_info_response",
		"config":  map[string]any{"name": "KV_ghost", "subjects": []string{"$KV.ghost.>"}, "max_msgs_per_subject": 1, "retention": "limits", "storage": "file", "num_replicas": 1},
		"created": time.Now().UTC(),
		"state":   map[string]any{},
	})
	if _, err := raw.Subscribe("$JS.API.STREAM.INFO.KV_ghost", func(m *nats.Msg) { _ = m.Respond(info) }); err != nil {
		t.Fatal(err)
	}
	// Taken, never answered.
	for _, subj := range []string{"$KV.ghost.>", "agent.call.>"} {
		if _, err := raw.Subscribe(subj, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := bus.Connect(ctx, config.NATS{URL: srv.ClientURL()}, config.RoleCaller, "caller-1", natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	kv, err := conn.OpenKeyValue(ctx, "ghost")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		op   func(context.Context) error
	}{
		{"kv create", func(ctx context.Context) error { _, err := kv.Create(ctx, "k", []byte("v")); return err }},
		{"kv update", func(ctx context.Context) error { _, err := kv.Update(ctx, "k", []byte("v"), 7); return err }},
		{"kv put", func(ctx context.Context) error { _, err := kv.Put(ctx, "k", []byte("v")); return err }},
		{"publish", func(ctx context.Context) error {
			_, err := conn.PublishMsg(ctx, "agent.call.completed", "id-1", []byte("{}"))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan error, 1)
			go func() { done <- tc.op(ctx) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("a request nobody answered succeeded")
				}
			case <-time.After(4 * bus.RequestTimeout):
				t.Fatalf("no answer after %s: the request waits for the caller's context (minutes)", 4*bus.RequestTimeout)
			}
		})
	}
}
