package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/config"
)

// Bucket is one key-value bucket the product uses.
type Bucket struct {
	Name string
	// TTL is how long an entry lives; 0 keeps it until it is overwritten.
	TTL time.Duration
	// MarkerTTL, when not 0, lets each entry carry its own TTL (a Nats-TTL
	// header, jetstream.KeyTTL) and leaves a marker, kept this long, where an
	// entry expired, so that a watcher sees the expiry as it happens.
	MarkerTTL time.Duration
	// Users are the roles that read and write it (nats.conf grants them).
	Users []string
	// Readers are the roles that may only read it.
	Readers []string
	Why     string
}

// Buckets is every key-value bucket the product uses, in the one list
// `dispatcher provision` creates: add a bucket here (and its permissions in
// nats.conf) and it is provisioned with the rest. dispatcherBucket is
// dispatcher.state_bucket ("campaigns" by default). The names must match
// what each package opens with Conn.KeyValue (a test checks they do).
func Buckets(dispatcherBucket string) []Bucket {
	return []Bucket{
		{Name: dispatcherBucket, Users: []string{config.RoleDispatcher}, Why: "campaign state"},
		{Name: "calls", TTL: 7 * 24 * time.Hour, Users: []string{config.RoleCaller}, Why: "per-call progress, so a call taken over is neither rung nor ended twice"},
		{Name: "breaker_probes", TTL: time.Hour, Users: []string{config.RoleCaller}, Why: "the fleet's half-open probe election, one claim per probe slot"},
		{Name: "service_status", Users: []string{config.RoleObserver}, Why: "each service's status"},
		{Name: "alert_state", Users: []string{config.RoleObserver}, Why: "alert rule state"},
		{Name: "observer_lease", MarkerTTL: time.Minute, Users: []string{config.RoleObserver}, Why: "which observer is active: a lease with a per-key TTL the active one renews"},
		// The operator writes silences; the observer only watches them.
		{Name: "silences", Users: []string{config.RoleOperator}, Why: "the operator's alert silences (observer silence)"},
		// Names as in packages control and dnc, which import this one.
		{Name: "campaign_control", Users: []string{config.RoleDispatcher}, Readers: []string{config.RoleCaller},
			Why: "each campaign's pause/cancel state and pacing, read by callers before every dial"},
		{Name: "dnc", Users: []string{config.RoleDispatcher}, Readers: []string{config.RoleCaller},
			Why: "the do-not-call list (SHA-256 of E.164 numbers), read by callers before every dial"},
		{Name: "campaign_pacing", TTL: 15 * time.Minute, Users: []string{config.RoleCaller},
			Why: "the fleet's call slots and dials per second of each paced campaign"},
	}
}

// KeyValueConfig is the configuration a bucket is created with, here and by
// Conn.KeyValue, so that a provisioned bucket is the one a process expects.
func (b Bucket) KeyValueConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         b.Name,
		Description:    b.Why,
		TTL:            b.TTL,
		LimitMarkerTTL: b.MarkerTTL,
		Storage:        jetstream.FileStorage,
		History:        1,
	}
}

// AudioBucket is the object store bucket holding each call's audio, keyed
// by call id: callers write it, the media server reads it.
const AudioBucket = "call_audio"

// AudioBucketConfig is the call_audio bucket's configuration, here and in
// package media, so that a provisioned bucket is the one a caller expects.
// maxAge is media.audio_max_age.
func AudioBucketConfig(maxAge time.Duration) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      AudioBucket,
		Description: "each call's audio, keyed by call id, fetched by the telephony provider",
		TTL:         maxAge,
		Storage:     jetstream.FileStorage,
	}
}

// Action is what provisioning did to one object.
type Action string

// What Provision may report per object.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// Provisioned is one object Provision handled.
type Provisioned struct {
	Kind   string // "stream", "bucket" (key-value) or "object" (object store)
	Name   string
	Action Action
}

func (p Provisioned) String() string { return fmt.Sprintf("%-6s %-16s %s", p.Kind, p.Name, p.Action) }

// Provision creates, or updates to match cfg, every stream (StreamConfigs)
// key-value bucket (Buckets) and object store bucket (AudioBucketConfig) the
// product needs, buckets on nats.buckets.replicas servers, and says what it did to
// each. Running it again changes nothing and reports every object
// unchanged. It needs the admin role. Durable consumers are left to the
// processes: each creates its own from its own settings (ack wait, work in
// flight, a sink's start), which a copy made here would only fight.
func (c *Conn) Provision(ctx context.Context, cfg config.Config) ([]Provisioned, error) {
	var done []Provisioned
	for _, sc := range StreamConfigs(cfg.NATS.Streams) {
		act, err := c.provisionStream(ctx, sc)
		if err != nil {
			return done, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
		done = append(done, Provisioned{"stream", sc.Name, act})
	}
	replicas := max(1, cfg.NATS.Buckets.Replicas)
	for _, b := range Buckets(cfg.Dispatcher.StateBucket) {
		kv := b.KeyValueConfig()
		kv.Replicas = replicas
		act, err := c.provisionBucket(ctx, kv)
		if err != nil {
			return done, fmt.Errorf("key-value bucket %s: %w", b.Name, err)
		}
		done = append(done, Provisioned{"bucket", b.Name, act})
	}
	audio := AudioBucketConfig(cmp.Or(cfg.Media.AudioMaxAge, config.Default().Media.AudioMaxAge))
	audio.Replicas = replicas
	act, err := c.provisionObjects(ctx, audio)
	if err != nil {
		return done, fmt.Errorf("object store bucket %s: %w", audio.Bucket, err)
	}
	done = append(done, Provisioned{"object", audio.Bucket, act})
	return done, nil
}

func (c *Conn) provisionStream(ctx context.Context, want jetstream.StreamConfig) (Action, error) {
	s, err := c.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := c.js.CreateStream(ctx, want); err != nil {
			return "", fmt.Errorf("create: %w", err)
		}
		return Created, nil
	}
	if err != nil {
		return "", err
	}
	if sameStream(s.CachedInfo().Config, want) {
		return Unchanged, nil
	}
	if _, err := c.js.UpdateStream(ctx, want); err != nil {
		return "", fmt.Errorf("update: %w", err)
	}
	return Updated, nil
}

// sameStream compares what StreamConfigs sets; the server fills in the rest.
func sameStream(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas &&
		have.MaxAge == want.MaxAge &&
		have.MaxBytes == want.MaxBytes &&
		have.Duplicates == want.Duplicates &&
		have.Discard == want.Discard &&
		have.AllowMsgSchedules == want.AllowMsgSchedules &&
		have.AllowRollup == want.AllowRollup
}

func (c *Conn) provisionBucket(ctx context.Context, want jetstream.KeyValueConfig) (Action, error) {
	_, err := c.js.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := c.js.CreateKeyValue(ctx, want); err != nil {
			return "", fmt.Errorf("create: %w", err)
		}
		return Created, nil
	}
	if err != nil {
		return "", err
	}
	// A bucket is the stream KV_<name>: compare what the configuration sets.
	s, err := c.js.Stream(ctx, "KV_"+want.Bucket)
	if err != nil {
		return "", err
	}
	have := s.CachedInfo().Config
	storage := jetstream.FileStorage
	if want.Storage == jetstream.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	if have.MaxAge == want.TTL && have.MaxMsgsPerSubject == int64(want.History) && have.Storage == storage &&
		have.Description == want.Description && have.Replicas == max(1, want.Replicas) &&
		have.SubjectDeleteMarkerTTL == want.LimitMarkerTTL && have.AllowMsgTTL == (want.LimitMarkerTTL > 0) {
		return Unchanged, nil
	}
	if _, err := c.js.UpdateKeyValue(ctx, want); err != nil {
		return "", fmt.Errorf("update: %w", err)
	}
	return Updated, nil
}

func (c *Conn) provisionObjects(ctx context.Context, want jetstream.ObjectStoreConfig) (Action, error) {
	// A bucket is the stream OBJ_<name>: compare what the configuration sets.
	s, err := c.js.Stream(ctx, "OBJ_"+want.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := c.js.CreateObjectStore(ctx, want); err != nil {
			return "", fmt.Errorf("create: %w", err)
		}
		return Created, nil
	}
	if err != nil {
		return "", err
	}
	have := s.CachedInfo().Config
	if have.MaxAge == want.TTL && have.Storage == want.Storage && have.Description == want.Description &&
		have.Replicas == max(1, want.Replicas) {
		return Unchanged, nil
	}
	if _, err := c.js.UpdateObjectStore(ctx, want); err != nil {
		return "", fmt.Errorf("update: %w", err)
	}
	return Updated, nil
}
