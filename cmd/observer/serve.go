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
	hs := &http.Server{Handler: observer.Handler(p, dm, reg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("observer started", "http", ln.Addr().String(), "consumer", cfg.Observer.Consumer, "sinks", len(cfg.Sinks), "source", conn.Source)

	// The pipeline and the sinks run until ctx is done or one of them fails;
	// either way both are stopped and drained before the connection is.
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

	sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	log.Info("observer drained")
	if derr != nil {
		derr = fmt.Errorf("sinks: %w", derr)
	}
	return errors.Join(perr, derr)
}
