// Package media keeps each call's audio in the JetStream Object Store and
// serves it, with the TwiML that plays it, to the telephony provider: the
// caller stores the audio (Store.Put) before it places the call, and
// cmd/media answers the provider's GET /twiml/<call_id> and
// GET /audio/<call_id> from the same bucket.
package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
)

// Bucket is the Object Store bucket holding each call's audio, keyed by
// call id.
const Bucket = bus.AudioBucket

// ContentType is the audio's type: ElevenLabs renders MP3 by default.
const ContentType = "audio/mpeg"

// getTimeout bounds reading one call's audio.
const getTimeout = 30 * time.Second

// ErrNotFound says the bucket holds no audio for the call: it was never
// stored, or it expired.
var ErrNotFound = errors.New("media: no audio for the call")

// Audio is one call's stored audio.
type Audio struct {
	Data     []byte
	Modified time.Time
	// Digest is the object store's digest of Data (SHA-256=...), an ETag.
	Digest string
}

// Objects opens and creates object store buckets: a *bus.Conn, or a
// jetstream.JetStream.
type Objects interface {
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
	CreateOrUpdateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error)
}

// Store is the call_audio bucket. It is safe for concurrent use.
type Store struct {
	js     Objects
	create bool
	ttl    time.Duration

	mu  sync.Mutex
	obs jetstream.ObjectStore
}

// Create opens the bucket, creating it (or updating its max age to ttl) if
// needed: the caller's side, which writes.
func Create(ctx context.Context, js Objects, ttl time.Duration) (*Store, error) {
	s := &Store{js: js, create: true, ttl: ttl}
	if _, err := s.bucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Open returns the bucket for reading without creating it: cmd/media's
// side. Until a caller has created it, every call's audio is ErrNotFound.
func Open(js Objects) *Store { return &Store{js: js} }

func (s *Store) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.obs != nil {
		return s.obs, nil
	}
	obs, err := s.js.ObjectStore(ctx, Bucket)
	switch {
	case err == nil && s.create:
		// An existing bucket gets the configured max age.
		obs, err = s.js.CreateOrUpdateObjectStore(ctx, s.config())
	case errors.Is(err, jetstream.ErrBucketNotFound) && s.create:
		obs, err = s.js.CreateOrUpdateObjectStore(ctx, s.config())
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", Bucket, err)
	}
	s.obs = obs
	return obs, nil
}

func (s *Store) config() jetstream.ObjectStoreConfig { return bus.AudioBucketConfig(s.ttl) }

// Put stores callID's audio, replacing any earlier.
func (s *Store) Put(ctx context.Context, callID string, audio []byte) error {
	obs, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	meta := jetstream.ObjectMeta{Name: callID, Headers: map[string][]string{"Content-Type": {ContentType}}}
	if _, err := obs.Put(ctx, meta, bytes.NewReader(audio)); err != nil {
		return fmt.Errorf("store audio of call %s: %w", callID, err)
	}
	return nil
}

// Size is the size of callID's stored audio, or ErrNotFound.
func (s *Store) Size(ctx context.Context, callID string) (int64, error) {
	obs, err := s.bucket(ctx)
	if err != nil {
		return 0, err
	}
	info, err := obs.GetInfo(ctx, callID)
	if err != nil {
		return 0, notFound(callID, err)
	}
	return int64(info.Size), nil
}

// Get reads callID's audio whole: it is small (a minute of MP3 is about
// 1 MB), and serving byte ranges needs a reader that seeks.
func (s *Store) Get(ctx context.Context, callID string) (Audio, error) {
	// The chunks come through a consumer: bound the whole read, so that a
	// stream leader lost mid-read fails the request instead of holding it.
	ctx, cancel := context.WithTimeout(ctx, getTimeout)
	defer cancel()
	obs, err := s.bucket(ctx)
	if err != nil {
		return Audio{}, err
	}
	res, err := obs.Get(ctx, callID)
	if err != nil {
		return Audio{}, notFound(callID, err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return Audio{}, notFound(callID, err)
	}
	var buf bytes.Buffer
	buf.Grow(int(info.Size))
	if _, err := buf.ReadFrom(res); err != nil {
		return Audio{}, fmt.Errorf("read audio of call %s: %w", callID, err)
	}
	return Audio{Data: buf.Bytes(), Modified: info.ModTime, Digest: info.Digest}, nil
}

func notFound(callID string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("call %s: %w", callID, ErrNotFound)
	}
	return fmt.Errorf("audio of call %s: %w", callID, err)
}
