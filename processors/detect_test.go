package processors_test

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/schemas"
)

// modelSpec is a pipeline whose detect stage scores with the trained model "cpu" beside
// a streaming zscore.
const modelSpec = `
name: hotswap
detectors:
  - name: trained
    model: cpu
  - algorithm: zscore
`

// detectStageEnv runs the detect stage of modelSpec on a broker, as `gonomaly process
// --stage detect` would, with its own view of the models topic.
type detectStageEnv struct {
	*jobEnv
	topics  processors.Topics
	view    *jobs.ModelView // the stage's
	reg     *prometheus.Registry
	prod    *kgo.Client
	scores  *kgo.Client
	version string // the spec's version
	sent    int64
}

func newDetectStageEnv(t *testing.T) *detectStageEnv {
	t.Helper()
	env := newJobEnv(t)
	s, err := spec.Parse([]byte(modelSpec), "hotswap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topics := processors.PipelineTopics(env.cfg.Prefix, s)
	ctx := context.Background()
	view, err := jobs.OpenModelView(ctx, func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(env.brokers...)}, opts...)...)
	}, jobs.TopicsFor(env.cfg).Models)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(view.Close)
	reg := prometheus.NewRegistry()
	stage, err := processors.NewDetect(s, topics, processors.DetectModels(view), processors.DetectRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	runner := processors.NewRunner(stage, processors.RunnerConfig{
		Group: env.cfg.Prefix + "detect", DLQTopic: topics.DLQ, ClientOpts: []kgo.Opt{kgo.SeedBrokers(env.brokers...)},
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("detect stage: %v", err)
		}
	})
	return &detectStageEnv{
		jobEnv: env, topics: topics, view: view, reg: reg, version: processors.SpecVersion(s),
		prod:   testkit.Client(t, env.brokers),
		scores: testkit.Client(t, env.brokers, kgo.ConsumeTopics(topics.Scores), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())),
	}
}

// send publishes features records of one series and returns them with the scores the
// stage wrote for them, matched by source offset.
func (e *detectStageEnv) send(t *testing.T, names []string, rows [][]float64) []schemas.Scores {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := e.sent
	for _, row := range rows {
		f := schemas.Features{Series: "host-1", TS: 1_795_000_000_000 + e.sent*1000, Names: names, Scaled: row, Raw: row,
			Source: schemas.Source{Topic: e.topics.Records, Offset: e.sent}, Pipeline: "hotswap"}
		rec := &kgo.Record{Topic: e.topics.Features, Key: []byte(f.Series), Value: schemas.AppendFeatures(nil, &f)}
		if err := e.prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		e.sent++
	}
	out := make([]schemas.Scores, len(rows))
	got := 0
	for got < len(rows) {
		fetches := e.scores.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d scores arrived", got, len(rows))
		}
		for _, r := range fetches.Records() {
			var s schemas.Scores
			if err := schemas.DecodeScores(r.Value, &s); err != nil {
				t.Fatal(err)
			}
			if i := s.Source.Offset - first; i >= 0 && i < int64(len(rows)) {
				out[i] = s
				got++
			}
		}
	}
	return out
}

// train runs a train job publishing the next version of model cpu, and returns the
// version's detector restored from the models topic as a reader elsewhere would.
func (e *detectStageEnv) train(t *testing.T, rows [][]float64, params detectors.Params, seed uint64) (jobs.Model, detectors.Batch) {
	t.Helper()
	sum, err := e.run(t, context.Background(), jobs.Job{Type: jobs.Train, Model: "cpu", Algorithm: "iforest", Params: params, Seed: seed,
		Input: jobs.Input{Rows: rows, Columns: []string{"cpu", "mem"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := e.store.Models.Version("cpu", sum.Model.Version)
	if !ok {
		t.Fatalf("model %v not in the view", sum.Model)
	}
	info, _ := detectors.Lookup(m.Algorithm)
	det, err := info.NewBatch(m.Params, m.Seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := det.(detectors.Persistent).UnmarshalBinary(m.Snapshot); err != nil {
		t.Fatal(err)
	}
	return m, det
}

// syncView waits until the stage's view of the models topic holds every version
// published so far: the records sent afterwards find it.
func (e *detectStageEnv) syncView(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func gaussianRows(rng *rand.Rand, n int, mean float64) [][]float64 {
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = []float64{mean + rng.NormFloat64(), 2*mean + rng.NormFloat64()}
	}
	return rows
}

func scoreOne(t *testing.T, det detectors.Batch, x ...float64) float64 {
	t.Helper()
	out := []float64{0}
	if err := det.Score(detectors.Matrix{Rows: 1, Cols: len(x), Data: x}, out); err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func TestDetectStageHotSwapsTrainedModels(t *testing.T) {
	env := newDetectStageEnv(t)
	rng := rand.New(rand.NewPCG(11, 12))
	names := []string{"cpu", "mem"}

	// No version yet: the entry scores NaN (no verdict) and says so in a metric; the
	// streaming detector beside it works as usual.
	before := env.send(t, names, gaussianRows(rng, 20, 0))
	for i, s := range before {
		if !math.IsNaN(s.Detectors["trained"]) || s.ModelVersion != env.version {
			t.Fatalf("record %d before any version: trained = %v, model_version %q", i, s.Detectors["trained"], s.ModelVersion)
		}
		if _, ok := s.Detectors["zscore"]; !ok {
			t.Fatalf("record %d has no zscore score", i)
		}
	}
	unscored := func(reason string) float64 {
		return modelMetric(t, env.reg, "gonomaly_detect_model_unscored_total", "trained", reason)
	}
	if got := unscored("no_version"); got != 20 {
		t.Fatalf("no_version counter %v, want 20", got)
	}

	// Version 1 published while the stage runs: later records are scored by it.
	m1, det1 := env.train(t, gaussianRows(rng, 500, 0), detectors.Params{"trees": 40}, 1)
	env.syncView(t)
	rows := append(gaussianRows(rng, 30, 0), []float64{9, -9})
	v1 := env.send(t, names, rows)
	for i, s := range v1 {
		if want := scoreOne(t, det1, rows[i]...); s.Detectors["trained"] != want {
			t.Fatalf("record %d after version 1: trained = %v, version 1 scores %v", i, s.Detectors["trained"], want)
		}
		if s.ModelVersion != env.version+"+cpu@1" {
			t.Fatalf("model_version %q, want %s+cpu@1", s.ModelVersion, env.version)
		}
	}
	if last := v1[len(v1)-1].Detectors["trained"]; last < m1.Threshold {
		t.Fatalf("the outlier scored %v, under version 1's threshold %v", last, m1.Threshold)
	}

	// Version 2, fitted on other data, replaces it without a restart.
	_, det2 := env.train(t, gaussianRows(rng, 500, 5), detectors.Params{"trees": 60}, 2)
	env.syncView(t)
	rows = gaussianRows(rng, 30, 5)
	v2 := env.send(t, names, rows)
	for i, s := range v2 {
		want := scoreOne(t, det2, rows[i]...)
		if s.Detectors["trained"] != want || s.ModelVersion != env.version+"+cpu@2" {
			t.Fatalf("record %d after version 2: trained = %v (%s), version 2 scores %v", i, s.Detectors["trained"], s.ModelVersion, want)
		}
		if want == scoreOne(t, det1, rows[i]...) {
			t.Fatalf("record %d: versions 1 and 2 agree, so the test proves nothing", i)
		}
	}
	if got := modelMetric(t, env.reg, "gonomaly_detect_model_switches_total", "trained"); got < 1 {
		t.Fatalf("switches counter %v", got)
	}
	if got := modelMetric(t, env.reg, "gonomaly_detect_model_version", "trained"); got != 2 {
		t.Fatalf("version gauge %v", got)
	}

	// Columns are taken by name: extra features are ignored, and a record without one of
	// the model's columns gets no verdict from it (and is counted).
	wide := env.send(t, []string{"cpu", "disk", "mem"}, [][]float64{{5, 100, 10}})
	if want := scoreOne(t, det2, 5, 10); wide[0].Detectors["trained"] != want {
		t.Fatalf("record with an extra feature: %v, want %v", wide[0].Detectors["trained"], want)
	}
	narrow := env.send(t, []string{"cpu"}, [][]float64{{5}})
	if !math.IsNaN(narrow[0].Detectors["trained"]) || unscored("missing_feature") != 1 {
		t.Fatalf("record without mem: trained = %v, missing_feature counter %v", narrow[0].Detectors["trained"], unscored("missing_feature"))
	}

	// A version that cannot be restored is skipped: the stage keeps scoring with version 2.
	broken := m1
	broken.Snapshot = []byte("not a forest")
	broken.JobID = "job_broken" // another job: a job publishes its model once
	if _, err := env.store.PublishModel(context.Background(), broken); err != nil {
		t.Fatal(err)
	}
	env.syncView(t)
	kept := env.send(t, names, [][]float64{{5, 10}})
	if want := scoreOne(t, det2, 5, 10); kept[0].Detectors["trained"] != want || kept[0].ModelVersion != env.version+"+cpu@2" {
		t.Fatalf("after a broken version 3: trained = %v (%s), want version 2's %v", kept[0].Detectors["trained"], kept[0].ModelVersion, want)
	}
	if modelMetric(t, env.reg, "gonomaly_detect_model_restore_failures_total", "trained") < 1 {
		t.Fatal("the broken version was not counted")
	}
}

func TestDetectStageNeedsAModelSourceForModelEntries(t *testing.T) {
	s, err := spec.Parse([]byte(modelSpec), "hotswap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !processors.SpecNamesModels(s) || processors.SpecNamesModels(spec.Default()) {
		t.Fatal("SpecNamesModels is wrong")
	}
	_, err = processors.NewDetect(s, topics)
	if err == nil || !strings.Contains(err.Error(), "detectors[0]: names model cpu") {
		t.Fatalf("NewDetect without models: %v", err)
	}
	// A model entry is part of the spec's version.
	d := spec.Default()
	if v := processors.SpecVersion(d); v == processors.SpecVersion(s) || !strings.HasPrefix(v, "spec-") {
		t.Fatalf("spec versions %s and %s", v, processors.SpecVersion(s))
	}
}

// modelMetric reads one series of a gathered counter or gauge (0 when absent).
func modelMetric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
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
			var values []string
			for _, l := range m.GetLabel() {
				values = append(values, l.GetValue())
			}
			if strings.Join(values, ",") == strings.Join(labels, ",") {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// BenchmarkDetectWithModel measures the detect stage's processor on records scored by a
// trained isolation forest (100 trees, 4 features) beside a zscore, against zscore alone.
func BenchmarkDetectWithModel(b *testing.B) {
	for _, withModel := range []bool{false, true} {
		name := "zscore"
		if withModel {
			name = "zscore+iforest-model"
		}
		b.Run(name, func(b *testing.B) {
			env := newJobEnv(b)
			yaml := "name: bench\ndetectors:\n  - algorithm: zscore\n"
			var opts []processors.DetectOption
			if withModel {
				yaml += "  - model: cpu\n"
				rng := rand.New(rand.NewPCG(1, 1))
				rows := make([][]float64, 2000)
				for i := range rows {
					rows[i] = []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
				}
				if _, err := processors.ExecuteTrain(context.Background(), jobs.Run{Store: env.store, Progress: func(float64, string) {},
					Job: jobs.Job{ID: "job_bench", Type: jobs.Train, Model: "cpu", Algorithm: "iforest", Input: jobs.Input{Rows: rows, Columns: []string{"a", "b", "c", "d"}}}}); err != nil {
					b.Fatal(err)
				}
				opts = append(opts, processors.DetectModels(env.store.Models))
			}
			s, err := spec.Parse([]byte(yaml), "bench.yaml")
			if err != nil {
				b.Fatal(err)
			}
			stage, err := processors.NewDetect(s, topics, opts...)
			if err != nil {
				b.Fatal(err)
			}
			p, err := stage.NewProcessor(topics.Features, 0)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(2, 2))
			values := make([][]byte, 1024)
			for i := range values {
				row := []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
				values[i] = schemas.AppendFeatures(nil, &schemas.Features{Series: "s", TS: int64(i), Names: []string{"a", "b", "c", "d"}, Scaled: row, Raw: row})
			}
			rec := &kgo.Record{Topic: topics.Features}
			emit := func(*kgo.Record) {}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				rec.Value = values[i%len(values)]
				if err := p.Process(rec, emit); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
