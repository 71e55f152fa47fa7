// Command media serves each call's TwiML and audio to the telephony
// provider, from the Object Store bucket call_audio that the callers fill:
// GET or POST /twiml/<call_id> and GET /audio/<call_id> (with Range). Run one
// or more behind the public URL set as media.public_url; it holds no state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/callagent/agent/internal/cli"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/media"
)

const usage = `usage: media [--config FILE] [--set key=value ...] [--addr HOST:PORT]

Serves each call's TwiML (GET or POST /twiml/<call_id>) and audio
(GET /audio/<call_id>, with byte ranges) to the telephony provider, read from
the JetStream Object Store bucket call_audio that the callers write. The
provider reaches it at media.public_url; with media.signing_key set, only
signed, unexpired URLs are served. Unknown or expired call ids answer 404.

Examples:
  media --config config.yaml
  AGENT_MEDIA__SIGNING_KEY=... media --config config.yaml --addr 0.0.0.0:8090
`

func main() { os.Exit(cli.Run("media", run)) }

func run(ctx context.Context, c cli.Command, args []string) int {
	fs := flag.NewFlagSet("media", flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.String("addr", "", "listen address (default media.http.addr)")
	cfg, code, ok := c.Load(fs, args, map[string]string{"addr": "media.http.addr"})
	if !ok {
		return code
	}
	log := c.Logger(cfg.Log, "media")
	if err := serve(ctx, cfg, log, func(addr string) { fmt.Fprintf(c.Stdout, "media listening on http://%s\n", addr) }); err != nil {
		log.Error("media stopped", "err", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger, listening func(addr string)) error {
	conn, err := cli.Connect(ctx, cfg.NATS, config.RoleMedia, cli.Source(config.RoleMedia), log)
	if err != nil {
		return err
	}
	defer conn.Close()
	urls := media.URLs{Base: cfg.Media.PublicURL, Key: cfg.Media.SigningKey, TTL: cfg.Media.URLTTL}
	ln, err := net.Listen("tcp", cfg.Media.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("media.http.addr: %w", err)
	}
	if urls.Base == "" {
		urls.Base = "http://" + ln.Addr().String()
	}
	srv := media.NewServer(media.Open(conn), urls, log)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("media started", "http", ln.Addr().String(), "public_url", urls.Base, "signed", urls.Key != "")
	listening(ln.Addr().String())
	<-ctx.Done()
	sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	return hs.Shutdown(sctx)
}
