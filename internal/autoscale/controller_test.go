package autoscale

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLoopScalesUpAtOnceAndDownAfterCooldown drives one group's loop poll by poll on a
// fake clock: up on the first reading that asks for it, down only after the lag has
// asked for fewer members for a whole cooldown, the partition count capping Max, and a
// failed reading changing nothing.
func TestLoopScalesUpAtOnceAndDownAfterCooldown(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var (
		lag    int64
		lagErr error
		scaled []int
	)
	reg := prometheus.NewRegistry()
	cfg := Config{
		Interval: time.Second, Cooldown: 10 * time.Second, Registerer: reg,
		Lag: func(_ context.Context, group string, topics []string) (int64, int, error) {
			if group != "g" || !slices.Equal(topics, []string{"in"}) {
				t.Errorf("lag of %s %v", group, topics)
			}
			return lag, 4, lagErr
		},
		now: func() time.Time { return now },
	}.withDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	l := newLoop(cfg, m, Group{Stage: "detect", Group: "g", Topics: []string{"in"},
		Policy: Policy{LagThreshold: 100, Min: 1, Tolerance: DefaultTolerance}, // Max 0: partitions
		Scale:  func(_ context.Context, n int) error { scaled = append(scaled, n); return nil }})
	ctx := context.Background()
	if err := l.scale(ctx, 1); err != nil {
		t.Fatal(err)
	}
	step := func(at time.Duration, newLag int64, want int) {
		t.Helper()
		now, lag = time.Unix(1_700_000_000, 0).Add(at), newLag
		if err := l.poll(ctx); err != nil {
			t.Fatal(err)
		}
		if l.current != want {
			t.Fatalf("t+%s lag %d: %d members, want %d", at, newLag, l.current, want)
		}
		if got := testutil.ToFloat64(m.replicas.WithLabelValues("detect")); got != float64(want) {
			t.Fatalf("t+%s: gonomaly_autoscale_replicas %v, want %d", at, got, want)
		}
	}
	step(0, 250, 3)
	if got := testutil.ToFloat64(m.desired.WithLabelValues("detect")); got != 3 {
		t.Errorf("desired gauge %v, want 3", got)
	}
	step(1*time.Second, 10_000, 4) // capped at 4 partitions
	step(2*time.Second, 0, 4)      // lag gone: held by the cooldown
	if got := testutil.ToFloat64(m.desired.WithLabelValues("detect")); got != 1 {
		t.Errorf("desired gauge %v during the cooldown, want 1", got)
	}
	step(5*time.Second, 0, 4)
	lagErr = errors.New("broker down")
	step(11*time.Second, 0, 4) // no reading: no change, though the window has passed
	lagErr = nil
	step(12*time.Second, 0, 1) // 10 s after the last reading that asked for 4
	step(13*time.Second, 50, 1)
	if want := []int{1, 3, 4, 1}; !slices.Equal(scaled, want) {
		t.Errorf("Scale calls %v, want %v", scaled, want)
	}
}

// TestRunStartsAtMinimumAndReportsEveryPoll runs the controller for two groups with
// real tickers and checks the hook, the gauges and that a failing Scale stops it.
func TestRunStartsAtMinimumAndReportsEveryPoll(t *testing.T) {
	reg := prometheus.NewRegistry()
	var (
		mu      sync.Mutex
		members = map[string]int{}
		events  = map[string][]Event{}
	)
	lags := map[string]int64{"pre": 350, "det": 0}
	scale := func(stage string) func(context.Context, int) error {
		return func(_ context.Context, n int) error {
			mu.Lock()
			defer mu.Unlock()
			members[stage] = n
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Interval: 5 * time.Millisecond, Cooldown: time.Hour, Registerer: reg,
			Lag: func(_ context.Context, group string, _ []string) (int64, int, error) {
				return lags[group], 8, nil
			},
			OnPoll: func(e Event) {
				mu.Lock()
				defer mu.Unlock()
				events[e.Stage] = append(events[e.Stage], e)
			},
		},
			Group{Stage: "preprocess", Group: "pre", Policy: Policy{LagThreshold: 100, Min: 1, Max: 3, Tolerance: 0.1}, Scale: scale("preprocess")},
			Group{Stage: "detect", Group: "det", Policy: Policy{LagThreshold: 100, Min: 2, Tolerance: 0.1}, Scale: scale("detect")},
		)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := min(len(events["preprocess"]), len(events["detect"]))
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 polls per group in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if members["preprocess"] != 3 || members["detect"] != 2 {
		t.Errorf("members %v, want preprocess 3 (ceil 3.5 capped at max 3), detect 2 (its minimum)", members)
	}
	first := events["preprocess"][0]
	if first.From != 1 || first.To != 3 || first.Lag != 350 || first.Partitions != 8 || first.Decision.Desired != 3 {
		t.Errorf("first preprocess poll %+v, want from 1 to 3 at lag 350", first)
	}
	out, err := testutil.GatherAndCount(reg, "gonomaly_autoscale_replicas", "gonomaly_autoscale_desired_replicas")
	if err != nil || out != 4 {
		t.Errorf("gathered %d autoscale series (err %v), want 4", out, err)
	}
	expected := `
# HELP gonomaly_autoscale_replicas Members of the stage's consumer group this process runs (gonomaly run --autoscale).
# TYPE gonomaly_autoscale_replicas gauge
gonomaly_autoscale_replicas{stage="detect"} 2
gonomaly_autoscale_replicas{stage="preprocess"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "gonomaly_autoscale_replicas"); err != nil {
		t.Error(err)
	}

	// A Scale that fails stops the controller with its error.
	err = Run(context.Background(), Config{Interval: time.Millisecond, Lag: func(context.Context, string, []string) (int64, int, error) { return 1000, 4, nil }},
		Group{Stage: "x", Policy: Policy{LagThreshold: 1, Min: 1, Tolerance: 0.1}, Scale: func(_ context.Context, n int) error {
			if n > 1 {
				return errors.New("no room")
			}
			return nil
		}})
	if err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("Run with a failing Scale: %v, want its error", err)
	}
	// And a bad policy is refused before anything starts.
	if err := Run(context.Background(), Config{Lag: func(context.Context, string, []string) (int64, int, error) { return 0, 1, nil }},
		Group{Stage: "y", Policy: Policy{LagThreshold: 0, Min: 1}, Scale: func(context.Context, int) error { t.Error("scaled"); return nil }}); err == nil {
		t.Error("Run with a zero lag threshold: no error")
	}
}
