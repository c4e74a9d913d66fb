package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func newServeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the streaming scoring pipeline",
		Long: `serve consumes the input topic (kafka.input_topic) as consumer group
kafka.group, validates each JSON event against the input schema, reads the
model's features from Redis in one pipelined round trip per batch, scores the
batch with ONNX Runtime, produces predictions to kafka.predictions_topic and
invalid events (with reason headers) to kafka.dlq_topic, writes every input
and output to the ClickHouse inference log, and only then commits offsets.

It serves /metrics, /healthz and /readyz on the address in config key http
(SEER_HTTP, default 127.0.0.1:8080), and
/debug/pprof when pprof is true. /readyz lists each dependency (the group
membership, Kafka, Redis, ClickHouse) with its own 500 ms deadline and is
ready once this instance has joined its consumer group; /healthz fails only
when the loops stop making progress. It applies missing ClickHouse
migrations on start, after binding the HTTP port.
SIGINT or SIGTERM stops it after the batch in flight.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, logger)
		},
	}
}

// tuneGC paces serve's garbage collector: the heap may grow gc_percent
// over the live heap before a collection (fewer collections than Go's
// 100), and the soft memory_limit makes the GC work harder before the
// process grows past it, so that a backlog cannot grow it without bound.
// GOGC and GOMEMLIMIT, where set, win.
func tuneGC(cfg Config, lookupEnv func(string) (string, bool)) {
	if _, set := lookupEnv("GOMEMLIMIT"); !set && cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	if _, set := lookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}
}

func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	tuneGC(cfg, os.LookupEnv)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The port is bound before anything is written: a port in use fails the
	// start before the database or the spool is touched. Until the app is
	// built, /readyz says it is starting.
	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http: listening on %s: %w", cfg.HTTP, err)
	}
	var built atomic.Pointer[app]
	srv := &http.Server{Handler: httpMux(cfg, reg, &built), ReadHeaderTimeout: 5 * time.Second}
	logger.Info("http listening", "addr", ln.Addr().String())
	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	grp.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	grp.Go(func() error {
		a, err := buildApp(gctx, cfg, logger, reg)
		if err != nil {
			return err
		}
		defer a.Close()
		built.Store(a)
		return a.Run(gctx)
	})
	return grp.Wait()
}

// probeTimeout bounds each dependency check of /readyz; they run at once,
// so the answer comes well within a Kubernetes probe's 1 s default.
const probeTimeout = 500 * time.Millisecond

func httpMux(cfg Config, reg *prometheus.Registry, built *atomic.Pointer[app]) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a := built.Load(); a != nil {
			if err := a.Alive(time.Now()); err != nil {
				http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		a := built.Load()
		if a == nil {
			http.Error(w, "not ready: starting (loading the model, connecting, migrating)", http.StatusServiceUnavailable)
			return
		}
		report, ok := a.Ready(r.Context(), probeTimeout)
		if !ok {
			http.Error(w, "not ready\n"+report, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n" + report))
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	return mux
}
