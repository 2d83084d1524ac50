package api

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gonomaly/gonomaly/internal/telemetry"
)

// httpMetrics are the API's request metrics. The route label is the route's pattern
// (never the raw path, whose values are unbounded) or "unmatched".
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	panics   prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_http_requests_total",
			Help: "HTTP API requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gonomaly_http_request_duration_seconds",
			Help:    "HTTP API request latency by route pattern, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method", "status"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gonomaly_http_panics_total",
			Help: "HTTP API handler panics recovered (each answered 500 and logged with its stack).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.panics, err = register(reg, m.panics); err != nil {
		return nil, err
	}
	return m, nil
}

// register is telemetry.RegisterOrExisting, so that two servers (or a restarted one) can
// share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	c, err := telemetry.RegisterOrExisting(reg, c)
	if err != nil {
		return c, fmt.Errorf("api: %w", err)
	}
	return c, nil
}

// observe counts and times every request. It hands errors to the error handler itself,
// so that the status it records is the one the client got.
func (s *Server) observe(routes map[string]bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			matched := c.Get(matchedKey) != nil || c.Response().Status == http.StatusMethodNotAllowed
			if !matched || !routes[route] {
				route = "unmatched"
			}
			status := strconv.Itoa(c.Response().Status)
			method := c.Request().Method
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
				http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
			default:
				method = "other" // methods are client-chosen strings: keep the label bounded
			}
			s.metrics.requests.WithLabelValues(route, method, status).Inc()
			s.metrics.duration.WithLabelValues(route, method, status).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// matchedKey marks a request that reached a route's handler: the router also sets a
// path on requests it answers 404, so the path alone does not say a route matched.
const matchedKey = "gonomaly.matched"

func markMatched(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(matchedKey, true)
		return next(c)
	}
}

// recoverPanics turns a handler's panic into a logged 500, so one bad request cannot
// take the process down.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.metrics.panics.Inc()
				s.log.Error("API handler panicked", "method", c.Request().Method, "path", c.Request().URL.Path, "panic", r, "stack", string(debug.Stack()))
				p := problem(http.StatusInternalServerError, TypeInternal, "", "internal error; it has been logged")
				p.cause = fmt.Errorf("panic: %v", r)
				err = p
			}
		}()
		return next(c)
	}
}

// limitBody rejects bodies over MaxBodyBytes: at once when Content-Length says so,
// otherwise when reading passes the limit. A dataset upload is streamed into Kafka as
// it arrives, never held whole, so it has its own larger limit, MaxDatasetBytes.
func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		limit, tooLarge := s.cfg.MaxBodyBytes, s.bodyTooLarge
		if req.Method == http.MethodPost && c.Path() == Prefix+"/datasets" {
			limit, tooLarge = s.cfg.MaxDatasetBytes, s.datasetTooLarge
		}
		if req.ContentLength > limit {
			return tooLarge()
		}
		req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
		return next(c)
	}
}
