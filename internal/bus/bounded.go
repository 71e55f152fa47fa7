package bus

import (
	"context"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RequestTimeout bounds every JetStream request made through a Conn: a
// publish, and each read or write of a key-value bucket. jetstream applies
// its own default only to a context without a deadline, and a handler's
// context has one, minutes away (a call's whole budget). A request the
// server took but never answered (its stream's leader was killed before it
// replied) would then hold a call, and its work-queue message, for those
// minutes: the node-loss harness saw 20 requests stuck so, kept in progress
// until the campaign's timeout. Bounded, the request fails in seconds, the
// handler's error hands the message back, and the retry finds the new
// leader.
const RequestTimeout = 5 * time.Second

// objectTimeout bounds an object store put or get, which is several
// requests (chunks, meta, purge of the old chunks).
const objectTimeout = 30 * time.Second

// bounded is ctx with at most d left.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// boundedKV is a bucket whose single requests are bounded by RequestTimeout;
// watches and listings, which run as long as their context, are not.
type boundedKV struct{ jetstream.KeyValue }

func boundKV(kv jetstream.KeyValue) jetstream.KeyValue {
	if kv == nil {
		return nil
	}
	if _, ok := kv.(boundedKV); ok {
		return kv
	}
	return boundedKV{kv}
}

func (b boundedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Get(ctx, key)
}

func (b boundedKV) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.GetRevision(ctx, key, revision)
}

func (b boundedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Put(ctx, key, value)
}

func (b boundedKV) PutString(ctx context.Context, key, value string) (uint64, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.PutString(ctx, key, value)
}

func (b boundedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Create(ctx, key, value, opts...)
}

func (b boundedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Update(ctx, key, value, revision)
}

func (b boundedKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Delete(ctx, key, opts...)
}

func (b boundedKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Purge(ctx, key, opts...)
}

func (b boundedKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.KeyValue.Status(ctx)
}

// boundedObjects is an object store bucket whose puts and lookups are
// bounded by objectTimeout. Get is not: the reader it returns reads under
// its context (package media bounds the whole read).
type boundedObjects struct{ jetstream.ObjectStore }

func boundObjects(o jetstream.ObjectStore) jetstream.ObjectStore {
	if o == nil {
		return nil
	}
	return boundedObjects{o}
}

func (b boundedObjects) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	ctx, cancel := bounded(ctx, objectTimeout)
	defer cancel()
	return b.ObjectStore.Put(ctx, meta, r)
}

func (b boundedObjects) PutBytes(ctx context.Context, name string, data []byte) (*jetstream.ObjectInfo, error) {
	ctx, cancel := bounded(ctx, objectTimeout)
	defer cancel()
	return b.ObjectStore.PutBytes(ctx, name, data)
}

func (b boundedObjects) GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.ObjectStore.GetInfo(ctx, name, opts...)
}

func (b boundedObjects) GetBytes(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) ([]byte, error) {
	ctx, cancel := bounded(ctx, objectTimeout)
	defer cancel()
	return b.ObjectStore.GetBytes(ctx, name, opts...)
}

func (b boundedObjects) Delete(ctx context.Context, name string) error {
	ctx, cancel := bounded(ctx, RequestTimeout)
	defer cancel()
	return b.ObjectStore.Delete(ctx, name)
}
