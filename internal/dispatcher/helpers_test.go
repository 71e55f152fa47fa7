package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/dispatcher/contacts"
	"github.com/callagent/agent/internal/natstest"
)

// reply is what the fake caller does with one request.
type reply struct {
	outcome    string // completed, failed, skipped; "" terminates the request without an outcome
	callStatus string
	reason     string
	service    string
	retryIn    time.Duration
	// hold, when set, delays the outcome until it is closed.
	hold <-chan struct{}
}

// fakeCaller plays the caller: it takes call requests from CALLS and emits
// the outcomes a script gives, as the real caller would.
type fakeCaller struct {
	conn   *bus.Conn
	script func(req *events.CallRequest) reply

	mu    sync.Mutex
	calls []*events.CallRequest
	// received is when each call id reached the caller (its first delivery).
	received map[string]time.Time
}

func startCaller(t *testing.T, srv *natstest.Server, script func(req *events.CallRequest) reply) *fakeCaller {
	t.Helper()
	fc := &fakeCaller{conn: srv.Conn(t), script: script}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fc.conn.Consume(ctx, bus.ConsumerSpec{
			Stream:         events.StreamCalls,
			Durable:        "callers",
			FilterSubjects: []string{events.DispatchAll},
			Concurrency:    4,
		}, fc.handle)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return fc
}

func (fc *fakeCaller) handle(ctx context.Context, m *bus.Msg) error {
	req, err := events.DecodeRequest(m.Data)
	if err != nil {
		return err
	}
	fc.mu.Lock()
	fc.calls = append(fc.calls, req)
	if fc.received == nil {
		fc.received = map[string]time.Time{}
	}
	if _, ok := fc.received[req.CallID]; !ok {
		fc.received[req.CallID] = time.Now()
	}
	fc.mu.Unlock()
	rep := fc.script(req)
	ref := req.Ref()
	if err := fc.conn.Emit(ctx, &events.Call{CallRef: ref, Outcome: events.CallStarted, Attempt: req.Attempt}); err != nil {
		return err
	}
	if rep.hold != nil {
		select {
		case <-rep.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if rep.outcome == "" {
		return bus.Permanent(errors.New("script: drop the request"))
	}
	return fc.conn.Emit(ctx, &events.Call{
		CallRef:    ref,
		Outcome:    rep.outcome,
		Attempt:    req.Attempt,
		CallStatus: rep.callStatus,
		Reason:     rep.reason,
		Service:    rep.service,
		RetryInMs:  rep.retryIn.Milliseconds(),
	})
}

// byContact returns how many requests each contact got.
func (fc *fakeCaller) byContact() map[string]int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := map[string]int{}
	for _, r := range fc.calls {
		n[r.ContactID]++
	}
	return n
}

// receivedAt returns when a call id reached the caller, if it did.
func (fc *fakeCaller) receivedAt(callID string) (time.Time, bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	at, ok := fc.received[callID]
	return at, ok
}

// assertNoRepeat fails if any attempt was delivered to the caller twice.
func (fc *fakeCaller) assertNoRepeat(t *testing.T) {
	t.Helper()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	seen := map[string]bool{}
	for _, r := range fc.calls {
		if seen[r.CallID] {
			t.Errorf("call %s was delivered twice", r.CallID)
		}
		seen[r.CallID] = true
	}
}

// syncBuffer is a bytes.Buffer safe for the progress writer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func mustContacts(t *testing.T, csv string, opts contacts.Options) []contacts.Contact {
	t.Helper()
	l, err := contacts.Read(bytes.NewReader([]byte(csv)), "contacts.csv", opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Rejected)+len(l.Duplicates) > 0 {
		t.Fatalf("test contacts rejected: %+v %+v", l.Rejected, l.Duplicates)
	}
	return l.Contacts
}

func newDispatcher(t *testing.T, conn *bus.Conn, s Settings) *Dispatcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.Log == nil {
		s.Log = natstest.Logger(t)
	}
	if s.CallingWindow == "" {
		s.CallingWindow = "00:00-24:00" // tests that are not about windows must not depend on the hour they run
	}
	d, err := New(ctx, conn, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runAsync runs d.Run in the background; the channel yields its result.
type runResult struct {
	sum *Summary
	err error
}

func runAsync(ctx context.Context, d *Dispatcher, list []contacts.Contact) <-chan runResult {
	ch := make(chan runResult, 1)
	go func() {
		sum, err := d.Run(ctx, list)
		ch <- runResult{sum, err}
	}()
	return ch
}

func waitRun(t *testing.T, ch <-chan runResult, d time.Duration) runResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("run did not return within %s", d)
	}
	return runResult{}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// contactState reads one contact's state from the bucket.
func contactState(t *testing.T, d *Dispatcher, id string) *ContactState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _, err := d.store.get(ctx, Key(d.set.Campaign, id))
	if err != nil {
		return nil
	}
	return st
}
