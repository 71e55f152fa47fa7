package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/natstest"
)

func audio(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStore(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()

	reader := media.Open(conn)
	if _, err := reader.Get(ctx, "call-1"); !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("Get before any bucket = %v, want ErrNotFound", err)
	}
	st, err := media.Create(ctx, conn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, second := audio(t, 300_000), audio(t, 2_100)
	for _, data := range [][]byte{first, second} { // the second replaces the first
		if err := st.Put(ctx, "call-1", data); err != nil {
			t.Fatal(err)
		}
	}
	got, err := reader.Get(ctx, "call-1")
	if err != nil || !bytes.Equal(got.Data, second) || got.Digest == "" {
		t.Fatalf("Get = %d bytes (digest %q), %v; want the %d bytes put last", len(got.Data), got.Digest, err, len(second))
	}
	if n, err := st.Size(ctx, "call-1"); err != nil || n != int64(len(second)) {
		t.Fatalf("Size = %d, %v", n, err)
	}
	for _, id := range []string{"call-2", "call 1", "../call-1"} {
		if _, err := reader.Get(ctx, id); !errors.Is(err, media.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := st.Size(ctx, id); !errors.Is(err, media.ErrNotFound) {
			t.Errorf("Size(%q) = %v, want ErrNotFound", id, err)
		}
	}
	info, err := conn.Stream(ctx, "OBJ_"+media.Bucket)
	if err != nil || info.CachedInfo().Config.MaxAge != time.Hour {
		t.Fatalf("bucket stream max age: %v, %v", info, err)
	}
}

func TestStoreExpires(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	st, err := media.Create(ctx, conn, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "call-1", audio(t, 1000)); err != nil {
		t.Fatal(err)
	}
	h := media.NewServer(media.Open(conn), media.URLs{Base: "http://media.test"}, nil).Handler()
	if code := get(t, h, "/audio/call-1", nil).Code; code != http.StatusOK {
		t.Fatalf("fresh audio: %d", code)
	}
	waitFor(t, "expired audio to answer 404", func() bool {
		return get(t, h, "/audio/call-1", nil).Code == http.StatusNotFound &&
			get(t, h, "/twiml/call-1", nil).Code == http.StatusNotFound
	})
}

func get(t testing.TB, h http.Handler, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// fakeSource is a Source that fails as the bus can.
type fakeSource struct{ err error }

func (f fakeSource) Size(context.Context, string) (int64, error)      { return 0, f.err }
func (f fakeSource) Get(context.Context, string) (media.Audio, error) { return media.Audio{}, f.err }

func TestServer(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	st, err := media.Create(ctx, conn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	data := audio(t, 5000)
	const id = "camp-1/c&1" // a call id that needs escaping in a path and in XML
	if err := st.Put(ctx, id, data); err != nil {
		t.Fatal(err)
	}
	urls := media.URLs{Base: "https://media.example.com/"}
	h := media.NewServer(media.Open(conn), urls, nil).Handler()

	t.Run("twiml plays the audio URL", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			r := httptest.NewRequest(method, "/twiml/"+url.PathEscape(id), strings.NewReader("CallSid=CA1&CallStatus=in-progress"))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml; charset=utf-8" {
				t.Fatalf("%s twiml: %d %q", method, w.Code, w.Header().Get("Content-Type"))
			}
			play, err := media.ParsePlay(w.Body.Bytes())
			if err != nil || play != "https://media.example.com/audio/camp-1%2Fc&1" {
				t.Fatalf("%s twiml %s: play %q, %v", method, w.Body, play, err)
			}
		}
	})
	t.Run("audio whole and by range", func(t *testing.T) {
		w := get(t, h, "/audio/"+url.PathEscape(id), nil)
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), data) || w.Header().Get("Content-Type") != "audio/mpeg" ||
			w.Header().Get("Accept-Ranges") != "bytes" || w.Header().Get("Content-Length") != "5000" {
			t.Fatalf("audio: %d, %d bytes, %v", w.Code, w.Body.Len(), w.Header())
		}
		w = get(t, h, "/audio/"+url.PathEscape(id), http.Header{"Range": {"bytes=100-199"}})
		if w.Code != http.StatusPartialContent || !bytes.Equal(w.Body.Bytes(), data[100:200]) ||
			w.Header().Get("Content-Range") != "bytes 100-199/5000" {
			t.Fatalf("range: %d, %d bytes, %v", w.Code, w.Body.Len(), w.Header())
		}
		w = get(t, h, "/audio/"+url.PathEscape(id), http.Header{"Range": {"bytes=9000-"}})
		if w.Code != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("range past the end: %d", w.Code)
		}
		etag := get(t, h, "/audio/"+url.PathEscape(id), nil).Header().Get("ETag")
		w = get(t, h, "/audio/"+url.PathEscape(id), http.Header{"Range": {"bytes=0-9"}, "If-Range": {etag}})
		if etag == "" || w.Code != http.StatusPartialContent || w.Body.Len() != 10 {
			t.Fatalf("If-Range with the ETag %q: %d, %d bytes", etag, w.Code, w.Body.Len())
		}
	})
	t.Run("unknown ids are 404", func(t *testing.T) {
		for _, p := range []string{"/twiml/nope", "/audio/nope", "/audio/", "/other"} {
			if w := get(t, h, p, nil); w.Code != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", p, w.Code)
			}
		}
	})
	t.Run("bus trouble is 503, not 404", func(t *testing.T) {
		h := media.NewServer(fakeSource{err: fmt.Errorf("read: %w", context.DeadlineExceeded)}, urls, nil).Handler()
		for _, p := range []string{"/twiml/x", "/audio/x"} {
			if w := get(t, h, p, nil); w.Code != http.StatusServiceUnavailable {
				t.Errorf("GET %s = %d, want 503", p, w.Code)
			}
		}
	})
}

func TestSignedURLs(t *testing.T) {
	srv := natstest.Start(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	st, err := media.Create(ctx, conn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	data := audio(t, 100)
	if err := st.Put(ctx, "call-1", data); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	urls := media.URLs{Base: "http://media.test", Key: "k3y", TTL: time.Hour, Now: func() time.Time { return now }}
	h := media.NewServer(media.Open(conn), urls, nil).Handler()
	path := func(u string) string { p, _ := url.Parse(u); return p.RequestURI() }

	tw := get(t, h, path(urls.TwiML("call-1")), nil)
	play, err := media.ParsePlay(tw.Body.Bytes())
	if tw.Code != http.StatusOK || err != nil || !strings.Contains(play, "sig=") {
		t.Fatalf("signed twiml: %d %s", tw.Code, tw.Body)
	}
	if w := get(t, h, path(play), nil); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), data) {
		t.Fatalf("signed audio: %d", w.Code)
	}
	forged := media.URLs{Base: urls.Base, Key: "other", TTL: time.Hour, Now: urls.Now}
	for name, p := range map[string]string{
		"unsigned":           "/audio/call-1",
		"other key":          path(forged.Audio("call-1")),
		"twiml sig on audio": strings.Replace(path(urls.TwiML("call-1")), "/twiml/", "/audio/", 1),
		"other call's sig":   strings.Replace(path(urls.Audio("call-2")), "call-2", "call-1", 1),
	} {
		if w := get(t, h, p, nil); w.Code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, w.Code)
		}
	}
	signed := path(play)
	now = now.Add(2 * time.Hour)
	if w := get(t, h, signed, nil); w.Code != http.StatusForbidden {
		t.Errorf("expired signature: %d, want 403", w.Code)
	}
}

// TestPermissions: with nats.conf, the caller creates the bucket and writes
// audio; the media role reads it and can neither write nor delete it.
func TestPermissions(t *testing.T) {
	srv := natstest.StartWithConfig(t, natstest.RepoFile("nats.conf"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	role := func(name string) config.NATS { return config.NATS{User: name, Password: name + "-dev-password"} }

	caller := srv.Connect(t, role("caller"), "caller")
	st, err := media.Create(ctx, caller, time.Hour)
	if err != nil {
		t.Fatalf("caller creates the bucket: %v", err)
	}
	data := audio(t, 200_000)
	for range 2 { // the second put replaces the first: purges its chunks
		if err := st.Put(ctx, "call-1", data); err != nil {
			t.Fatalf("caller puts audio: %v", err)
		}
	}
	if n, err := st.Size(ctx, "call-1"); err != nil || n != int64(len(data)) {
		t.Fatalf("caller looks the audio up: %d, %v", n, err)
	}

	m := srv.Connect(t, role("media"), "media")
	got, err := media.Open(m).Get(ctx, "call-1")
	if err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("media reads the audio: %d bytes, %v", len(got.Data), err)
	}
	obs, err := m.ObjectStore(ctx, media.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	short, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := obs.PutBytes(short, "forged", []byte("x")); err == nil {
		t.Error("media wrote to the bucket")
	}
	if err := obs.Delete(short, "call-1"); err == nil {
		t.Error("media deleted audio")
	}
	mnc, mjs := natstest.Raw(t, srv.URL(), "media", "media-dev-password")
	if err := mjs.DeleteObjectStore(short, media.Bucket); err == nil {
		t.Error("media deleted the bucket")
	}
	if err := mnc.Publish("agent.call.completed", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	admin := srv.Connect(t, role("admin"), "admin")
	if got, err := media.Open(admin).Get(ctx, "call-1"); err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("audio after media's attempts: %d bytes, %v", len(got.Data), err)
	}

	// Audio is the callee's voice message: no other role reads it.
	for _, name := range []string{"tail", "observer", "dispatcher"} {
		c := srv.Connect(t, role(name), name)
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := media.Open(c).Get(rctx, "call-1"); err == nil {
			t.Errorf("%s read call audio", name)
		}
		rcancel()
	}
}
