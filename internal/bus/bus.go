// Package bus owns the project's use of NATS JetStream: connecting with a role's
// credentials, creating the contract streams from configuration, publishing with
// Nats-Msg-Id deduplication, and one ack policy for every durable consumer.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
)

// Conn is a connection to the bus for one process.
type Conn struct {
	nc *nats.Conn
	js jetstream.JetStream
	// Source identifies this process instance; it is stamped on every event.
	Source string
	log    *slog.Logger
	now    func() time.Time
	// replicas is nats.buckets.replicas: how many servers keep a bucket
	// this connection creates.
	replicas int
}

// Connect connects to cfg.URL with the credentials of role (see
// config.NATS.For), retrying until cfg.ConnectTimeout has passed so that
// processes may start in any order. Once connected, it reconnects forever.
func Connect(ctx context.Context, cfg config.NATS, role, source string, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.For(role)
	opts := []nats.Option{
		nats.Name(source),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	wait := cfg.ConnectTimeout
	if wait <= 0 {
		wait = 5 * time.Second
	}
	deadline := time.Now().Add(wait)
	var nc *nats.Conn
	var err error
	for {
		nc, err = nats.Connect(cfg.URL, opts...)
		if err == nil {
			break
		}
		// Authorization errors will not heal by waiting.
		if errors.Is(err, nats.ErrAuthorization) || time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to nats at %s %s: %w", config.RedactURLs(cfg.URL), identity(cfg, role), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Conn{nc: nc, js: js, Source: source, log: log, now: time.Now, replicas: max(1, cfg.Buckets.Replicas)}, nil
}

// identity says whom a connection presents itself as, for its errors: the
// role, and the user or credentials file, or that none is configured.
func identity(cfg config.NATS, role string) string {
	switch {
	case cfg.Creds != "":
		return fmt.Sprintf("as role %s (credentials file %s)", role, cfg.Creds)
	case cfg.User != "":
		return fmt.Sprintf("as role %s (user %q)", role, cfg.User)
	case role == "":
		return "with no user"
	}
	return fmt.Sprintf("as role %s with no user configured (set nats.roles.%s.user and password)", role, role)
}

// Close drains the connection: pending publishes are flushed and
// subscriptions finish what they hold.
func (c *Conn) Close() {
	if err := c.nc.Drain(); err != nil {
		c.nc.Close()
		return
	}
	for c.nc.IsDraining() {
		time.Sleep(10 * time.Millisecond)
	}
}

// Log returns the connection's logger.
func (c *Conn) Log() *slog.Logger { return c.log }

// Emit stamps ev with this process as its source, validates and encodes it,
// and publishes it on ev.Subject() with the event id as Nats-Msg-Id. It returns
// once the stream has stored it, so a caller may act on the event having been
// recorded.
func (c *Conn) Emit(ctx context.Context, ev events.Event) error {
	events.Stamp(ev, c.Source, c.now())
	data, err := events.Encode(ev)
	if err != nil {
		return err
	}
	if _, err := c.PublishMsg(ctx, ev.Subject(), ev.Head().ID, data); err != nil {
		return err
	}
	return nil
}

// PublishMsg publishes data on subject with msgID as Nats-Msg-Id: a second
// publish with the same id inside the stream's duplicate window is stored once.
// opts add to the id (a schedule, for one).
func (c *Conn) PublishMsg(ctx context.Context, subject, msgID string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	ack, err := c.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}

// KeyValue opens the key-value bucket, creating it if needed (on
// nats.buckets.replicas servers). ttl 0 keeps entries forever.
func (c *Conn) KeyValue(ctx context.Context, bucket string, ttl time.Duration) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, bucket)
	if err == nil {
		return boundKV(kv), nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("key-value bucket %s: %w", bucket, err)
	}
	kv, err = c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   bucket,
		TTL:      ttl,
		Storage:  jetstream.FileStorage,
		History:  1,
		Replicas: c.replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create key-value bucket %s: %w", bucket, err)
	}
	return boundKV(kv), nil
}
