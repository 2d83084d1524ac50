package sinks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>" when a secret is set.
const SignatureHeader = "X-Gonomaly-Signature"

// maxRetryAfter caps how long a Retry-After header can make the sink wait per attempt.
const maxRetryAfter = 5 * time.Minute

// WebhookConfig configures a webhook sink. ParseWebhookURI builds it from a URI.
type WebhookConfig struct {
	URL        string  // the endpoint, without gonomaly's options
	Name       string  // how errors and logs name the endpoint (scheme://host/…)
	Batch      int     // events per request; above 1 the raw template posts a JSON array
	Template   string  // raw, slack or pagerduty
	Rate       float64 // requests per second to the endpoint; 0: unlimited
	Secret     []byte  // HMAC key; nil: requests are not signed
	RoutingKey string  // PagerDuty integration key
	Timeout    time.Duration
	Retries    int // retries after the first attempt; -1: retry forever
	Backoff    time.Duration
	MaxBackoff time.Duration
	Client     *http.Client // nil: a client with Timeout
}

// ParseWebhookURI reads "https://host/path?batch=100&template=slack&rate=50&
// secret_env=NAME&timeout=5s&retries=8". Options gonomaly knows are taken out of the
// URL; any other query parameter is an error (so a misspelt option is never silently
// sent to the endpoint). Secrets come from environment variables named in the URI.
func ParseWebhookURI(uri string) (WebhookConfig, error) {
	var cfg WebhookConfig
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, fmt.Errorf("sink %q: not an http(s) URL with a host", redactURI(uri))
	}
	cfg.Name = u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" {
		cfg.Name += "/…" // webhook paths often hold tokens (Slack); never log them
	}
	if u.User != nil {
		return cfg, fmt.Errorf("sink %s: credentials in the URL are not allowed; use secret_env", cfg.Name)
	}
	o, err := parseOptions(cfg.Name, u.RawQuery)
	if err != nil {
		return cfg, err
	}
	if cfg.Template, err = o.oneOf("template", "raw", "raw", "slack", "pagerduty"); err != nil {
		return cfg, err
	}
	if cfg.Batch, err = o.int("batch", 1, 1, 10_000); err != nil {
		return cfg, err
	}
	if cfg.Template == "pagerduty" && cfg.Batch != 1 {
		return cfg, o.errf("batch", "PagerDuty takes one event per request")
	}
	if cfg.Rate, err = o.float("rate", 0, 0, 1e6); err != nil {
		return cfg, err
	}
	if cfg.Timeout, err = o.duration("timeout", 5*time.Second, time.Millisecond, 10*time.Minute); err != nil {
		return cfg, err
	}
	if cfg.Retries, err = o.int("retries", 8, -1, 1000); err != nil {
		return cfg, err
	}
	if cfg.Backoff, err = o.duration("backoff", 200*time.Millisecond, time.Millisecond, time.Hour); err != nil {
		return cfg, err
	}
	if cfg.MaxBackoff, err = o.duration("max_backoff", 30*time.Second, cfg.Backoff, 24*time.Hour); err != nil {
		return cfg, err
	}
	if name := o.str("secret_env", ""); name != "" {
		v := os.Getenv(name)
		if v == "" {
			return cfg, o.errf("secret_env", "environment variable %s is empty or unset", name)
		}
		cfg.Secret = []byte(v)
	}
	if name := o.str("routing_key_env", ""); name != "" {
		if cfg.RoutingKey = os.Getenv(name); cfg.RoutingKey == "" {
			return cfg, o.errf("routing_key_env", "environment variable %s is empty or unset", name)
		}
	}
	if cfg.Template == "pagerduty" && cfg.RoutingKey == "" {
		return cfg, fmt.Errorf("sink %s: template=pagerduty needs routing_key_env=NAME", cfg.Name)
	}
	if err := o.unknown(); err != nil {
		return cfg, err
	}
	u.RawQuery = ""
	cfg.URL = u.String()
	return cfg, nil
}

// redactURI keeps a URI's scheme and host only.
func redactURI(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host + "/…"
	}
	if len(uri) > 12 {
		return uri[:12] + "…"
	}
	return uri
}

// Webhook POSTs events to an HTTP endpoint. Writes are buffered until Deliver, which
// sends them in order, batch events per request, waiting on the rate limit and retrying
// 5xx, 429 and network errors with exponential backoff and full jitter (honouring
// Retry-After). Events refused with another 4xx, or still failing once the retry budget
// is spent, are returned as rejections for the dead-letter topic.
type Webhook struct {
	cfg     WebhookConfig
	client  *http.Client
	limiter *rate.Limiter
	m       *metrics

	lines []byte // pending lines, back to back
	ends  []int  // end offset of each pending line in lines
	body  bytes.Buffer
}

// OpenWebhook checks that the endpoint's host accepts connections and returns the sink.
func OpenWebhook(ctx context.Context, cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("sink %s: %w", cfg.Name, err)
	}
	if cfg.Batch < 1 {
		cfg.Batch = 1
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = cfg.Backoff
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", host)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("sink %s: target unreachable: %w", cfg.Name, err)
	}
	conn.Close()
	w := &Webhook{cfg: cfg, client: cfg.Client, limiter: rate.NewLimiter(rate.Inf, 1)}
	if w.client == nil {
		w.client = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Rate > 0 {
		w.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/10)))
	}
	return w, nil
}

func (w *Webhook) kind() string          { return "webhook" }
func (w *Webhook) instrument(m *metrics) { w.m = m }

// Write queues one event. Lines that are not JSON objects (or, for the Slack and
// PagerDuty templates, lack what the payload needs) are rejected at once.
func (w *Webhook) Write(line []byte) error {
	if !json.Valid(line) {
		return Reject(fmt.Errorf("webhook: not JSON"))
	}
	w.lines = append(w.lines, line...)
	w.ends = append(w.ends, len(w.lines))
	return nil
}

func (w *Webhook) line(i int) []byte {
	start := 0
	if i > 0 {
		start = w.ends[i-1]
	}
	return w.lines[start:w.ends[i]]
}

// Sync delivers without a deadline; rejections become an error.
func (w *Webhook) Sync() error {
	rej, err := w.Deliver(context.Background())
	if err == nil && len(rej) > 0 {
		err = fmt.Errorf("webhook %s: %d events rejected, first: %w", w.cfg.Name, len(rej), rej[0].Err)
	}
	return err
}

// Deliver sends the pending events in order and forgets them, delivered or rejected.
func (w *Webhook) Deliver(ctx context.Context) ([]Rejection, error) {
	defer func() { w.lines, w.ends = w.lines[:0], w.ends[:0] }()
	var rejected []Rejection
	for from := 0; from < len(w.ends); from += w.cfg.Batch {
		to := min(from+w.cfg.Batch, len(w.ends))
		err := w.render(from, to)
		if err == nil {
			err = w.post(ctx, w.body.Bytes())
		}
		if err == nil {
			continue
		}
		var rej *RejectedError
		if !errors.As(err, &rej) {
			return nil, err
		}
		for i := from; i < to; i++ {
			rejected = append(rejected, Rejection{Index: i, Err: rej.Err})
		}
	}
	return rejected, nil
}

// render writes the request body for events [from, to) into w.body.
func (w *Webhook) render(from, to int) error {
	w.body.Reset()
	switch w.cfg.Template {
	case "slack":
		var text strings.Builder
		for i := from; i < to; i++ {
			if i > from {
				text.WriteByte('\n')
			}
			ev, err := parseTemplateEvent(w.line(i))
			if err != nil {
				return Reject(err)
			}
			text.WriteString(ev.slackLine())
		}
		return json.NewEncoder(&w.body).Encode(map[string]string{"text": text.String()})
	case "pagerduty":
		body, err := pagerDutyBody(w.line(from), w.cfg.RoutingKey)
		if err != nil {
			return Reject(err)
		}
		w.body.Write(body)
		return nil
	default:
		if w.cfg.Batch == 1 {
			w.body.Write(w.line(from))
			return nil
		}
		w.body.WriteByte('[')
		for i := from; i < to; i++ {
			if i > from {
				w.body.WriteByte(',')
			}
			w.body.Write(w.line(i))
		}
		w.body.WriteByte(']')
		return nil
	}
}

// post sends one body until it is accepted, refused for good, or the retry budget is
// spent (which also counts as refused).
func (w *Webhook) post(ctx context.Context, body []byte) error {
	var sig string
	if w.cfg.Secret != nil {
		mac := hmac.New(sha256.New, w.cfg.Secret)
		mac.Write(body)
		sig = "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	for attempt := 0; ; attempt++ {
		if err := w.limiter.Wait(ctx); err != nil {
			return err
		}
		retryAfter, err := w.send(ctx, body, sig)
		if err == nil {
			return nil
		}
		var rej *RejectedError
		if errors.As(err, &rej) || ctx.Err() != nil {
			return err
		}
		if w.cfg.Retries >= 0 && attempt >= w.cfg.Retries {
			return Reject(fmt.Errorf("webhook %s: gave up after %d attempts: %w", w.cfg.Name, attempt+1, err))
		}
		wait := backoff(w.cfg.Backoff, w.cfg.MaxBackoff, attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, maxRetryAfter)
		}
		if w.m != nil {
			w.m.retried.Inc()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is "full jitter": uniform in [0, min(max, base·2^attempt)].
func backoff(base, maxWait time.Duration, attempt int) time.Duration {
	d := base
	for i := 0; i < attempt && d < maxWait; i++ {
		d *= 2 // base ≤ 24 h, so this stops long before overflowing
	}
	return rand.N(min(d, maxWait) + 1)
}

// send makes one attempt. A transient failure is a plain error (with the Retry-After
// the server asked for); a permanent one is a RejectedError.
func (w *Webhook) send(ctx context.Context, body []byte, sig string) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, Reject(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gonomaly-sink")
	if sig != "" {
		req.Header.Set(SignatureHeader, sig)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// The URL may hold a token; say which endpoint without it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, fmt.Errorf("webhook %s: %w", w.cfg.Name, err)
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusTooManyRequests || code >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("webhook %s: HTTP %d", w.cfg.Name, code)
	default:
		return 0, Reject(fmt.Errorf("webhook %s: HTTP %d: %s", w.cfg.Name, code, bytes.TrimSpace(snippet)))
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if s < 0 {
			return 0
		}
		return min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

// templateEvent is what the Slack and PagerDuty templates read from an event.
type templateEvent struct {
	EventID   string          `json:"event_id"`
	Series    string          `json:"series"`
	TS        json.RawMessage `json:"ts"`
	Score     float64         `json:"score"`
	Threshold float64         `json:"threshold"`
	Severity  string          `json:"severity"`
	Pipeline  string          `json:"pipeline"`
	raw       json.RawMessage
}

func parseTemplateEvent(line []byte) (templateEvent, error) {
	var ev templateEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return ev, fmt.Errorf("webhook template: not an event: %w", err)
	}
	if ev.EventID == "" || ev.Series == "" {
		return ev, fmt.Errorf("webhook template: event without event_id or series")
	}
	ev.raw = line
	return ev, nil
}

func (ev templateEvent) slackLine() string {
	icon := map[string]string{"critical": ":rotating_light: ", "warning": ":warning: "}[ev.Severity]
	return fmt.Sprintf("%sanomaly in *%s*: score %.3f (threshold %.3f), severity %s, at %s (pipeline %s, event %s)",
		icon, ev.Series, ev.Score, ev.Threshold,
		orDefault(ev.Severity, "unknown"), rawScalar(ev.TS), orDefault(ev.Pipeline, "default"), ev.EventID)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// pagerDutyBody is an Events API v2 trigger; dedup_key is the event id, so PagerDuty
// folds a replayed event into the incident it already opened.
func pagerDutyBody(line []byte, routingKey string) ([]byte, error) {
	ev, err := parseTemplateEvent(line)
	if err != nil {
		return nil, err
	}
	severity := "info"
	switch ev.Severity {
	case "critical":
		severity = "critical"
	case "warning":
		severity = "warning"
	}
	type payload struct {
		Summary       string          `json:"summary"`
		Severity      string          `json:"severity"`
		Source        string          `json:"source"`
		Timestamp     string          `json:"timestamp,omitempty"`
		Component     string          `json:"component,omitempty"`
		CustomDetails json.RawMessage `json:"custom_details"`
	}
	return json.Marshal(struct {
		RoutingKey  string  `json:"routing_key"`
		EventAction string  `json:"event_action"`
		DedupKey    string  `json:"dedup_key"`
		Payload     payload `json:"payload"`
	}{routingKey, "trigger", ev.EventID, payload{
		Summary:  fmt.Sprintf("gonomaly: anomaly in %s (score %.3f, threshold %.3f)", ev.Series, ev.Score, ev.Threshold),
		Severity: severity, Source: ev.Series, Timestamp: rawScalar(ev.TS), Component: ev.Pipeline, CustomDetails: ev.raw,
	}})
}
