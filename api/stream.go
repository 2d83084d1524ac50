package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/schemas"
)

// Defaults of the stream limits in Config.
const (
	DefaultMaxStreams      = 64
	DefaultStreamHeartbeat = 15 * time.Second
	// streamStartTimeout bounds how long a new stream waits for the broker to say where
	// the anomalies topic's partitions end.
	streamStartTimeout = 10 * time.Second
)

// NewConsumerFunc returns a Config.NewConsumer that builds plain clients (no consumer
// group) for brokers with opts, then the options the stream adds. Main and tests use it
// so that both build the same client.
func NewConsumerFunc(brokers []string, opts ...kgo.Opt) func(...kgo.Opt) (*kgo.Client, error) {
	// read_committed: with exactly-once stages, records of aborted transactions are
	// never shown; without transactions it changes nothing.
	base := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted())}, opts...)
	return func(more ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append(append([]kgo.Opt(nil), base...), more...)...)
	}
}

// streams is the state GET /anomalies/stream shares across connections.
type streams struct {
	slots chan struct{} // one per open stream, bounding them to MaxStreams
	open  prometheus.Gauge
	stop  chan struct{} // closed when the server shuts down: every stream ends
	once  sync.Once
}

func newStreams(max int, reg prometheus.Registerer) (*streams, error) {
	st := &streams{
		slots: make(chan struct{}, max),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gonomaly_api_anomaly_streams_open",
			Help: "Open GET /api/v1/anomalies/stream connections (server-sent events).",
		}),
		stop: make(chan struct{}),
	}
	if reg != nil {
		var err error
		if st.open, err = register(reg, st.open); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// shutdown ends every open stream: http.Server.Shutdown waits for requests to finish
// but never cancels them, and a stream would not finish on its own.
func (st *streams) shutdown() { st.once.Do(func() { close(st.stop) }) }

// streamQuery is GET /anomalies/stream's parsed query.
type streamQuery struct {
	earliest bool
	series   map[string]bool // nil: every series
}

func parseStreamQuery(c echo.Context) (streamQuery, *Problem) {
	var q streamQuery
	qs := c.QueryParams()
	if vs, ok := qs["from"]; ok {
		if len(vs) != 1 {
			return q, badRequest("from", "from: give it once, not %d times", len(vs))
		}
		switch vs[0] {
		case "latest":
		case "earliest":
			q.earliest = true
		default:
			return q, badRequest("from", "from: %q is not latest or earliest", vs[0])
		}
	}
	if vs, ok := qs["series"]; ok {
		q.series = map[string]bool{}
		for _, v := range vs {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					q.series[s] = true
				}
			}
		}
		if len(q.series) == 0 {
			return q, badRequest("series", "series: no series named (want series=a,b)")
		}
	}
	return q, nil
}

// streamAnomalies serves GET /anomalies/stream: the anomaly events as server-sent
// events, read by a client of its own that consumes every partition of the anomalies
// topic directly (no consumer group, so streams never steal events from each other or
// from the sinks), from the end (or the start with from=earliest).
func (s *Server) streamAnomalies(c echo.Context) error {
	q, p := parseStreamQuery(c)
	if p != nil {
		return p
	}
	if s.cfg.NewConsumer == nil {
		return problem(http.StatusServiceUnavailable, TypeBlank, "", "the anomaly stream is not configured on this server (no Kafka consumer)")
	}
	select {
	case s.streams.slots <- struct{}{}:
		defer func() { <-s.streams.slots }()
	default:
		c.Response().Header().Set("Retry-After", "5")
		return problem(http.StatusServiceUnavailable, TypeBlank, "", "too many open anomaly streams (the limit is %d); retry later", s.cfg.MaxStreams)
	}
	s.streams.open.Inc()
	defer s.streams.open.Dec()

	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	go func() {
		select {
		case <-s.streams.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	topic := s.cfg.Topics.Anomalies
	cl, err := s.cfg.NewConsumer()
	if err != nil {
		p := problem(http.StatusServiceUnavailable, TypeBlank, "", "cannot build a Kafka client for the anomaly stream: %v", err)
		p.cause = err
		return p
	}
	defer cl.Close()
	if err := startConsuming(ctx, cl, topic, q.earliest); err != nil {
		if ctx.Err() != nil {
			return nil // the client left before the stream started
		}
		p := problem(http.StatusServiceUnavailable, TypeBlank, "", "cannot start reading %s: %v", topic, err)
		p.cause = err
		return p
	}

	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies such as nginx must not buffer the stream
	w.WriteHeader(http.StatusOK)
	w.Flush()

	hb := s.cfg.StreamHeartbeat
	next := time.Now().Add(hb)
	var (
		buf []byte
		ev  schemas.Result
	)
	for {
		pollCtx, pollCancel := context.WithDeadline(ctx, next)
		fetches := cl.PollFetches(pollCtx)
		pollCancel()
		if ctx.Err() != nil {
			return nil // the client left or the server is shutting down
		}
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.log.Warn("anomaly stream: fetch error", "topic", t, "partition", part, "error", err)
			}
		})
		buf = buf[:0]
		fetches.EachRecord(func(r *kgo.Record) {
			if q.series != nil && len(r.Key) > 0 && !q.series[string(r.Key)] {
				return
			}
			if err := schemas.DecodeResult(r.Value, &ev); err != nil {
				s.log.Warn("anomaly stream: skipping an undecodable event", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "error", err)
				return
			}
			if q.series != nil && len(r.Key) == 0 && !q.series[ev.Series] {
				return
			}
			buf = appendSSE(buf, &ev)
		})
		if !time.Now().Before(next) {
			buf = append(buf, ": ping\n\n"...)
			next = time.Now().Add(hb)
		}
		if len(buf) == 0 {
			continue
		}
		if _, err := w.Write(buf); err != nil {
			return nil // the connection is gone
		}
		if err := http.NewResponseController(w.Writer).Flush(); err != nil {
			return nil
		}
	}
}

// startConsuming points cl at every partition of topic, at its current end (or its
// start), so that "latest" means the events published after the stream's headers.
func startConsuming(ctx context.Context, cl *kgo.Client, topic string, earliest bool) error {
	ctx, cancel := context.WithTimeout(ctx, streamStartTimeout)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return err
	}
	if err := ends.Error(); err != nil {
		return err
	}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if earliest {
			parts[o.Partition] = kgo.NewOffset().AtStart()
		} else {
			parts[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	if len(parts) == 0 {
		return fmt.Errorf("topic %s has no partitions", topic)
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	return nil
}

// appendSSE appends ev as one server-sent event: its id, the type anomaly and its JSON
// form on one data line (the JSON encoder escapes every newline inside strings).
func appendSSE(dst []byte, ev *schemas.Result) []byte {
	dst = append(dst, "id: "...)
	dst = append(dst, sseID(ev.EventID)...)
	dst = append(dst, "\nevent: anomaly\ndata: "...)
	dst = schemas.AppendAnomalyEventJSON(dst, ev)
	return append(dst, "\n\n"...)
}

// sseID keeps an id on its line: SSE fields end at CR or LF, and an id holding NUL is
// ignored by browsers.
func sseID(id string) string {
	if !strings.ContainsAny(id, "\r\n\x00") {
		return id
	}
	return strconv.Quote(id)
}
