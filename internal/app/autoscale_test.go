package app_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/autoscale"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/producers"
	"github.com/gonomaly/gonomaly/schemas"
)

// TestRunAutoscaleScalesUpOnBacklogAndDownWhenDrained publishes a backlog of 6,000
// records before the pipeline starts, with a preprocess lag threshold of 2,500: the
// first poll must take preprocess to ceil(6000 / 2500) = 3 members of its 4 partitions,
// and once everything is consumed every stage must come back to its minimum of 1 after
// the cooldown. The members join and leave while records flow, and the results must
// still hold every record exactly once: members leave cleanly (in-flight records
// finished and committed, or their transaction ended) and, in exactly-once mode, the
// members of one group in one process have transactional ids of their own.
func TestRunAutoscaleScalesUpOnBacklogAndDownWhenDrained(t *testing.T) {
	t.Run("at-least-once", func(t *testing.T) { testAutoscale(t, false) })
	t.Run("exactly-once", func(t *testing.T) { testAutoscale(t, true) })
}

func testAutoscale(t *testing.T, exactlyOnce bool) {
	brokers := testkit.Brokers(t)
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 4}.WithDefaults()
	ctx := context.Background()
	adm, err := cluster.Connect(ctx, c, app.ConnectTimeout)
	if err != nil {
		t.Fatal(err)
	}
	err = c.EnsureLayout(ctx, adm)
	adm.Close()
	if err != nil {
		t.Fatal(err)
	}
	const n = 6000
	publish(t, brokers, c.Topic("records"), producers.NewSynthetic(producers.SyntheticConfig{Series: 16, Count: n, Seed: 11}))

	s := spec.Default()
	s.Detectors = []spec.Detector{{Name: "zscore", Algorithm: "zscore", Weight: 1}} // cheap under -race
	reg := prometheus.NewRegistry()
	logs := &testkit.SyncBuffer{}
	var (
		mu      sync.Mutex
		peak    = map[string]int{}
		members = map[string]int{}
		first   = map[string]autoscale.Event{}
	)
	startPipeline(t, brokers, s, func(cfg *app.RunConfig) {
		cfg.Cluster, cfg.Registry, cfg.ExactlyOnce = c, reg, exactlyOnce
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		cfg.Autoscale = &app.AutoscaleConfig{
			Interval: 100 * time.Millisecond, Cooldown: time.Second, Min: 1,
			LagThresholds: map[string]int64{"preprocess": 2500, "detect": 1500, "ensemble": 1500},
			OnPoll: func(e autoscale.Event) {
				mu.Lock()
				defer mu.Unlock()
				if _, ok := first[e.Stage]; !ok {
					first[e.Stage] = e
				}
				peak[e.Stage] = max(peak[e.Stage], e.To)
				members[e.Stage] = e.To
			},
		}
	})

	results := testkit.ReadN(t, brokers, c.Topic("results"), n, 60*time.Second, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	type pos struct {
		p int32
		o int64
	}
	seen := map[pos]bool{}
	for _, r := range results {
		var res schemas.Result
		if err := schemas.DecodeResult(r.Value, &res); err != nil {
			t.Fatalf("decode result at offset %d: %v", r.Offset, err)
		}
		seen[pos{res.Source.Partition, res.Source.Offset}] = true
	}
	if len(results) != n || len(seen) != n {
		t.Fatalf("results: %d records, %d distinct source offsets, want %d of each (a record was lost or doubled)", len(results), len(seen), n)
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		back := members["preprocess"] == 1 && members["detect"] == 1 && members["ensemble"] == 1
		mu.Unlock()
		if back {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("members %v 20s after the backlog was consumed, want 1 per stage", members)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	if e := first["preprocess"]; e.Lag != n || e.Partitions != 4 || e.From != 1 || e.To != 3 {
		t.Errorf("first preprocess poll: %+v, want lag %d on 4 partitions taking it from 1 to 3 members", e, n)
	}
	if peak["preprocess"] != 3 {
		t.Errorf("preprocess peaked at %d members, want 3", peak["preprocess"])
	}
	for stage, p := range peak {
		if p > 4 {
			t.Errorf("%s peaked at %d members, more than its 4 partitions", stage, p)
		}
	}
	t.Logf("peak members %v", peak)
	mu.Unlock()
	if !strings.Contains(logs.String(), "autoscale: scaling") {
		t.Error("no scaling decision logged")
	}
	// Members that shared a transactional id would fence each other: the session
	// survives that by rebuilding itself, so the result above would still be exact.
	if strings.Contains(logs.String(), "rebuilding the session") {
		t.Error("a member's transactional producer was fenced")
	}

	for _, stage := range app.StageNames {
		if got := gaugeValue(t, reg, "gonomaly_autoscale_replicas", stage); got != 1 {
			t.Errorf("gonomaly_autoscale_replicas{stage=%q} = %v, want 1", stage, got)
		}
	}
	// The one member left owns every partition, and the stage's gauge is the sum over
	// its members: stopped members took their share with them.
	waitGauge(t, reg, "gonomaly_stage_assigned_partitions", "preprocess", 4)
}

// gaugeValue is the value of the gauge name{stage} in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name, stage string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" && l.GetValue() == stage {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{stage=%q}", name, stage)
	return 0
}

func waitGauge(t *testing.T, reg *prometheus.Registry, name, stage string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := gaugeValue(t, reg, name, stage)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{stage=%q} = %v, want %v", name, stage, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
