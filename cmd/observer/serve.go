package main

import (
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
	p, err := observer.New(ctx, conn, observer.Options{
		Rules: cfg.Observer.Rules, Consumer: cfg.Observer.Consumer, Metrics: metrics, Log: log,
	})
	if err != nil {
		return err
	}
	dm, err := delivery.New(conn, cfg.Sinks, cfg.Observer.PluginDir, log, reg)
	if err != nil {
		return err
	}
	defer dm.Close()

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
	hs := &http.Server{Handler: observer.Handler(p, dm, el, reg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("observer started", "http", ln.Addr().String(), "consumer", cfg.Observer.Consumer, "sinks", len(cfg.Sinks),
		"source", conn.Source, "lease_ttl", cfg.Observer.Lease.TTL)

	// Only the lease's holder derives and delivers; the others stand by
	// until it is free (package lease).
	err = el.Run(ctx, func(actx context.Context) error { return act(actx, p, dm, log) })

	sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	log.Info("observer drained")
	return err
}

// act is one term as the active observer: the pipeline and the sinks run
// until ctx is done (a shutdown, or the lease lost) or one of them fails;
// either way both are stopped and drained before act returns.
func act(ctx context.Context, p *observer.Pipeline, dm *delivery.Manager, log *slog.Logger) error {
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
