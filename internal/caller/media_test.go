package caller_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/caller"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/natstest"
	"github.com/callagent/agent/internal/provider/telephony"
)

// startMedia runs the media server on its own connection, with signed URLs,
// and returns its URLs.
func startMedia(t *testing.T, srv *natstest.Server) media.URLs {
	t.Helper()
	conn := srv.Connect(t, config.NATS{}, "media")
	var h http.Handler
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(hs.Close)
	urls := media.URLs{Base: hs.URL, Key: "test-signing-key", TTL: time.Hour}
	h = media.NewServer(media.Open(conn), urls, natstest.Logger(t)).Handler()
	return urls
}

// mediaServices are the simulator's clients with each call's Url the media
// server's TwiML for it.
func mediaServices(t *testing.T, cfg config.Config, urls media.URLs) caller.Services {
	t.Helper()
	svc := services(t, cfg)
	p, err := telephony.New(cfg.Services["telephony"], telephony.WithPollInterval(5*time.Millisecond), telephony.WithTwiML(urls.TwiML))
	if err != nil {
		t.Fatal(err)
	}
	svc.Telephony = p
	return svc
}

// runCaller runs a caller on conn until ctx is done; its Run error is
// reported only when report is set (a caller whose connection the test
// kills fails, as it should).
func runCaller(t *testing.T, ctx context.Context, conn *bus.Conn, cfg config.Config, svc caller.Services, report bool) {
	t.Helper()
	c, err := caller.New(ctx, conn, cfg, svc, nil, natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil && report {
			t.Errorf("caller: %v", err)
		}
	}()
	t.Cleanup(func() { <-done })
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestAudioReachesTheCallee runs a call through the caller, the real media
// server and the simulator: the provider fetched the TwiML the create named,
// then exactly the bytes TTS rendered.
func TestAudioReachesTheCallee(t *testing.T) {
	sim := startSimulator(t, "name: media\n")
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	rec := record(t, admin)
	cfg := testConfig(sim.URL())
	urls := startMedia(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runCaller(t, ctx, srv.Connect(t, config.NATS{}, "caller-a"), cfg, mediaServices(t, cfg, urls), true)

	req := request(1)
	dispatch(t, admin, req)
	waitFor(t, 20*time.Second, "the terminal outcome", func() bool { return len(rec.terminals()) == 1 })
	term := rec.terminals()[req.CallID]
	if len(term) != 1 || term[0].Outcome != events.CallCompleted || term[0].CallStatus != "completed" {
		t.Fatalf("terminal events %+v, want one completed call", term)
	}
	m, ok := sim.MediaOf(req.CallID)
	if !ok || !m.Played || m.Error != "" || m.TTSSHA256 == "" || m.AudioSHA256 != m.TTSSHA256 {
		t.Fatalf("the provider fetched %+v, want the TTS audio", m)
	}
	if m.AudioBytes == 0 || int64(m.AudioBytes) != term[0].AudioBytes {
		t.Errorf("provider fetched %d bytes, the call event says %d stored", m.AudioBytes, term[0].AudioBytes)
	}
	stored, err := media.Open(admin).Get(ctx, req.CallID)
	if err != nil || digest(stored.Data) != m.TTSSHA256 {
		t.Errorf("stored audio %d bytes (%v) is not the TTS's", len(stored.Data), err)
	}
	if n := sim.SideEffects("elevenlabs", req.CallID); n != 1 {
		t.Errorf("%d TTS renders, want 1", n)
	}

	// Unknown ids are 404 (with a valid signature), unsigned ones 403.
	for u, want := range map[string]int{
		urls.Audio("no-such-call"): http.StatusNotFound, urls.TwiML("no-such-call"): http.StatusNotFound,
		urls.Base + "/audio/" + req.CallID: http.StatusForbidden,
	} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", u, resp.StatusCode, want)
		}
	}
}

// A call whose audio the provider cannot load (no media server answers its
// Url) fails at the provider, and the caller reports that call status.
func TestUnloadableAudioFailsTheCall(t *testing.T) {
	sim := startSimulator(t, "name: media\n")
	srv := natstest.Start(t)
	admin := srv.Conn(t)
	rec := record(t, admin)
	cfg := testConfig(sim.URL())
	dead := httptest.NewServer(http.NotFoundHandler())
	urls := media.URLs{Base: dead.URL}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runCaller(t, ctx, srv.Connect(t, config.NATS{}, "caller-a"), cfg, mediaServices(t, cfg, urls), true)
	req := request(1)
	dispatch(t, admin, req)
	waitFor(t, 20*time.Second, "the terminal outcome", func() bool { return len(rec.terminals()) == 1 })
	if term := rec.terminals()[req.CallID]; term[0].CallStatus != telephony.StatusFailed {
		t.Errorf("terminal event %+v, want call_status failed", term[0])
	}
	if m, _ := sim.MediaOf(req.CallID); m.Played || m.TwiMLStatus != http.StatusNotFound {
		t.Errorf("provider media %+v, want the TwiML's 404", m)
	}
}

// crashingTTS renders, then has the caller die before the audio is stored.
type crashingTTS struct {
	caller.Speaker
	crash func()
}

func (c crashingTTS) Speak(ctx context.Context, callID, text string) ([]byte, error) {
	audio, err := c.Speaker.Speak(ctx, callID, text)
	c.crash()
	return audio, err
}

// crashingDialer has the caller die as it begins to place the call: after
// the audio is stored.
type crashingDialer struct {
	caller.Dialer
	crash func()
}

func (c crashingDialer) Dial(ctx context.Context, _, _ string, _ time.Time) (telephony.Call, error) {
	c.crash()
	<-ctx.Done()
	return telephony.Call{}, ctx.Err()
}

// TestTakeoverReusesStoredAudio: a caller dies (its connection to the bus
// gone, its request unacknowledged) and another takes the request over when
// the ack wait runs out. Died after the audio was stored: no second LLM or
// TTS request, and the callee hears the first render. Died between TTS and
// the store: the audio is rendered again. The contact is rung once either
// way.
func TestTakeoverReusesStoredAudio(t *testing.T) {
	tests := []struct {
		name     string
		crashTTS bool
		wantTTS  int
		wantLLM  int
	}{
		{"died after the audio was stored", false, 1, 1},
		{"died between TTS and the store", true, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := startSimulator(t, "name: media\n")
			srv := natstest.Start(t)
			admin := srv.Conn(t)
			rec := record(t, admin)
			cfg := testConfig(sim.URL())
			urls := startMedia(t, srv)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			dying := srv.Connect(t, config.NATS{}, "caller-dying")
			died := make(chan struct{})
			var once sync.Once
			crash := func() { once.Do(func() { dying.Abort(); close(died) }) }
			svc := mediaServices(t, cfg, urls)
			if tt.crashTTS {
				svc.TTS = crashingTTS{Speaker: svc.TTS, crash: crash}
			} else {
				svc.Telephony = crashingDialer{Dialer: svc.Telephony, crash: crash}
			}
			runCaller(t, ctx, dying, cfg, svc, false)
			req := request(1)
			dispatch(t, admin, req)
			select {
			case <-died:
			case <-time.After(20 * time.Second):
				t.Fatal("the first caller never got to its crash point")
			}
			if n := sim.SideEffects("telephony", req.CallID); n != 0 {
				t.Fatalf("the dead caller rang the contact %d times", n)
			}

			runCaller(t, ctx, srv.Connect(t, config.NATS{}, "caller-b"), cfg, mediaServices(t, cfg, urls), true)
			waitFor(t, 20*time.Second, "the terminal outcome", func() bool { return len(rec.terminals()) == 1 })
			term := rec.terminals()[req.CallID]
			if len(term) != 1 || term[0].Outcome != events.CallCompleted || term[0].CallStatus != "completed" || term[0].AudioBytes == 0 {
				t.Fatalf("terminal events %+v, want one completed call with audio", term)
			}
			if n := sim.SideEffects("elevenlabs", req.CallID); n != tt.wantTTS {
				t.Errorf("%d TTS renders, want %d", n, tt.wantTTS)
			}
			if n := sim.SideEffects("llm", req.CallID); n != tt.wantLLM {
				t.Errorf("%d LLM completions, want %d", n, tt.wantLLM)
			}
			if n := sim.SideEffects("telephony", req.CallID); n != 1 {
				t.Errorf("contact rung %d times, want once", n)
			}
			if m, _ := sim.MediaOf(req.CallID); !m.Played {
				t.Errorf("provider media %+v, want the TTS audio played", m)
			}
		})
	}
}
