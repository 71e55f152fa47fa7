package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The few raw operations other packages need, so that the connection itself
// stays inside bus: publishing events goes through Emit and PublishMsg,
// consuming through Consume and ConsumeBatch.

// Subscribe listens to subject with a plain (not JetStream) subscription,
// for what only matters live, such as peers' breaker transitions. It returns
// once the server has the subscription.
func (c *Conn) Subscribe(ctx context.Context, subject string, h nats.MsgHandler) (*nats.Subscription, error) {
	sub, err := c.nc.Subscribe(subject, h)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := c.Flush(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub, nil
}

// Flush returns once the server has read everything sent on the connection,
// waiting at most 5 s when ctx sets no deadline.
func (c *Conn) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	return c.nc.FlushWithContext(ctx)
}

// Connected reports whether the connection is up now.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// LastError is the last error the connection saw, such as a permissions
// violation.
func (c *Conn) LastError() error { return c.nc.LastError() }

// Abort closes the connection at once, without draining: what a process
// killed with SIGKILL leaves behind. For tests.
func (c *Conn) Abort() { c.nc.Close() }

// Stream returns a handle on a stream, for its info and its messages.
func (c *Conn) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}

// ConsumerInfo reads a durable consumer's state from the server.
func (c *Conn) ConsumerInfo(ctx context.Context, stream, durable string) (*jetstream.ConsumerInfo, error) {
	cons, err := c.js.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", durable, stream, err)
	}
	return cons.CachedInfo(), nil
}

// DeleteConsumer deletes a durable consumer.
func (c *Conn) DeleteConsumer(ctx context.Context, stream, durable string) error {
	if err := c.js.DeleteConsumer(ctx, stream, durable); err != nil {
		return fmt.Errorf("delete consumer %s on %s: %w", durable, stream, err)
	}
	return nil
}

// OrderedConsumer reads a stream in order with an ephemeral consumer that
// disturbs no durable one: for replay and reports.
func (c *Conn) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	cons, err := c.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	return cons, nil
}

// PublishAsync publishes msg with id as its Nats-Msg-Id without waiting for
// the stream's answer, which the returned future brings; for pipelined
// publishing of many messages. PublishAsyncComplete tells when every
// pending one is answered. opts add to the id (a schedule, for one).
func (c *Conn) PublishAsync(msg *nats.Msg, id string, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if id != "" {
		opts = append(opts, jetstream.WithMsgID(id))
	}
	return c.js.PublishMsgAsync(msg, opts...)
}

// PublishAsyncComplete is closed once every PublishAsync so far is answered.
func (c *Conn) PublishAsyncComplete() <-chan struct{} { return c.js.PublishAsyncComplete() }

// OpenKeyValue opens an existing bucket, without creating it (KeyValue
// creates one).
func (c *Conn) OpenKeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", bucket, err)
	}
	return boundKV(kv), nil
}

// OpenOrCreateKeyValue opens a bucket, creating it with cfg if it does not
// exist; for a bucket KeyValue's defaults do not fit (per-key TTLs).
func (c *Conn) OpenOrCreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return boundKV(kv), nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("key-value bucket %s: %w", cfg.Bucket, err)
	}
	if kv, err = c.js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("create key-value bucket %s: %w", cfg.Bucket, err)
	}
	if err != nil { // another process created it meanwhile
		return c.OpenKeyValue(ctx, cfg.Bucket)
	}
	return boundKV(kv), nil
}

// ObjectStore opens an existing object store bucket.
func (c *Conn) ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	o, err := c.js.ObjectStore(ctx, bucket)
	return boundObjects(o), err
}

// CreateOrUpdateObjectStore creates an object store bucket, or updates an
// existing one to cfg.
// A cfg without replicas gets nats.buckets.replicas: an update with 1
// would shrink a bucket replicated across a cluster.
func (c *Conn) CreateOrUpdateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = c.replicas
	}
	o, err := c.js.CreateOrUpdateObjectStore(ctx, cfg)
	return boundObjects(o), err
}
