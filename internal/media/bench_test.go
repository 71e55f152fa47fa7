package media_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/callagent/agent/internal/media"
	"github.com/callagent/agent/internal/natstest"
)

// Sizes: the demo's 2 KiB, and about 30 s of 128 kbit/s MP3.
var benchSizes = []int{2 << 10, 480 << 10}

// BenchmarkServeAudio is GET /audio/<id> over HTTP from a real server and
// bucket: audio served per second (the audio/s metric) and bytes per second.
func BenchmarkServeAudio(b *testing.B) {
	srv := natstest.Start(b)
	conn := srv.Conn(b)
	ctx := context.Background()
	st, err := media.Create(ctx, conn, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchSizes {
		id := fmt.Sprintf("call-%d", size)
		if err := st.Put(ctx, id, audio(b, size)); err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewServer(media.NewServer(media.Open(conn), media.URLs{}, nil).Handler())
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			start := time.Now()
			for b.Loop() {
				resp, err := http.Get(hs.URL + "/audio/" + id)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n != int64(size) {
					b.Fatalf("%d, %d bytes", resp.StatusCode, n)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "audio/s")
		})
		hs.Close()
	}
}

// BenchmarkStorePut is the latency of storing one call's audio (ns/op).
func BenchmarkStorePut(b *testing.B) {
	srv := natstest.Start(b)
	conn := srv.Conn(b)
	ctx := context.Background()
	st, err := media.Create(ctx, conn, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchSizes {
		data := audio(b, size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				i++
				if err := st.Put(ctx, fmt.Sprintf("call-%d", i), data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
