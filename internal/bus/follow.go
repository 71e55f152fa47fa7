package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FollowKeyValue watches every key of bucket until ctx is done, handing
// apply each entry and a nil one once the initial values are in. While the
// bucket cannot be followed (not provisioned yet, or the watch ended) it
// calls missing with why, then retries every retry; missing may be nil.
func (c *Conn) FollowKeyValue(ctx context.Context, bucket string, retry time.Duration, apply func(jetstream.KeyValueEntry), missing func(error)) {
	for ctx.Err() == nil {
		kv, err := c.OpenKeyValue(ctx, bucket)
		if err == nil {
			err = watchAll(ctx, kv, apply)
		}
		if ctx.Err() != nil {
			return
		}
		if missing != nil {
			missing(err)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func watchAll(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return context.Canceled
			}
			apply(e)
		}
	}
}
