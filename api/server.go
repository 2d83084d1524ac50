// Package api is gonomaly's HTTP API (Echo, under /api/v1): it lists the detectors,
// scores small batches synchronously and ingests records into the records topic, so that
// services without a Kafka client can use the pipeline. Every error is an RFC 9457
// application/problem+json response that names the field, row or line at fault.
//
// The server holds no state of its own (API replicas are interchangeable); the Kafka
// client and the metrics registry are given to it, so tests build exactly what main does.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/jobs"
)

// Prefix is where the versioned routes live.
const Prefix = "/api/v1"

// Defaults of Config's limits.
const (
	DefaultMaxBodyBytes    = 10 << 20
	DefaultMaxDatasetBytes = 1 << 30
	DefaultMaxRows         = 10_000
	DefaultProduceTimeout  = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultDetectTimeout   = 10 * time.Second
)

// Topics names the topics the API writes to and reads from.
type Topics struct {
	Records   string // POST /records publishes here
	Anomalies string // GET /anomalies/stream reads here
}

// Config configures a Server. Zero limits take the defaults.
type Config struct {
	// Client publishes ingested records; the caller owns it. Nil: POST /records answers
	// 503, the other routes work.
	Client *kgo.Client
	Topics Topics
	// Registerer receives the HTTP metrics; nil: not registered anywhere.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// NewConsumer builds the Kafka client of one GET /anomalies/stream connection from
	// the options the stream adds (see NewConsumerFunc); the stream closes it. Nil: the
	// stream answers 503.
	NewConsumer func(opts ...kgo.Opt) (*kgo.Client, error)

	// Jobs is the job system's Kafka side (jobs.Open). Nil: the job, dataset and model
	// routes answer 503, the other routes work.
	Jobs *jobs.Store

	// Keys are the API keys; empty: no authentication (every request may read and
	// submit). See auth.go.
	Keys []Key
	// RateLimit is the requests per second one key (or, without keys, one client
	// address) may make, with bursts of RateBurst (default: one second's worth); zero:
	// unlimited.
	RateLimit float64
	RateBurst int

	MaxBodyBytes    int64         // request bodies above this get 413
	MaxDatasetBytes int64         // POST /datasets bodies above this get 413 (streamed, never held whole)
	MaxRows         int           // rows (and train rows) of one POST /detect
	DetectTimeout   time.Duration // the work budget of one POST /detect, waiting for a core included
	ProduceTimeout  time.Duration // how long POST /records waits for the broker's acks
	ShutdownTimeout time.Duration // how long Serve lets in-flight requests finish
	MaxStreams      int           // open anomaly streams; more get 503
	StreamHeartbeat time.Duration // how often an anomaly stream sends a comment line
}

// Server is the HTTP API. Its Handler can be served by any http.Server; Serve runs one
// with graceful shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	e       *echo.Echo
	metrics *httpMetrics
	ready   atomic.Bool
	// detectSlots bounds concurrent POST /detect computations to the cores, so a burst
	// of heavy requests queues instead of starving the pipeline in the same process.
	detectSlots chan struct{}
	streams     *streams
	keys        keyring      // empty: no authentication
	limiter     *rateLimiter // nil: no rate limit
}

// New builds the server and its routes. It fails when the Registerer already holds
// different metrics under the same names.
func New(cfg Config) (*Server, error) {
	orDefault(&cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	orDefault(&cfg.MaxDatasetBytes, DefaultMaxDatasetBytes)
	orDefault(&cfg.MaxRows, DefaultMaxRows)
	orDefault(&cfg.ProduceTimeout, DefaultProduceTimeout)
	orDefault(&cfg.ShutdownTimeout, DefaultShutdownTimeout)
	orDefault(&cfg.MaxStreams, DefaultMaxStreams)
	orDefault(&cfg.StreamHeartbeat, DefaultStreamHeartbeat)
	orDefault(&cfg.DetectTimeout, DefaultDetectTimeout)
	if err := CheckKeys(cfg.Keys); err != nil {
		return nil, fmt.Errorf("api: API keys: %w", err)
	}
	if cfg.RateLimit < 0 || math.IsNaN(cfg.RateLimit) || math.IsInf(cfg.RateLimit, 0) || cfg.RateBurst < 0 {
		return nil, fmt.Errorf("api: rate limit %g/s with bursts of %d: want a finite rate and burst >= 0", cfg.RateLimit, cfg.RateBurst)
	}
	if cfg.RateLimit > 0 && cfg.RateBurst == 0 {
		cfg.RateBurst = max(1, int(math.Ceil(cfg.RateLimit)))
	}
	if cfg.Client != nil && cfg.Topics.Records == "" {
		return nil, errors.New("api: a Kafka client needs Topics.Records")
	}
	if cfg.NewConsumer != nil && cfg.Topics.Anomalies == "" {
		return nil, errors.New("api: a Kafka consumer needs Topics.Anomalies")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newHTTPMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	st, err := newStreams(cfg.MaxStreams, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, metrics: m, detectSlots: make(chan struct{}, runtime.NumCPU()), streams: st, keys: newKeyring(cfg.Keys)}
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst)
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard) // errors are logged through slog by handleError
	e.HTTPErrorHandler = s.handleError
	s.e = e

	e.GET("/healthz", s.healthz, markMatched)
	e.GET("/readyz", s.readyz, markMatched)
	e.GET("/openapi.json", s.openAPI, markMatched)
	// Route middleware, not group middleware: Group.Use would also add catch-all 404 routes.
	read, submit := s.require(RoleRead), s.require(RoleSubmit)
	e.GET(Prefix+"/detectors", s.listDetectors, markMatched, read)
	e.POST(Prefix+"/detect", s.detect, markMatched, submit)
	e.POST(Prefix+"/records", s.postRecords, markMatched, submit)
	e.GET(Prefix+"/anomalies/stream", s.streamAnomalies, markMatched, read)
	e.POST(Prefix+"/jobs", s.submitJob, markMatched, submit)
	e.GET(Prefix+"/jobs", s.listJobs, markMatched, read)
	e.GET(Prefix+"/jobs/:id", s.getJob, markMatched, read)
	e.DELETE(Prefix+"/jobs/:id", s.cancelJob, markMatched, submit)
	e.GET(Prefix+"/jobs/:id/results", s.jobResults, markMatched, read)
	e.POST(Prefix+"/datasets", s.uploadDataset, markMatched, submit)
	e.GET(Prefix+"/datasets/:id", s.getDataset, markMatched, read)
	e.GET(Prefix+"/models", s.listModels, markMatched, read)
	e.GET(Prefix+"/models/:name", s.getModel, markMatched, read)

	routes := map[string]bool{}
	for _, r := range e.Routes() {
		routes[r.Path] = true
	}
	// Outermost first: metrics see the final status, including recovered panics.
	e.Use(s.observe(routes), s.recoverPanics, s.limitBody)
	return s, nil
}

// ProducerOptions are the settings of the Kafka client the API produces with (Config.Client
// and the jobs.Store's client). Every request waits for the acks of its own records, so
// a long linger would be latency without gain: concurrent requests fill batches while
// earlier ones are in flight. Batches may be as large as a model on the models topic or a job
// with inline rows on a queue, and keep the broker's 1 MB default elsewhere, where a larger batch would be refused.
func ProducerOptions(topics jobs.Topics) []kgo.Opt {
	return []kgo.Opt{
		kgo.ProducerLinger(ProducerLinger),
		kgo.ProducerBatchMaxBytesFn(func(topic string) int32 {
			switch topic {
			case topics.Models:
				return cluster.MaxModelBytes
			case topics.Detect, topics.Ensemble, topics.Preprocess, topics.Train:
				return cluster.MaxJobBytes
			}
			return defaultBatchMaxBytes
		}),
	}
}

// ProducerLinger is how long the API's producer waits to fill a batch.
const ProducerLinger = time.Millisecond

// defaultBatchMaxBytes is Kafka's default max.message.bytes, franz-go's default batch cap.
const defaultBatchMaxBytes = 1_000_012

// orDefault sets a zero or negative limit to its default.
func orDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.e }

// SetReady flips /readyz; Serve sets it while it serves.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Listen binds addr for Serve; ":0" picks a port. Binding first lets a process fail on a
// busy address before it starts anything else.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("API address %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx is cancelled, then stops accepting connections and gives
// in-flight requests ShutdownTimeout to finish. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(s.streams.shutdown) // streams never end on their own
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready.Store(true)
	s.log.Info("serving API", "addr", "http://"+ln.Addr().String()+Prefix)
	select {
	case err := <-errc:
		s.ready.Store(false)
		return fmt.Errorf("API server: %w", err)
	case <-ctx.Done():
	}
	s.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	<-errc // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		srv.Close()
		return fmt.Errorf("API shutdown: in-flight requests did not finish within %s: %w", s.cfg.ShutdownTimeout, err)
	}
	return nil
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if !s.ready.Load() {
		return problem(http.StatusServiceUnavailable, TypeBlank, "", "not ready: the server is starting or shutting down")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// readBody reads the whole request body; limitBody has capped it.
func readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, badRequest("", "reading the request body: %v", err)
	}
	return body, nil
}
