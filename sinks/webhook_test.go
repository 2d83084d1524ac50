package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const testEvent = `{"event_id":"e1","series":"host-17","ts":"2026-11-27T07:00:00Z","score":0.97,"threshold":0.9,"severity":"critical","values":{"cpu":0.93},"pipeline":"default"}`

func openTestWebhook(t *testing.T, url string) *Webhook {
	t.Helper()
	cfg, err := ParseWebhookURI(url)
	if err != nil {
		t.Fatal(err)
	}
	w, err := OpenWebhook(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestWebhookRetriesTransientFailuresHonouringRetryAfter(t *testing.T) {
	var calls atomic.Int32
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		times = append(times, time.Now())
		switch calls.Add(1) {
		case 1:
			w.WriteHeader(http.StatusBadGateway)
		case 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	w := openTestWebhook(t, srv.URL+"?backoff=1ms&retries=3")
	m := newMetrics(prometheus.NewRegistry(), "t", "webhook")
	w.instrument(m)
	w.Write([]byte(testEvent))
	rej, err := w.Deliver(context.Background())
	if err != nil || len(rej) != 0 {
		t.Fatalf("Deliver: %v %v", rej, err)
	}
	if calls.Load() != 3 || testutil.ToFloat64(m.retried) != 2 {
		t.Fatalf("%d calls, %v retries; want 3 and 2", calls.Load(), testutil.ToFloat64(m.retried))
	}
	if gap := times[2].Sub(times[1]); gap < 900*time.Millisecond {
		t.Fatalf("retried %s after Retry-After: 1", gap)
	}
}

func TestWebhookRejectsOn4xxAndWhenTheBudgetIsSpent(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), "bad") {
			http.Error(w, "invalid payload", http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	w := openTestWebhook(t, srv.URL+"/secret-token?backoff=1ms&retries=2")
	w.Write([]byte(`{"event_id":"bad"}`))
	w.Write([]byte(`{"event_id":"down"}`))
	rej, err := w.Deliver(context.Background())
	if err != nil || len(rej) != 2 {
		t.Fatalf("Deliver: %v %v", rej, err)
	}
	if rej[0].Index != 0 || !strings.Contains(rej[0].Err.Error(), "HTTP 422: invalid payload") {
		t.Errorf("4xx rejection: %v", rej[0])
	}
	if rej[1].Index != 1 || !strings.Contains(rej[1].Err.Error(), "gave up after 3 attempts") {
		t.Errorf("budget rejection: %v", rej[1])
	}
	if calls.Load() != 4 {
		t.Errorf("%d requests; want 1 + 3", calls.Load())
	}
	for _, r := range rej {
		if strings.Contains(r.Err.Error(), "secret-token") {
			t.Errorf("error leaks the URL path: %v", r.Err)
		}
	}
}

func TestWebhookWaitsForADownTargetUntilCancelled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	w := openTestWebhook(t, srv.URL+"?backoff=5ms&max_backoff=20ms&retries=-1")
	w.Write([]byte(testEvent))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := w.Deliver(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Deliver to a down target: %v; want it to keep waiting until ctx ends", err)
	}
}

func TestWebhookTemplates(t *testing.T) {
	t.Setenv("PD_KEY", "rk")
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			t.Error(err)
		}
		bodies = append(bodies, v)
	}))
	defer srv.Close()
	for _, q := range []string{"?template=slack&batch=5", "?template=pagerduty&routing_key_env=PD_KEY"} {
		w := openTestWebhook(t, srv.URL+q)
		w.Write([]byte(testEvent))
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	text, _ := bodies[0]["text"].(string)
	if !strings.Contains(text, "host-17") || !strings.Contains(text, "0.970") || !strings.Contains(text, "critical") {
		t.Errorf("slack text %q", text)
	}
	pd := bodies[1]
	payload, _ := pd["payload"].(map[string]any)
	details, _ := payload["custom_details"].(map[string]any)
	if pd["routing_key"] != "rk" || pd["event_action"] != "trigger" || pd["dedup_key"] != "e1" ||
		payload["severity"] != "critical" || payload["source"] != "host-17" || details["event_id"] != "e1" ||
		!strings.Contains(payload["summary"].(string), "host-17") {
		t.Errorf("pagerduty body %v", pd)
	}
}

func TestParseWebhookURIErrors(t *testing.T) {
	t.Setenv("EMPTY_SECRET", "")
	for uri, want := range map[string]string{
		"http://h/x?batch=0":                      "option batch",
		"http://h/x?template=teams":               "option template",
		"http://h/x?secret_env=EMPTY_SECRET":      "EMPTY_SECRET",
		"http://h/x?template=pagerduty":           "routing_key_env",
		"http://h/x?retries=2&retires=3":          `unknown option "retires"`,
		"http://user:pw@h/x":                      "credentials",
		"http://h/x?timeout=forever":              "option timeout",
		"http:///nohost":                          "host",
		"http://h/x?template=pagerduty&batch=2":   "one event per request",
		"https://hooks.example/T0/B0/tok?rate=-1": "option rate",
	} {
		_, err := ParseWebhookURI(uri)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseWebhookURI(%q): %v; want an error with %q", uri, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "tok") {
			t.Errorf("error leaks the path: %v", err)
		}
	}
	cfg, err := ParseWebhookURI("https://h:8443/p?batch=100&rate=50&timeout=2s&retries=3")
	if err != nil || cfg.URL != "https://h:8443/p" || cfg.Batch != 100 || cfg.Rate != 50 || cfg.Timeout != 2*time.Second || cfg.Retries != 3 {
		t.Fatalf("%+v %v", cfg, err)
	}
}

func TestOpenUnreachableWebhookNamesIt(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := Open(url + "/tok")
	if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Open(dead target): %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "-1": 0, "junk": 0, "100000": maxRetryAfter,
		now.Add(10 * time.Second).Format(http.TimeFormat): 10 * time.Second,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestBackoffIsFullJitterUnderTheCap(t *testing.T) {
	for attempt := range 70 {
		capped := min(time.Second, 10*time.Millisecond<<min(attempt, 20))
		if d := backoff(10*time.Millisecond, time.Second, attempt); d < 0 || d > capped {
			t.Fatalf("attempt %d: %s outside [0, %s]", attempt, d, capped)
		}
	}
}

func FuzzParseWebhookURI(f *testing.F) {
	for _, s := range []string{"https://hooks.slack.com/services/T/B/X?template=slack", "http://h?batch=100&rate=50&timeout=5s&retries=8",
		"http://h?template=pagerduty&routing_key_env=HOME", "http://[::1]:80/?%", "https://h?secret_env=PATH&backoff=1ms&max_backoff=1h", "http://h?retries=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		cfg, err := ParseWebhookURI(uri)
		if err != nil {
			return
		}
		if cfg.Batch < 1 || cfg.Timeout <= 0 || cfg.Retries < -1 || strings.Contains(cfg.URL, "?") && strings.Contains(cfg.URL, "secret_env") {
			t.Fatalf("%q parsed to %+v", uri, cfg)
		}
	})
}

func FuzzTemplates(f *testing.F) {
	for _, s := range []string{testEvent, `{}`, `{"event_id":"x","series":"y","ts":1795000000000,"score":"NaN"}`, `[1]`, `{"event_id":"\u2028","series":"<b>"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		body, err := pagerDutyBody(line, "rk")
		if err == nil && !json.Valid(body) {
			t.Fatalf("pagerduty body not JSON: %s", body)
		}
		ev, err := parseTemplateEvent(line)
		if err != nil {
			return
		}
		var v map[string]string
		b, _ := json.Marshal(map[string]string{"text": ev.slackLine()})
		if json.Unmarshal(b, &v) != nil || v["text"] == "" {
			t.Fatalf("slack body %s", b)
		}
	})
}
