package processors_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/eval"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
)

const cardioPath = "../../shared/data/odds/cardio.csv"

// jobEnv is a broker with the job system's layout and a Store as a worker has it.
type jobEnv struct {
	brokers []string
	cfg     cluster.Config
	store   *jobs.Store
}

func newJobEnv(t testing.TB) *jobEnv {
	t.Helper()
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	cl := testkit.Client(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureLayout(ctx, cl); err != nil {
		t.Fatal(err)
	}
	store, err := jobs.Open(ctx, cl, jobs.TopicsFor(cfg), func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &jobEnv{brokers: brokers, cfg: cfg, store: store}
}

// uploadCardio stores the ODDS cardio file as a dataset (label column kept apart).
func (e *jobEnv) uploadCardio(t *testing.T) jobs.Dataset {
	t.Helper()
	f, err := os.Open(cardioPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := e.store.UploadDataset(context.Background(), f, "csv", "cardio")
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != 1831 || len(d.Columns) != 21 || !d.Labels {
		t.Fatalf("cardio uploaded as %d rows × %d columns, labels %v", d.Rows, len(d.Columns), d.Labels)
	}
	return d
}

// progressLog records what an executor reports, for checks on its shape.
type progressLog struct {
	mu        sync.Mutex
	fractions []float64
	messages  []string
}

func (p *progressLog) report(f float64, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fractions = append(p.fractions, f)
	p.messages = append(p.messages, msg)
}

// check fails unless progress stayed in [0, 1], never went back, and said scoring.
func (p *progressLog) check(t *testing.T, phase string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.fractions) < 3 {
		t.Fatalf("only %d progress reports", len(p.fractions))
	}
	for i, f := range p.fractions {
		if f < 0 || f > 1 || (i > 0 && f < p.fractions[i-1]) {
			t.Fatalf("progress %v is not a rising sequence in [0, 1]", p.fractions)
		}
	}
	if !slices.ContainsFunc(p.messages, func(m string) bool { return strings.Contains(m, phase) }) {
		t.Fatalf("no progress message mentions %q: %q", phase, p.messages)
	}
}

func (e *jobEnv) run(t *testing.T, ctx context.Context, job jobs.Job, progress *progressLog) (jobs.Summary, error) {
	t.Helper()
	if job.ID == "" {
		job.ID = jobs.NewID("job")
	}
	if progress == nil {
		progress = &progressLog{}
	}
	exec := processors.JobExecutors()[job.Type]
	if exec == nil {
		t.Fatalf("no executor for %s jobs", job.Type)
	}
	return exec(ctx, jobs.Run{Job: job, Store: e.store, Attempt: 1, Progress: progress.report})
}

func (e *jobEnv) results(t *testing.T, sum jobs.Summary) ([]float64, []bool) {
	t.Helper()
	if sum.Results == nil {
		t.Fatal("summary has no results location")
	}
	rows, err := e.store.ReadResults(context.Background(), *sum.Results, 0, sum.Results.Rows)
	if err != nil {
		t.Fatal(err)
	}
	scores, flags := make([]float64, len(rows)), make([]bool, len(rows))
	for i, r := range rows {
		if r.Row != i {
			t.Fatalf("result %d is row %d", i, r.Row)
		}
		scores[i], flags[i] = r.Score, r.IsAnomaly
	}
	return scores, flags
}

func loadCardio(t *testing.T) *eval.Dataset {
	t.Helper()
	ds, err := eval.LoadODDS(cardioPath)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// fitScore fits a registry detector on X and scores X, outside the job system.
func fitScore(t *testing.T, algorithm string, params detectors.Params, seed uint64, X detectors.Matrix) []float64 {
	t.Helper()
	info, err := detectors.Lookup(algorithm)
	if err != nil {
		t.Fatal(err)
	}
	p, err := info.Resolve(params)
	if err != nil {
		t.Fatal(err)
	}
	det, err := info.NewBatch(p, seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := det.Fit(X); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, X.Rows)
	if err := det.Score(X, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDetectJobIsolationForestOnCardio(t *testing.T) {
	env := newJobEnv(t)
	d := env.uploadCardio(t)
	progress := &progressLog{}
	sum, err := env.run(t, context.Background(), jobs.Job{Type: jobs.Detect, Input: jobs.Input{Dataset: d.ID}, Algorithm: "iforest", Seed: 3}, progress)
	if err != nil {
		t.Fatal(err)
	}
	progress.check(t, "scoring")
	t.Logf("iforest on cardio: %v", sum.Metrics)
	// PyOD's published iforest on cardio is about 0.93 (on a 60/40 split).
	if auc := sum.Metrics["roc_auc"]; !(auc >= 0.9) {
		t.Fatalf("roc_auc %v on cardio, want ≥ 0.9 (metrics %v)", auc, sum.Metrics)
	}
	if sum.Rows != 1831 || sum.Columns != 21 || sum.Metrics["fit_seconds"] <= 0 || sum.Metrics["score_seconds"] <= 0 {
		t.Fatalf("summary %+v", sum)
	}

	// The stored results are those of the same forest fitted outside the job system, and
	// the ROC-AUC is eval's.
	ds := loadCardio(t)
	want := fitScore(t, "iforest", nil, 3, ds.X)
	scores, flags := env.results(t, sum)
	if !slices.Equal(scores, want) {
		t.Fatal("stored scores differ from the same forest fitted directly")
	}
	if auc := detectors.ROCAUC(want, ds.Labels); sum.Metrics["roc_auc"] != auc {
		t.Fatalf("roc_auc %v, eval.ROCAUC says %v", sum.Metrics["roc_auc"], auc)
	}
	// The top 10 % (⌈183.1⌉ = 184 rows) are labelled, the threshold being the lowest of them.
	labelled, lowest := 0, math.Inf(1)
	for i, f := range flags {
		if f {
			labelled++
			lowest = min(lowest, scores[i])
		} else if scores[i] >= sum.Threshold {
			t.Fatalf("row %d scored %v ≥ threshold %v but is not labelled", i, scores[i], sum.Threshold)
		}
	}
	if labelled != sum.Anomalies || labelled < 184 || labelled > 190 || lowest != sum.Threshold {
		t.Fatalf("%d labelled (summary %d), lowest labelled score %v, threshold %v", labelled, sum.Anomalies, lowest, sum.Threshold)
	}
}

func TestDetectJobStreamingDetectorScoresThenLearnsInRowOrder(t *testing.T) {
	env := newJobEnv(t)
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([][]float64, 600)
	for i := range rows {
		rows[i] = []float64{rng.NormFloat64(), rng.NormFloat64()}
	}
	rows[500] = []float64{25, -25}
	sum, err := env.run(t, context.Background(), jobs.Job{
		Type: jobs.Detect, Input: jobs.Input{Rows: rows, Columns: []string{"a", "b"}}, Algorithm: "zscore", Contamination: 0.01,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := detectors.Lookup("zscore")
	params, _ := info.Resolve(nil)
	det, _ := info.NewStreaming(params, 0)
	scores, flags := env.results(t, sum)
	warming := 0
	for i, row := range rows {
		want := det.ScoreLearn("", row, nil)
		if math.IsNaN(want) {
			warming++
			continue // stored with the lowest score: checked below
		}
		if scores[i] != want {
			t.Fatalf("row %d: stored %v, the detector fed in row order gives %v", i, scores[i], want)
		}
	}
	if warming == 0 || sum.Metrics["unscored_rows"] != float64(warming) || flags[0] || scores[0] != slices.Min(scores) {
		t.Fatalf("%d warm-up rows: metrics %v, row 0 stored as %v labelled %v", warming, sum.Metrics, scores[0], flags[0])
	}
	if !flags[500] {
		t.Fatal("the outlier at row 500 is not labelled")
	}
}

func TestTrainThenDetectWithTheModel(t *testing.T) {
	env := newJobEnv(t)
	d := env.uploadCardio(t)
	ctx := context.Background()
	params := detectors.Params{"trees": 50}
	train := jobs.Job{Type: jobs.Train, Input: jobs.Input{Dataset: d.ID}, Algorithm: "iforest", Params: params, Seed: 9, Model: "cardio-if", Contamination: 0.05}
	progress := &progressLog{}
	sum, err := env.run(t, ctx, train, progress)
	if err != nil {
		t.Fatal(err)
	}
	progress.check(t, "publishing")
	if sum.Model == nil || *sum.Model != (jobs.ModelRef{Name: "cardio-if", Version: 1}) {
		t.Fatalf("train summary names model %v", sum.Model)
	}
	m, ok := env.store.Models.Latest("cardio-if")
	if !ok || m.Algorithm != "iforest" || m.Params["trees"] != 50 || m.Params["max_samples"] != 256 || m.Seed != 9 ||
		len(m.Columns) != 21 || m.Training.Rows != 1831 || m.Training.Dataset != d.ID || m.Training.Hash != d.Hash || len(m.Snapshot) == 0 {
		t.Fatalf("published model %+v", m.WithoutSnapshot())
	}
	if auc := m.Metrics["roc_auc"]; !(auc >= 0.85) || m.Metrics["fit_seconds"] <= 0 {
		t.Fatalf("model metrics %v", m.Metrics)
	}
	// The threshold labels the top 5 % of the training scores.
	fitted := fitScore(t, "iforest", params, 9, loadCardio(t).X)
	above := 0
	for _, s := range fitted {
		if s >= m.Threshold {
			above++
		}
	}
	if above != sum.Anomalies || above < 92 || above > 95 || sum.Threshold != m.Threshold {
		t.Fatalf("threshold %v labels %d training rows; summary %d anomalies, threshold %v", m.Threshold, above, sum.Anomalies, sum.Threshold)
	}

	// Detect with the model: the scores of the fitted forest, labels by its threshold.
	detect, err := env.run(t, ctx, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Dataset: d.ID}, Model: "cardio-if"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	scores, flags := env.results(t, detect)
	if !slices.Equal(scores, fitted) {
		t.Fatal("scores of the restored model differ from the fitted forest's")
	}
	for i, s := range scores {
		if flags[i] != (s >= m.Threshold) {
			t.Fatalf("row %d scored %v is labelled %v against the model's threshold %v", i, s, flags[i], m.Threshold)
		}
	}
	if detect.Model == nil || detect.Model.Version != 1 || detect.Threshold != m.Threshold || detect.Metrics["roc_auc"] != m.Metrics["roc_auc"] {
		t.Fatalf("detect summary %+v", detect)
	}
	if _, ok := detect.Metrics["fit_seconds"]; ok {
		t.Fatal("a detect job with a model fits nothing, yet reports fit_seconds")
	}

	// A second training publishes version 2; name@1 still scores with version 1.
	train.Params = detectors.Params{"trees": 20}
	if sum, err := env.run(t, ctx, train, nil); err != nil || sum.Model.Version != 2 {
		t.Fatalf("second training: %+v %v", sum.Model, err)
	}
	v1, err := env.run(t, ctx, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Dataset: d.ID}, Model: "cardio-if@1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if scores, _ := env.results(t, v1); !slices.Equal(scores, fitted) || v1.Model.Version != 1 {
		t.Fatal("cardio-if@1 did not score with version 1")
	}

	// Columns are taken by name: inline rows with the columns reversed and one more
	// score as the dataset's rows did.
	X := loadCardio(t).X
	cols := slices.Clone(m.Columns)
	slices.Reverse(cols)
	cols = append(cols, "extra")
	rows := make([][]float64, 50)
	for i := range rows {
		row := slices.Clone(X.Row(i))
		slices.Reverse(row)
		rows[i] = append(row, 42)
	}
	inline, err := env.run(t, ctx, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rows, Columns: cols}, Model: "cardio-if@1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if scores, _ := env.results(t, inline); !slices.Equal(scores, fitted[:50]) {
		t.Fatal("rows with reordered columns scored differently")
	}
	// A column the model needs is missing: the error names it.
	_, err = env.run(t, ctx, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: [][]float64{{1, 2}}, Columns: []string{"x0", "x1"}}, Model: "cardio-if"}, nil)
	if err == nil || !strings.Contains(err.Error(), `no column "x2"`) || jobs.IsTransient(err) {
		t.Fatalf("input without the model's column x2: %v", err)
	}
}

func TestEnsembleJob(t *testing.T) {
	env := newJobEnv(t)
	d := env.uploadCardio(t)
	job := jobs.Job{Type: jobs.Ensemble, Input: jobs.Input{Dataset: d.ID}, Seed: 4, Detectors: []jobs.DetectorSpec{
		{Algorithm: "iforest"}, {Algorithm: "hbos"}, {Algorithm: "iforest", Params: detectors.Params{"trees": 30}},
	}}
	progress := &progressLog{}
	sum, err := env.run(t, context.Background(), job, progress)
	if err != nil {
		t.Fatal(err)
	}
	progress.check(t, "scoring hbos")
	t.Logf("ensemble on cardio: %v", sum.Metrics)
	for _, k := range []string{"roc_auc", "roc_auc.iforest", "roc_auc.hbos", "roc_auc.iforest#2"} {
		if !(sum.Metrics[k] >= 0.8) {
			t.Fatalf("metric %s = %v; metrics %v", k, sum.Metrics[k], sum.Metrics)
		}
	}
	// The stored score is the mean of each member's rank-calibrated scores.
	X := loadCardio(t).X
	members := [][]float64{
		processors.CalibrateRanks(fitScore(t, "iforest", nil, 4, X)),
		processors.CalibrateRanks(fitScore(t, "hbos", nil, 5, X)),
		processors.CalibrateRanks(fitScore(t, "iforest", detectors.Params{"trees": 30}, 6, X)),
	}
	scores, _ := env.results(t, sum)
	for r, got := range scores {
		want := (members[0][r] + members[1][r] + members[2][r]) / 3
		if math.Abs(got-want) > 1e-12 || got < 0 || got > 1 {
			t.Fatalf("row %d: combined %v, want the mean of calibrated scores %v", r, got, want)
		}
	}

	// weighted_mean with hbos silenced by a tiny weight is (almost) the iforests' mean.
	job.Combiner = detectors.CombineWeightedMean
	job.Detectors[1].Weight = 1e-9
	sum, err = env.run(t, context.Background(), job, nil)
	if err != nil {
		t.Fatal(err)
	}
	scores, _ = env.results(t, sum)
	if want := (members[0][7] + members[2][7]) / 2; math.Abs(scores[7]-want) > 1e-6 {
		t.Fatalf("weighted mean of row 7: %v, want about %v", scores[7], want)
	}
}

func TestPreprocessJobWritesAScaledDataset(t *testing.T) {
	env := newJobEnv(t)
	ctx := context.Background()
	rows := [][]float64{{1, 10, 5}, {2, 20, 5}, {3, 30, 5}, {4, 40, 5}, {100, 50, 5}}
	for _, tc := range []struct {
		scaling string
		want    [][]float64 // by hand from each scaling's definition
	}{
		// a: median 3, IQR 4 − 2 = 2; b: median 30, IQR 40 − 20 = 20; c constant: centred.
		{"robust", [][]float64{{-1, -1, 0}, {-0.5, -0.5, 0}, {0, 0, 0}, {0.5, 0.5, 0}, {48.5, 1, 0}}},
		// a: min 1, range 99; b: min 10, range 40; c constant: 0.
		{"minmax", [][]float64{{0, 0, 0}, {1.0 / 99, 0.25, 0}, {2.0 / 99, 0.5, 0}, {3.0 / 99, 0.75, 0}, {1, 1, 0}}},
	} {
		job := jobs.Job{ID: jobs.NewID("job"), Type: jobs.Preprocess, Input: jobs.Input{Rows: rows, Columns: []string{"a", "b", "c"}}, Scaling: tc.scaling}
		sum, err := env.run(t, ctx, job, nil)
		if err != nil {
			t.Fatal(err)
		}
		d, ok := env.store.Datasets.Get(sum.Dataset)
		if !ok || d.Source != job.ID || d.Rows != 5 || d.Name != "rows-"+tc.scaling || sum.Rows != 5 || sum.Columns != 3 {
			t.Fatalf("%s: summary %+v, dataset %+v", tc.scaling, sum, d)
		}
		X, labels, cols, err := env.store.ReadDataset(ctx, d, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if labels != nil || !slices.Equal(cols, []string{"a", "b", "c"}) {
			t.Fatalf("%s: labels %v columns %v", tc.scaling, labels, cols)
		}
		for i, row := range tc.want {
			for j, w := range row {
				if got := X.Row(i)[j]; math.Abs(got-w) > 1e-12 {
					t.Fatalf("%s: row %d column %d = %v, want %v", tc.scaling, i, j, got, w)
				}
			}
		}
	}

	// Standard scaling of cardio keeps its labels; each column gets mean 0 and sd 1.
	d := env.uploadCardio(t)
	sum, err := env.run(t, ctx, jobs.Job{Type: jobs.Preprocess, Input: jobs.Input{Dataset: d.ID}, Scaling: "standard"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := env.store.Datasets.Get(sum.Dataset)
	X, labels, _, err := env.store.ReadDataset(ctx, out, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Name != "cardio-standard" || !out.Labels || !slices.Equal(labels, floatLabels(loadCardio(t).Labels)) {
		t.Fatalf("scaled cardio %+v lost its labels", out)
	}
	for j := range X.Cols {
		mean, ss := 0.0, 0.0
		for r := range X.Rows {
			mean += X.Row(r)[j] / float64(X.Rows)
		}
		for r := range X.Rows {
			ss += (X.Row(r)[j] - mean) * (X.Row(r)[j] - mean)
		}
		if sd := math.Sqrt(ss / float64(X.Rows)); math.Abs(mean) > 1e-9 || (math.Abs(sd-1) > 1e-9 && sd != 0) {
			t.Fatalf("column %d: mean %v, sd %v", j, mean, sd)
		}
	}
}

func floatLabels(l []int) []float64 {
	out := make([]float64, len(l))
	for i, v := range l {
		out[i] = float64(v)
	}
	return out
}

func TestJobCancelledMidScoringReturnsPromptly(t *testing.T) {
	env := newJobEnv(t)
	rng := rand.New(rand.NewPCG(5, 6))
	X := detectors.NewMatrix(40_000, 6)
	for i := range X.Data {
		X.Data[i] = rng.NormFloat64()
	}
	d, err := env.store.PutDataset(context.Background(), "noise", "", []string{"a", "b", "c", "d", "e", "f"}, X, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt time.Time
	var mu sync.Mutex
	var once sync.Once
	progress := func(f float64, msg string) {
		// Cancel from aside while slices are being scored, as a cancel request does.
		if strings.HasPrefix(msg, "scoring") {
			once.Do(func() {
				time.AfterFunc(30*time.Millisecond, func() {
					mu.Lock()
					cancelledAt = time.Now()
					mu.Unlock()
					cancel()
				})
			})
		}
	}
	job := jobs.Job{ID: jobs.NewID("job"), Type: jobs.Detect, Input: jobs.Input{Dataset: d.ID}, Algorithm: "knn", Params: detectors.Params{"n_neighbors": 20}}
	start := time.Now()
	_, err = processors.ExecuteDetect(ctx, jobs.Run{Job: job, Store: env.store, Attempt: 1, Progress: progress})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled job returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelledAt.IsZero() {
		t.Fatal("scoring never started")
	}
	if late := time.Since(cancelledAt); late > time.Second {
		t.Fatalf("returned %v after the cancel", late)
	}
	t.Logf("cancelled %v into the job, returned %v later", cancelledAt.Sub(start), time.Since(cancelledAt))

	// A cancel while fitting returns at once too (the fit is left to finish aside).
	ctx, cancel = context.WithCancel(context.Background())
	var fitting sync.Once
	progress = func(f float64, msg string) {
		if strings.HasPrefix(msg, "fitting") {
			fitting.Do(func() { cancelledAt = time.Now(); cancel() })
		}
	}
	// Small, so that the abandoned fit does not go on burning CPU after the test.
	job.Algorithm, job.Params, job.Input = "lof", nil, jobs.Input{Rows: wideRows(3000)}
	_, err = processors.ExecuteDetect(ctx, jobs.Run{Job: job, Store: env.store, Attempt: 1, Progress: progress})
	if !errors.Is(err, context.Canceled) || time.Since(cancelledAt) > time.Second {
		t.Fatalf("cancelled while fitting: %v after %v", err, time.Since(cancelledAt))
	}
}

func TestJobErrors(t *testing.T) {
	env := newJobEnv(t)
	ctx := context.Background()
	rows := [][]float64{{1, 2}, {2, 3}, {3, 4}}
	in := jobs.Input{Rows: rows, Columns: []string{"a", "b"}}
	for _, tc := range []struct {
		name string
		job  jobs.Job
		want string
	}{
		{"unknown model", jobs.Job{Type: jobs.Detect, Input: in, Model: "nosuch"}, "model nosuch: not found"},
		{"bad model reference", jobs.Job{Type: jobs.Detect, Input: in, Model: "m@x"}, "whole number"},
		{"unknown algorithm", jobs.Job{Type: jobs.Detect, Input: in, Algorithm: "nosuch"}, `unknown detector "nosuch"`},
		{"parameter out of range", jobs.Job{Type: jobs.Detect, Input: in, Algorithm: "iforest", Params: detectors.Params{"trees": 0}}, "params: detector iforest: parameter trees"},
		{"unknown dataset", jobs.Job{Type: jobs.Detect, Input: jobs.Input{Dataset: "ds_nosuch"}, Algorithm: "iforest"}, "not found"},
		{"unknown scaling", jobs.Job{Type: jobs.Preprocess, Input: in, Scaling: "log"}, `unknown scaling "log"`},
		{"empty ensemble", jobs.Job{Type: jobs.Ensemble, Input: in}, "at least one detector"},
		{"unknown combiner", jobs.Job{Type: jobs.Ensemble, Input: in, Detectors: []jobs.DetectorSpec{{Algorithm: "hbos"}}, Combiner: "sum"}, "combiner"},
		{"bad model name", jobs.Job{Type: jobs.Train, Input: in, Algorithm: "iforest", Model: "a b"}, "model"},
		{"model too large", jobs.Job{Type: jobs.Train, Input: jobs.Input{Rows: wideRows(100)}, Algorithm: "loda",
			Params: detectors.Params{"n_random_cuts": 1000, "n_bins": 2000}, Model: "huge"}, "fewer rows"},
	} {
		_, err := env.run(t, ctx, tc.job, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		} else if jobs.IsTransient(err) {
			t.Errorf("%s: %v is marked transient; bad input is permanent", tc.name, err)
		}
	}
	if names := env.store.Models.Names(); len(names) != 0 {
		t.Fatalf("failed trainings published models %v", names)
	}
}

func wideRows(n int) [][]float64 {
	rng := rand.New(rand.NewPCG(7, 8))
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = []float64{rng.Float64(), rng.Float64()}
	}
	return rows
}

func TestCalibrateRanks(t *testing.T) {
	got := processors.CalibrateRanks([]float64{3, 1, math.NaN(), 3, 2})
	want := []float64{0.75, 0.125, math.NaN(), 0.75, 0.375} // mid-ranks over the 4 scores
	for i := range want {
		if got[i] != want[i] && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
			t.Fatalf("CalibrateRanks = %v, want %v", got, want)
		}
	}
}

func TestScaleColumnsRefusesUnknownScaling(t *testing.T) {
	_, err := processors.ScaleColumns(context.Background(), detectors.NewMatrix(2, 2), "zscore")
	if err == nil || !strings.Contains(err.Error(), "standard, robust, minmax") {
		t.Fatalf("got %v", err)
	}
}

// BenchmarkDetectJobShuttle runs a whole detect job on ODDS shuttle (49,097 × 9) stored
// as a dataset: load it from Kafka, fit an isolation forest, score every row, write the
// results back.
func BenchmarkDetectJobShuttle(b *testing.B) {
	env := newJobEnv(b)
	f, err := os.Open("../../shared/data/odds/shuttle.csv")
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	d, err := env.store.UploadDataset(context.Background(), f, "csv", "shuttle")
	if err != nil {
		b.Fatal(err)
	}
	var sum jobs.Summary
	for b.Loop() {
		sum, err = processors.ExecuteDetect(context.Background(), jobs.Run{Store: env.store, Progress: func(float64, string) {},
			Job: jobs.Job{ID: jobs.NewID("job"), Type: jobs.Detect, Input: jobs.Input{Dataset: d.ID}, Algorithm: "iforest"}})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(sum.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(sum.Metrics["roc_auc"], "roc_auc")
	b.ReportMetric(sum.Metrics["fit_seconds"]*1000, "fit-ms")
	b.ReportMetric(sum.Metrics["score_seconds"]*1000, "score-ms")
}
