package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/config"
	"github.com/callagent/agent/internal/observer"
	"github.com/callagent/agent/internal/observer/delivery"
	"github.com/callagent/agent/internal/observer/lease"
	"github.com/callagent/agent/internal/observer/silence"
)

// serve runs the observer until ctx is done: the rules pipeline, the sinks'
// delivery and the HTTP endpoints, all sharing one metrics registry.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	conn, err := connect(ctx, cfg, log, events.StreamEvents, events.StreamAlerts)
	if err != nil {
		return err
	}
	defer conn.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := observer.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	// The status page's live view: the pipeline, the silences and the
	// campaigns each wake its connections when they change.
	hub := observer.NewHub()
	recovery := map[string]time.Duration{}
	for name, svc := range cfg.Services {
		recovery[name] = svc.Breaker.RecoveryTimeout
	}
	p, err := observer.New(ctx, conn, observer.Options{
		Rules: cfg.Observer.Rules, Consumer: cfg.Observer.Consumer, Metrics: metrics, Log: log,
		RecoveryTimeout: recovery, OnChange: hub.Notify,
	})
	if err != nil {
		return err
	}
	dm, err := delivery.New(conn, cfg.Sinks, cfg.Observer.PluginDir, log, reg)
	if err != nil {
		return err
	}
	defer dm.Close()
	silences := silence.NewSet(log, hub.Notify)
	dm.Silence(silences)
	campaigns := observer.NewCampaigns(cmp.Or(cfg.Dispatcher.StateBucket, "campaigns"), log, hub.Notify)

	ln, err := net.Listen("tcp", cfg.Observer.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("observer.http.addr: %w", err)
	}
	defer ln.Close()
	el, err := lease.Open(ctx, conn, lease.Options{
		Key: cfg.Observer.Consumer, Holder: conn.Source, Addr: ln.Addr().String(),
		TTL: cfg.Observer.Lease.TTL, Log: log,
	})
	if err != nil {
		return err
	}
	// The live page's event streams end with the observer: Shutdown waits
	// for requests to finish, and those would not by themselves.
	httpCtx, endStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer endStreams()
	live := &observer.Live{Campaigns: campaigns, Silences: silences, Hub: hub}
	hs := &http.Server{
		BaseContext: func(net.Listener) context.Context { return httpCtx },
		Handler:     observer.Handler(p, dm, el, reg, live), ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("observer started", "http", ln.Addr().String(), "consumer", cfg.Observer.Consumer, "sinks", len(cfg.Sinks),
		"source", conn.Source, "lease_ttl", cfg.Observer.Lease.TTL)

	// Every observer, active or standing by, follows the silences and the
	// campaigns for its page; only the lease's holder derives and delivers,
	// the others stand by until it is free (package lease).
	wctx, stopWatches := context.WithCancel(ctx)
	var watches sync.WaitGroup
	watches.Go(func() { silences.Run(wctx, conn, 5*time.Second) })
	watches.Go(func() { campaigns.Run(wctx, conn, 5*time.Second) })
	err = el.Run(ctx, func(actx context.Context) error { return act(actx, p, dm, silences, log) })
	stopWatches()
	watches.Wait()

	sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	endStreams()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	log.Info("observer drained")
	return err
}

// act is one term as the active observer: the pipeline and the sinks run
// until ctx is done (a shutdown, or the lease lost) or one of them fails;
// either way both are stopped and drained before act returns. The sinks
// start once the silences are loaded, so that no silenced alert goes out.
func act(ctx context.Context, p *observer.Pipeline, dm *delivery.Manager, silences *silence.Set, log *slog.Logger) error {
	log.Info("observer active: deriving and delivering")
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var perr, derr error
	var wg sync.WaitGroup
	wg.Go(func() {
		perr = p.Run(rctx)
		cancel()
	})
	wg.Go(func() {
		select {
		case <-silences.Settled():
		case <-rctx.Done():
			return
		}
		if derr = dm.Run(rctx); derr != nil {
			cancel()
		}
	})
	wg.Wait()
	if derr != nil {
		derr = fmt.Errorf("sinks: %w", derr)
	}
	if ctx.Err() != nil {
		log.Info("observer no longer active", "why", context.Cause(ctx))
	}
	return errors.Join(perr, derr)
}
