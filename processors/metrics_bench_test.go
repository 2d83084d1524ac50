package processors

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/schemas"
)

// benchScores are rows of scores of the default spec's three detectors (ewma, rrcf,
// seasonal) as the detect stage sees them: z-scores, displacements, a NaN now and then
// while warming up. Varied, so that the bucket search is not perfectly predicted.
func benchScores() [][]float64 {
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([][]float64, 1024)
	for i := range rows {
		rrcf := 1 + 20*rng.ExpFloat64()
		if i%97 == 0 {
			rrcf = math.NaN()
		}
		rows[i] = []float64{math.Abs(rng.NormFloat64()), rrcf, math.Abs(rng.NormFloat64()) * 1.5}
	}
	return rows
}

// BenchmarkDetectScoreMetrics is the per-record cost of gonomaly_detector_score for
// the default spec's three detectors. Issue 6 allows 50 ns a record for metrics.
func BenchmarkDetectScoreMetrics(b *testing.B) {
	s := spec.Default()
	m := newScoreMetrics(prometheus.NewRegistry(), s.Name, detectorNames(s))
	rows := benchScores()
	b.Run("serial", func(b *testing.B) {
		sh := m.shard(detectorNames(s))
		for i := 0; b.Loop(); i++ {
			sh.observe(rows[i&1023])
		}
	})
	// One shard per partition goroutine, as the runner has them.
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			sh := m.shard(detectorNames(s))
			for i := 0; pb.Next(); i++ {
				sh.observe(rows[i&1023])
			}
		})
	})
}

// BenchmarkRecordMetrics is the cost of every per-record metric on a record's path
// through the pipeline: the detect stage's score histograms (three detectors) and the
// ensemble's latency histogram and anomaly counter. The stage counters are per batch.
func BenchmarkRecordMetrics(b *testing.B) {
	s := spec.Default()
	reg := prometheus.NewRegistry()
	scores := newScoreMetrics(reg, s.Name, detectorNames(s))
	outcomes := newEnsembleMetrics(reg, s.Name)
	rows := benchScores()
	now := time.Now()
	ts := now.Add(-30 * time.Millisecond)
	severities := [4]string{"none", "none", "none", "warning"}
	b.Run("serial", func(b *testing.B) {
		sh := scores.shard(detectorNames(s))
		for i := 0; b.Loop(); i++ {
			sh.observe(rows[i&1023])
			outcomes.observe(now, ts, severities[i&3])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			sh := scores.shard(detectorNames(s))
			for i := 0; pb.Next(); i++ {
				sh.observe(rows[i&1023])
				outcomes.observe(now, ts, severities[i&3])
			}
		})
	})
}

// TestDetectScoreMetrics checks gonomaly_detector_score end to end through the detect
// stage's processors: every finite score counted once per detector, in the right
// bucket, with the right sum, visible at once and kept when the partitions close; NaN
// left out; a second stage of the same pipeline sharing the series.
func TestDetectScoreMetrics(t *testing.T) {
	s, err := spec.Parse([]byte("name: scoretest\ndetectors:\n  - algorithm: zscore\n  - name: slow\n    algorithm: ewma\n"), "scoretest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topics := PipelineTopics("p.", s)
	reg := prometheus.NewRegistry()
	stage, err := NewDetect(s, topics, DetectRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]float64{}
	feed := func(p Processor, n int) {
		t.Helper()
		for i := range n {
			v := []float64{math.Sin(float64(i)), float64(i % 7)}
			if i == n-1 {
				v[0] = 40 // an outlier, for the high buckets
			}
			value := schemas.AppendFeatures(nil, &schemas.Features{Series: "s", TS: int64(i) * 60_000, Names: []string{"a", "b"}, Scaled: v, Raw: v})
			err := p.Process(&kgo.Record{Topic: topics.Features, Value: value}, func(out *kgo.Record) {
				var sc schemas.Scores
				if err := schemas.DecodeScores(out.Value, &sc); err != nil {
					t.Fatal(err)
				}
				for d, score := range sc.Detectors {
					if !math.IsNaN(score) { // warming up: no verdict, not observed
						want[d] = append(want[d], score)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	p0, err := stage.NewProcessor(topics.Features, 0)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := stage.NewProcessor(topics.Features, 1)
	if err != nil {
		t.Fatal(err)
	}
	feed(p0, 40)
	feed(p1, 7)
	// Every record is visible at once, the partitions' processors still open.
	if got := scoreHistogram(t, reg, "zscore"); got.GetSampleCount() != uint64(len(want["zscore"])) {
		t.Errorf("before the partitions close: %d zscore observations, want %d", got.GetSampleCount(), len(want["zscore"]))
	}
	p0.(interface{ Close() }).Close()
	p1.(interface{ Close() }).Close()
	p1.(interface{ Close() }).Close() // twice: a replaced processor may be
	for _, d := range []string{"zscore", "slow"} {
		h := scoreHistogram(t, reg, d)
		scores := want[d]
		if h.GetSampleCount() != uint64(len(scores)) || len(scores) < 30 {
			t.Fatalf("%s: %d observations, want %d (the finite scores of 47 records)", d, h.GetSampleCount(), len(scores))
		}
		var sum float64
		for _, v := range scores {
			sum += v
		}
		if math.Abs(h.GetSampleSum()-sum) > 1e-9*max(1, math.Abs(sum)) {
			t.Errorf("%s: sum %v, want %v", d, h.GetSampleSum(), sum)
		}
		for _, b := range h.GetBucket() {
			var n uint64
			for _, v := range scores {
				if v <= b.GetUpperBound() {
					n++
				}
			}
			if b.GetCumulativeCount() != n {
				t.Errorf("%s: bucket le=%v has %d, want %d", d, b.GetUpperBound(), b.GetCumulativeCount(), n)
			}
		}
	}
	if h := scoreHistogram(t, reg, "zscore"); h.GetBucket()[len(scoreBuckets)-3].GetCumulativeCount() >= h.GetSampleCount() {
		t.Errorf("zscore: no score above %v; the outlier should be", scoreBuckets[len(scoreBuckets)-3])
	}

	// Another detect stage of the pipeline in the same registry (a rebuilt stage)
	// shares the series; NaN is not observed.
	again, err := NewDetect(s, topics, DetectRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := again.NewProcessor(topics.Features, 2)
	sh := p2.(*detector).shard
	sh.observe([]float64{math.NaN(), 0.5})
	sh.close()
	z, slow := scoreHistogram(t, reg, "zscore"), scoreHistogram(t, reg, "slow")
	if z.GetSampleCount() != uint64(len(want["zscore"])) || slow.GetSampleCount() != uint64(len(want["slow"])+1) || math.IsNaN(z.GetSampleSum()) {
		t.Errorf("after a NaN and 0.5: zscore %d observations (sum %v), slow %d; want %d and %d",
			z.GetSampleCount(), z.GetSampleSum(), slow.GetSampleCount(), len(want["zscore"]), len(want["slow"])+1)
	}
}

func scoreHistogram(t *testing.T, reg *prometheus.Registry, detector string) *dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "gonomaly_detector_score" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["detector"] == detector && labels["pipeline"] == "scoretest" {
				return m.GetHistogram()
			}
		}
	}
	t.Fatalf("no gonomaly_detector_score{detector=%q}", detector)
	return nil
}
