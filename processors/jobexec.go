package processors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

// JobExecutors returns the executor of every job type the workers run.
func JobExecutors() map[jobs.Type]jobs.Executor {
	return map[jobs.Type]jobs.Executor{
		jobs.Detect:     ExecuteDetect,
		jobs.Ensemble:   ExecuteEnsemble,
		jobs.Preprocess: ExecutePreprocess,
		jobs.Train:      ExecuteTrain,
	}
}

// A job scores its rows in slices, reporting progress and checking for cancellation
// between them. Slices are sized to take about ScoreSliceTime each, whatever the
// detector's speed, within [MinScoreSlice, MaxScoreSlice] rows.
const (
	ScoreSliceTime = 50 * time.Millisecond
	MinScoreSlice  = 16
	MaxScoreSlice  = 16_384
)

// Scalings a preprocess job applies.
const (
	ScalingStandard = "standard" // (x − mean) / standard deviation
	ScalingRobust   = "robust"   // (x − median) / interquartile range
	ScalingMinMax   = "minmax"   // (x − min) / (max − min), into [0, 1]
)

// Where each phase of a job lands in its progress fraction.
const (
	progressLoaded = 0.3
	progressFitted = 0.45
	progressScored = 0.95
)

// ExecuteDetect scores every row of the input: with a detector fitted on the rows (a
// streaming one scores each row and then learns it, in row order), or with a trained
// model restored from the models topic. It labels the top Contamination fraction
// anomalous, or with a model the scores at or above the model's threshold.
func ExecuteDetect(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
	job := run.Job
	var model *jobs.Model
	if job.Model != "" {
		m, err := findModel(ctx, run.Store, job.Model)
		if err != nil {
			return jobs.Summary{}, err
		}
		model = &m
	}
	X, labels, cols, err := loadInput(ctx, run)
	if err != nil {
		return jobs.Summary{}, err
	}
	var det *jobDetector
	if model != nil {
		if X, err = selectColumns(X, cols, model.Columns, "model "+jobs.ModelRef{Name: model.Name, Version: model.Version}.String()); err != nil {
			return jobs.Summary{}, err
		}
		cols = model.Columns
		if det, err = restoreModel(*model); err != nil {
			return jobs.Summary{}, err
		}
	} else if det, err = newJobDetector(job.Algorithm, job.Params, job.Seed); err != nil {
		return jobs.Summary{}, err
	}

	metrics := map[string]float64{}
	start := time.Now()
	if model == nil {
		run.Progress(progressLoaded, "fitting "+det.name)
		if err := det.fit(ctx, X); err != nil {
			return jobs.Summary{}, err
		}
		metrics["fit_seconds"] = time.Since(start).Seconds()
	}
	start = time.Now()
	scores := make([]float64, X.Rows)
	if err := det.score(ctx, X, scores, sliceProgress(run, progressFitted, progressScored, "scoring")); err != nil {
		return jobs.Summary{}, err
	}
	metrics["score_seconds"] = time.Since(start).Seconds()

	var threshold float64
	var anomalous []bool
	if model != nil {
		threshold = model.Threshold
		anomalous = labelAtOrAbove(scores, threshold)
	} else {
		threshold, anomalous = labelTop(scores, contamination(job))
	}
	addROCAUC(metrics, "roc_auc", scores, labels)
	sum := jobs.Summary{Rows: X.Rows, Columns: len(cols), Anomalies: count(anomalous), Threshold: threshold, Metrics: metrics}
	if model != nil {
		sum.Model = &jobs.ModelRef{Name: model.Name, Version: model.Version}
	}
	return writeResults(ctx, run, sum, scores, anomalous)
}

// ExecuteEnsemble scores every row with each of the job's detectors, calibrates each
// detector's scores to [0,1] by their rank among the job's rows (the ECDF calibration of
// the streaming ensemble, over the whole input), and combines them with the job's
// combiner.
func ExecuteEnsemble(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
	job := run.Job
	if len(job.Detectors) == 0 {
		return jobs.Summary{}, errors.New("detectors: an ensemble job needs at least one detector")
	}
	method := cmp.Or(job.Combiner, detectors.CombineMean)
	combine, err := detectors.NewCombiner(method)
	if err != nil {
		return jobs.Summary{}, fmt.Errorf("combiner: %w", err)
	}
	dets := make([]*jobDetector, len(job.Detectors))
	weights := make([]float64, len(job.Detectors))
	for i, m := range job.Detectors {
		if dets[i], err = newJobDetector(m.Algorithm, m.Params, job.Seed+uint64(i)); err != nil {
			return jobs.Summary{}, fmt.Errorf("detectors[%d]: %w", i, err)
		}
		weights[i] = m.Weight
		if !(m.Weight > 0) { // zero (left out) counts as 1, as documented for DetectorSpec
			weights[i] = 1
		}
	}
	X, labels, cols, err := loadInput(ctx, run)
	if err != nil {
		return jobs.Summary{}, err
	}

	metrics := map[string]float64{"fit_seconds": 0, "score_seconds": 0}
	calibrated := make([][]float64, len(dets))
	names := memberNames(job.Detectors)
	span := (progressScored - progressLoaded) / float64(len(dets))
	raw := make([]float64, X.Rows)
	for i, det := range dets {
		lo, hi := progressLoaded+float64(i)*span, progressLoaded+float64(i+1)*span
		run.Progress(lo, fmt.Sprintf("fitting %s (%d of %d)", names[i], i+1, len(dets)))
		start := time.Now()
		if err := det.fit(ctx, X); err != nil {
			return jobs.Summary{}, fmt.Errorf("detectors[%d]: %w", i, err)
		}
		metrics["fit_seconds"] += time.Since(start).Seconds()
		start = time.Now()
		if err := det.score(ctx, X, raw, sliceProgress(run, lo+span/3, hi, "scoring "+names[i])); err != nil {
			return jobs.Summary{}, fmt.Errorf("detectors[%d]: %w", i, err)
		}
		metrics["score_seconds"] += time.Since(start).Seconds()
		addROCAUC(metrics, "roc_auc."+names[i], raw, labels)
		calibrated[i] = CalibrateRanks(raw)
	}

	combined := make([]float64, X.Rows)
	row := make([]float64, len(dets))
	for r := range combined {
		for i := range dets {
			row[i] = calibrated[i][r]
		}
		combined[r] = combine(row, weights)
	}
	threshold, anomalous := labelTop(combined, contamination(job))
	addROCAUC(metrics, "roc_auc", combined, labels)
	sum := jobs.Summary{Rows: X.Rows, Columns: len(cols), Anomalies: count(anomalous), Threshold: threshold, Metrics: metrics}
	return writeResults(ctx, run, sum, combined, anomalous)
}

// ExecutePreprocess scales every column of the input and stores the result, labels kept,
// as a new dataset whose source is the job.
func ExecutePreprocess(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
	job := run.Job
	if err := checkScaling(job.Scaling); err != nil {
		return jobs.Summary{}, err
	}
	X, labels, cols, err := loadInput(ctx, run)
	if err != nil {
		return jobs.Summary{}, err
	}
	run.Progress(progressLoaded, "scaling with "+job.Scaling)
	start := time.Now()
	scaled, err := ScaleColumns(ctx, X, job.Scaling)
	if err != nil {
		return jobs.Summary{}, err
	}
	elapsed := time.Since(start).Seconds()
	run.Progress(progressScored, "storing the scaled dataset")
	d, err := run.Store.PutDataset(ctx, scaledName(run, job.Scaling), job.ID, cols, scaled, labels)
	if err != nil {
		return jobs.Summary{}, storeError(ctx, "store the scaled dataset", err)
	}
	return jobs.Summary{Rows: X.Rows, Columns: len(cols), Dataset: d.ID, Metrics: map[string]float64{"scale_seconds": elapsed}}, nil
}

// ExecuteTrain fits the job's detector on the input (a streaming detector learns the
// rows in order), takes as threshold the training score at the 1 − contamination
// quantile, and publishes the fitted detector as the next version of the job's model.
func ExecuteTrain(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
	job := run.Job
	if err := jobs.CheckModelName(job.Model); err != nil {
		return jobs.Summary{}, fmt.Errorf("model: %w", err)
	}
	det, err := newJobDetector(job.Algorithm, job.Params, job.Seed)
	if err != nil {
		return jobs.Summary{}, err
	}
	if det.persistent() == nil {
		return jobs.Summary{}, fmt.Errorf("algorithm: %s cannot be saved as a model (it does not implement detectors.Persistent)", det.name)
	}
	X, labels, cols, err := loadInput(ctx, run)
	if err != nil {
		return jobs.Summary{}, err
	}
	metrics := map[string]float64{}
	run.Progress(progressLoaded, "fitting "+det.name)
	start := time.Now()
	if err := det.fit(ctx, X); err != nil {
		return jobs.Summary{}, err
	}
	metrics["fit_seconds"] = time.Since(start).Seconds()
	start = time.Now()
	scores := make([]float64, X.Rows)
	// A batch detector scores its training rows; a streaming one learns by scoring them.
	if err := det.score(ctx, X, scores, sliceProgress(run, progressFitted, 0.85, "scoring the training rows")); err != nil {
		return jobs.Summary{}, err
	}
	metrics["score_seconds"] = time.Since(start).Seconds()
	threshold, anomalous := labelTop(scores, contamination(job))
	addROCAUC(metrics, "roc_auc", scores, labels)

	run.Progress(0.9, "publishing model "+job.Model)
	snapshot, err := det.persistent().MarshalBinary()
	if err != nil {
		return jobs.Summary{}, fmt.Errorf("saving the fitted %s: %w", det.name, err)
	}
	m := jobs.Model{
		Name: job.Model, Algorithm: det.name, Params: det.params, Seed: job.Seed, Columns: cols,
		Training: jobs.Training{Dataset: job.Input.Dataset, Rows: X.Rows},
		Metrics:  metrics, JobID: job.ID, Threshold: threshold, Snapshot: snapshot,
	}
	if d, ok := run.Store.Datasets.Get(job.Input.Dataset); ok {
		m.Training.Hash = d.Hash
	}
	published, err := run.Store.PublishModel(ctx, m)
	if err != nil {
		return jobs.Summary{}, storeError(ctx, "publish the model", err)
	}
	return jobs.Summary{
		Rows: X.Rows, Columns: len(cols), Anomalies: count(anomalous), Threshold: threshold, Metrics: published.Metrics,
		Model: &jobs.ModelRef{Name: published.Name, Version: published.Version},
	}, nil
}

// jobDetector is a registry detector as a job runs it: a batch detector is fitted and
// then scores; a streaming one scores each row and then learns it, in row order.
type jobDetector struct {
	name   string
	params detectors.Params // resolved: every parameter set
	batch  detectors.Batch
	stream detectors.Streaming
}

// newJobDetector builds an unfitted detector; errors name the algorithm or parameter.
func newJobDetector(algorithm string, given detectors.Params, seed uint64) (*jobDetector, error) {
	if algorithm == "" {
		return nil, errors.New("algorithm: required (GET /api/v1/detectors lists them)")
	}
	info, err := detectors.Lookup(algorithm)
	if err != nil {
		return nil, fmt.Errorf("algorithm: %w", err)
	}
	params, err := info.Resolve(given)
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	d := &jobDetector{name: info.Name, params: params}
	switch {
	case info.NewBatch != nil:
		d.batch, err = info.NewBatch(params, seed)
	case info.NewStreaming != nil:
		d.stream, err = info.NewStreaming(params, seed)
	default:
		err = fmt.Errorf("algorithm: %s has no constructor", info.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	return d, nil
}

// restoreModel rebuilds a trained model's detector from its snapshot.
func restoreModel(m jobs.Model) (*jobDetector, error) {
	batch, stream, err := m.Restore()
	if err != nil {
		return nil, err
	}
	info, _ := detectors.Lookup(m.Algorithm) // Restore found it
	params, _ := info.Resolve(m.Params)
	return &jobDetector{name: info.Name, params: params, batch: batch, stream: stream}, nil
}

func (d *jobDetector) persistent() detectors.Persistent {
	var p detectors.Persistent
	if d.batch != nil {
		p, _ = d.batch.(detectors.Persistent)
	} else {
		p, _ = d.stream.(detectors.Persistent)
	}
	return p
}

// fit fits a batch detector. Fit itself cannot be interrupted, so it runs aside and a
// cancelled job returns at once; the abandoned fit finishes on its own and is dropped.
func (d *jobDetector) fit(ctx context.Context, X detectors.Matrix) error {
	if d.batch == nil {
		return ctx.Err()
	}
	if err := X.Check(); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		// A panic here would take the worker down, out of reach of its recovery.
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("%s panicked: %v", d.name, p)
			}
		}()
		done <- d.batch.Fit(X)
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("fitting %s: %w", d.name, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// score writes every row's score to out a slice at a time, reporting the rows done
// after each slice and returning ctx's error between slices once it is cancelled.
func (d *jobDetector) score(ctx context.Context, X detectors.Matrix, out []float64, progress func(done, total int)) error {
	if err := X.Check(); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	slice := MinScoreSlice * 4
	for lo := 0; lo < X.Rows; {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+slice, X.Rows)
		start := time.Now()
		if d.batch != nil {
			part := detectors.Matrix{Rows: hi - lo, Cols: X.Cols, Data: X.Data[lo*X.Cols : hi*X.Cols]}
			if err := d.batch.Score(part, out[lo:hi]); err != nil {
				return fmt.Errorf("scoring with %s: %w", d.name, err)
			}
		} else {
			for r := lo; r < hi; r++ {
				out[r] = d.stream.ScoreLearn("", X.Row(r), nil)
			}
		}
		progress(hi, X.Rows)
		perRow := time.Since(start) / time.Duration(hi-lo)
		slice = min(max(int(ScoreSliceTime/max(perRow, 1)), MinScoreSlice), MaxScoreSlice, 2*slice)
		lo = hi
	}
	return ctx.Err()
}

// sliceProgress maps rows done onto [from, to] of the job's progress.
func sliceProgress(run jobs.Run, from, to float64, what string) func(done, total int) {
	return func(done, total int) {
		run.Progress(from+(to-from)*float64(done)/float64(max(total, 1)), fmt.Sprintf("%s: %d of %d rows", what, done, total))
	}
}

// loadInput reads the job's rows, reporting progress up to progressLoaded.
func loadInput(ctx context.Context, run jobs.Run) (detectors.Matrix, []float64, []string, error) {
	in := run.Job.Input
	total := len(in.Rows)
	if d, ok := run.Store.Datasets.Get(in.Dataset); ok {
		total = d.Rows
	}
	run.Progress(0, "loading the input")
	X, labels, cols, err := run.Store.LoadInput(ctx, in, func(read int) {
		f := 0.0
		if total > 0 {
			f = progressLoaded * min(float64(read)/float64(total), 1)
		}
		run.Progress(f, fmt.Sprintf("loading the input: %d rows read", read))
	})
	if err != nil {
		if ctx.Err() != nil {
			return detectors.Matrix{}, nil, nil, ctx.Err()
		}
		return detectors.Matrix{}, nil, nil, err
	}
	if err := X.Check(); err != nil {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("input: %w", err)
	}
	if len(cols) != X.Cols {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("input: %d column names for %d columns", len(cols), X.Cols)
	}
	if labels != nil && len(labels) != X.Rows {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("input: %d labels for %d rows", len(labels), X.Rows)
	}
	return X, labels, cols, nil
}

// findModel resolves a detect job's model reference against the models topic.
func findModel(ctx context.Context, store *jobs.Store, name string) (jobs.Model, error) {
	ref, err := jobs.ParseModelRef(name)
	if err != nil {
		return jobs.Model{}, fmt.Errorf("model: %w", err)
	}
	// A model trained a moment ago (by another worker) must be found.
	if err := store.Models.Sync(ctx); err != nil {
		return jobs.Model{}, jobs.Transient(storeError(ctx, "read the models topic", err))
	}
	m, err := store.Models.Find(ref)
	if err != nil {
		return jobs.Model{}, fmt.Errorf("model: %w", err)
	}
	return m, nil
}

// selectColumns returns X's columns named by want, in want's order; every name must be
// among have (X's column names).
func selectColumns(X detectors.Matrix, have, want []string, what string) (detectors.Matrix, error) {
	if slices.Equal(have, want) {
		return X, nil
	}
	index := make(map[string]int, len(have))
	for j, c := range have {
		index[c] = j
	}
	pick := make([]int, len(want))
	for k, c := range want {
		j, ok := index[c]
		if !ok {
			return detectors.Matrix{}, fmt.Errorf("input has no column %q, which %s was trained on (it needs %s; the input has %s)",
				c, what, strings.Join(want, ", "), strings.Join(have, ", "))
		}
		pick[k] = j
	}
	out := detectors.NewMatrix(X.Rows, len(want))
	for r := range X.Rows {
		src, dst := X.Row(r), out.Row(r)
		for k, j := range pick {
			dst[k] = src[j]
		}
	}
	return out, nil
}

// writeResults stores the per-row results and completes the summary with their place.
func writeResults(ctx context.Context, run jobs.Run, sum jobs.Summary, scores []float64, anomalous []bool) (jobs.Summary, error) {
	run.Progress(progressScored, "writing the results")
	if n := fillUnscored(scores); n > 0 {
		sum.Metrics["unscored_rows"] = float64(n)
	}
	loc, err := run.Store.WriteResults(ctx, run.Job.ID, scores, anomalous)
	if err != nil {
		return jobs.Summary{}, storeError(ctx, "write the results", err)
	}
	sum.Results = loc
	return sum, nil
}

// fillUnscored gives the rows a streaming detector scored NaN while warming up (no
// verdict) the job's lowest score, so they rank last and stay unlabelled, and returns
// how many there were: stored results have a rank for every row.
func fillUnscored(scores []float64) int {
	lowest, n := math.Inf(1), 0
	for _, s := range scores {
		if math.IsNaN(s) {
			n++
		} else {
			lowest = min(lowest, s)
		}
	}
	if n == 0 {
		return 0
	}
	if math.IsInf(lowest, 1) {
		lowest = 0
	}
	for i, s := range scores {
		if math.IsNaN(s) {
			scores[i] = lowest
		}
	}
	return n
}

// storeError passes on an error of the Store (which marks Kafka failures transient),
// or ctx's own error when the job was cancelled or timed out meanwhile.
func storeError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%s: %w", what, err)
}

func contamination(job jobs.Job) float64 {
	if job.Contamination > 0 {
		return job.Contamination
	}
	return jobs.DefaultContamination
}

// labelTop labels the ⌈contamination·n⌉ highest scores anomalous (ties with the last
// one too) and returns the lowest score so labelled. NaN scores (a streaming detector
// warming up) are never labelled and do not count in n.
func labelTop(scores []float64, contamination float64) (float64, []bool) {
	sorted := make([]float64, 0, len(scores))
	for _, s := range scores {
		if !math.IsNaN(s) {
			sorted = append(sorted, s)
		}
	}
	if len(sorted) == 0 {
		return 0, make([]bool, len(scores))
	}
	slices.Sort(sorted)
	k := int(math.Ceil(contamination*float64(len(sorted)) - 1e-9))
	k = min(max(k, 1), len(sorted))
	threshold := sorted[len(sorted)-k]
	return threshold, labelAtOrAbove(scores, threshold)
}

// labelAtOrAbove labels the scores at or above threshold (a model's, or labelTop's).
func labelAtOrAbove(scores []float64, threshold float64) []bool {
	out := make([]bool, len(scores))
	for i, s := range scores {
		out[i] = s >= threshold // false for NaN
	}
	return out
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// addROCAUC adds the area under the ROC curve of scores against the input's labels,
// when it has labels of both classes. NaN scores rank lowest.
func addROCAUC(metrics map[string]float64, key string, scores, labels []float64) {
	if len(labels) != len(scores) || len(scores) == 0 {
		return
	}
	ints := make([]int, len(labels))
	for i, l := range labels {
		if l != 0 {
			ints[i] = 1
		}
	}
	ranked := scores
	if slices.ContainsFunc(scores, math.IsNaN) {
		ranked = slices.Clone(scores)
		for i, s := range ranked {
			if math.IsNaN(s) {
				ranked[i] = math.Inf(-1)
			}
		}
	}
	if auc := detectors.ROCAUC(ranked, ints); !math.IsNaN(auc) {
		metrics[key] = auc
	}
}

// CalibrateRanks maps raw scores to [0,1] by their rank among all of them: the fraction
// of scores strictly below plus half the fraction equal (mid-rank), the rule of the
// streaming ensemble's ECDF calibrator applied to a whole batch at once. NaN stays NaN
// (the combiners skip it) and does not count.
func CalibrateRanks(raw []float64) []float64 {
	sorted := make([]float64, 0, len(raw))
	for _, s := range raw {
		if !math.IsNaN(s) {
			sorted = append(sorted, s)
		}
	}
	slices.Sort(sorted)
	n := float64(len(sorted))
	out := make([]float64, len(raw))
	for i, s := range raw {
		if math.IsNaN(s) {
			out[i] = s
			continue
		}
		below, _ := slices.BinarySearch(sorted, s)
		upTo := below
		for upTo < len(sorted) && sorted[upTo] == s {
			upTo++
		}
		out[i] = (float64(below) + 0.5*float64(upTo-below)) / n
	}
	return out
}

// memberNames names an ensemble's members in metrics: the algorithm, with "#2", "#3"…
// for its later repeats.
func memberNames(specs []jobs.DetectorSpec) []string {
	seen := map[string]int{}
	names := make([]string, len(specs))
	for i, s := range specs {
		seen[s.Algorithm]++
		names[i] = s.Algorithm
		if n := seen[s.Algorithm]; n > 1 {
			names[i] = fmt.Sprintf("%s#%d", s.Algorithm, n)
		}
	}
	return names
}

func checkScaling(s string) error {
	switch s {
	case ScalingStandard, ScalingRobust, ScalingMinMax:
		return nil
	case "":
		return fmt.Errorf("scaling: required (%s)", strings.Join(jobs.Scalings, ", "))
	}
	return fmt.Errorf("scaling: unknown scaling %q (known: %s)", s, strings.Join(jobs.Scalings, ", "))
}

// ScaleColumns returns X with every column scaled: standard (mean 0, standard deviation
// 1), robust (median 0, interquartile range 1) or minmax (into [0, 1]). A constant
// column has no spread to divide by: it is only centred (minmax: set to 0).
func ScaleColumns(ctx context.Context, X detectors.Matrix, scaling string) (detectors.Matrix, error) {
	if err := checkScaling(scaling); err != nil {
		return detectors.Matrix{}, err
	}
	if err := X.Check(); err != nil {
		return detectors.Matrix{}, fmt.Errorf("input: %w", err)
	}
	out := detectors.NewMatrix(X.Rows, X.Cols)
	col := make([]float64, X.Rows)
	for j := range X.Cols {
		if err := ctx.Err(); err != nil {
			return detectors.Matrix{}, err
		}
		for r := range X.Rows {
			col[r] = X.Data[r*X.Cols+j]
		}
		center, spread := columnScale(col, scaling)
		if !(spread > 0) || math.IsInf(spread, 0) {
			spread = 1
		}
		for r := range X.Rows {
			out.Data[r*X.Cols+j] = (col[r] - center) / spread
		}
	}
	return out, nil
}

// columnScale returns what to subtract from a column and what to divide it by.
func columnScale(col []float64, scaling string) (center, spread float64) {
	switch scaling {
	case ScalingStandard:
		mean := 0.0
		for _, v := range col {
			mean += v
		}
		mean /= float64(len(col))
		ss := 0.0
		for _, v := range col {
			ss += (v - mean) * (v - mean)
		}
		return mean, math.Sqrt(ss / float64(len(col)))
	case ScalingRobust:
		sorted := slices.Clone(col)
		slices.Sort(sorted)
		return quantileSorted(sorted, 0.5), quantileSorted(sorted, 0.75) - quantileSorted(sorted, 0.25)
	default: // minmax
		lo, hi := slices.Min(col), slices.Max(col)
		if hi == lo {
			return lo, 1 // a constant column becomes 0
		}
		return lo, hi - lo
	}
}

// quantileSorted interpolates linearly between order statistics (numpy's default).
func quantileSorted(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

// scaledName names a preprocess job's dataset after its input and scaling.
func scaledName(run jobs.Run, scaling string) string {
	in := run.Job.Input
	base := "rows"
	switch {
	case in.Dataset != "":
		base = in.Dataset
		if d, ok := run.Store.Datasets.Get(in.Dataset); ok && d.Name != "" {
			base = d.Name
		}
	case in.Records != nil:
		base = "records"
	}
	return base + "-" + scaling
}
