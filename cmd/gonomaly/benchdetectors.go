package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/internal/eval"
)

// `gonomaly bench detectors` times the detector library itself — no Kafka, no pipeline —
// on labelled data, in a form that scripts/peers/peers.py reproduces in Python (PyOD,
// scikit-learn, River), so that the two JSON documents can be joined into ratios.
//
// The protocol is written down here and in peers.py and must stay identical in both:
//   - rows are ranked by splitmix64(splitmix64(seed) + row); --subsample N keeps the first N
//     of that ranking; the first floor(0.6·n + 0.5) ranked rows train, the rest test (each
//     kept in file order); both parts are standardised with the train part's mean and
//     standard deviation (scikit-learn's StandardScaler);
//   - a run is a fresh detector: Fit(train), then Score(test); its time is fit + score, on
//     one thread; the best of --repeat runs is reported (all runs score identically, the
//     seed being fixed), and ROC-AUC is of the test scores against the test labels;
//   - a stream is one NAB series, min-max scaled to [-1, 1] over its whole length (so that
//     hst's fixed work space, limit 1, and River's limits (-1, 1) see the same numbers),
//     scored then learned record by record; ROC-AUC is against the NAB windows (a row in
//     a window is 1), with warm-up NaNs ranked lowest.

// benchDetectorsDefault are the batch detectors timed unless --detectors says otherwise:
// the ones with a Python peer.
const benchDetectorsDefault = "iforest,ecod,hbos,knn"

// benchStreamDefault are the streaming detectors timed on --stream-series.
const benchStreamDefault = "hst,zscore"

// benchBatchResult is one batch detector on one dataset; times are of the best run.
type benchBatchResult struct {
	Dataset      string           `json:"dataset"`
	Subsample    int              `json:"subsample"` // 0: every row
	Seed         uint64           `json:"seed"`
	Detector     string           `json:"detector"`
	Impl         string           `json:"impl"`
	Params       detectors.Params `json:"params"`
	TrainRows    int              `json:"train_rows"`
	TestRows     int              `json:"test_rows"`
	Cols         int              `json:"cols"`
	FitSeconds   float64          `json:"fit_seconds"`
	ScoreSeconds float64          `json:"score_seconds"`
	TotalSeconds float64          `json:"total_seconds"`
	RunsSeconds  []float64        `json:"runs_seconds"` // fit + score of every run, in order
	// CPUSeconds is the least process CPU time of a run's fit + score: on a shared machine
	// wall time also counts the time other processes hold the core, CPU time does not.
	CPUSeconds float64 `json:"cpu_seconds"`
	ROCAUC     float64 `json:"roc_auc"`
}

// benchStreamResult is one streaming detector on one series; the time is the best run's.
type benchStreamResult struct {
	Series        string           `json:"series"`
	Detector      string           `json:"detector"`
	Impl          string           `json:"impl"`
	Params        detectors.Params `json:"params"`
	Records       int              `json:"records"`
	Seconds       float64          `json:"seconds"`
	UpdatesPerSec float64          `json:"updates_per_sec"`
	RunsSeconds   []float64        `json:"runs_seconds"`
	CPUSeconds    float64          `json:"cpu_seconds"` // least process CPU time of a run
	ROCAUC        float64          `json:"roc_auc"`
}

// benchDetectorsReport is the whole output, shaped like peers.py's.
type benchDetectorsReport struct {
	Side     string              `json:"side"`
	Runtime  string              `json:"runtime"`
	Threads  int                 `json:"threads"`
	Repeat   int                 `json:"repeat"`
	Protocol string              `json:"protocol"`
	Batch    []benchBatchResult  `json:"batch"`
	Stream   []benchStreamResult `json:"stream"`
}

const benchDetectorsProtocol = "splitmix64 ranking → optional subsample → 60/40 train/test, standardised on train; " +
	"best of repeat fresh fit(train)+score(test) runs on one thread; stream: min-max to [-1,1], score then learn per record"

func cmdBenchDetectors(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("bench detectors", flag.ContinueOnError)
	dataset := fs.String("dataset", "", "ODDS CSV (.csv or .csv.gz, last column \"label\", 1 = outlier) to time the batch detectors on")
	dets := fs.String("detectors", benchDetectorsDefault, "batch detectors to time, comma-separated (empty: none)")
	series := fs.String("stream-series", "", "NAB series CSV (<root>/<category>/<name>.csv) to time the streaming detectors on")
	labels := fs.String("labels", "", "NAB windows JSON (default: <root>/combined_windows.json beside the series' category)")
	streamDets := fs.String("stream-detectors", benchStreamDefault, "streaming detectors to time on --stream-series, comma-separated")
	subsample := fs.Int("subsample", 0, "use only this many rows of --dataset, drawn by --seed (0: all)")
	seed := fs.Uint64("seed", 0, "seed of the row ranking (subsample and split) and of the detectors")
	repeat := fs.Int("repeat", 3, "runs per detector; the fastest is reported")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	var params stringList
	fs.Var(&params, "param", "detector parameter override detector.param=value, e.g. hst.trees=10; repeatable")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dataset == "" && *series == "" {
		return usageErr("bench detectors needs --dataset PATH and/or --stream-series PATH (e.g. --dataset ../shared/data/odds/shuttle.csv)")
	}
	if *labels != "" && *series == "" {
		return usageErr("--labels is only used with --stream-series")
	}
	if *subsample < 0 || *subsample == 1 {
		return usageErr("--subsample %d: must be 0 (all rows) or at least 2", *subsample)
	}
	if *repeat < 1 || *repeat > 100 {
		return usageErr("--repeat %d: must be 1..100", *repeat)
	}
	overrides, err := eval.ParseOverrides(params)
	if err != nil {
		return usageErr("--param %v", err)
	}
	batchNames, streamNames := splitList(*dets), splitList(*streamDets)
	if *dataset == "" {
		batchNames = nil
	}
	if *series == "" {
		streamNames = nil
	}
	if len(batchNames)+len(streamNames) == 0 {
		return usageErr("--detectors and --stream-detectors: nothing to time")
	}
	// Overrides are split by kind, so that one --param list can serve both and a typo in a
	// detector name is still caught.
	batchOverrides := map[string]detectors.Params{}
	streamOverrides := map[string]detectors.Params{}
	for name, p := range overrides {
		switch {
		case slices.Contains(batchNames, name):
			batchOverrides[name] = p
		case slices.Contains(streamNames, name):
			streamOverrides[name] = p
		default:
			return usageErr("--param: parameters given for %s, which is not among the detectors timed (%s)",
				name, strings.Join(append(slices.Clone(batchNames), streamNames...), ", "))
		}
	}
	candidates, err := eval.BatchCandidates(batchNames, batchOverrides)
	if err != nil {
		return usageErr("--detectors: %v", err)
	}
	if len(batchNames) == 0 {
		candidates = nil // BatchCandidates reads "none" as "every one"
	}
	streams, err := streamCandidates(streamNames, streamOverrides)
	if err != nil {
		return usageErr("--stream-detectors: %v", err)
	}

	rep := benchDetectorsReport{
		Side: "gonomaly", Runtime: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		Threads: 1, Repeat: *repeat, Protocol: benchDetectorsProtocol,
		Batch: []benchBatchResult{}, Stream: []benchStreamResult{},
	}
	if len(candidates) > 0 {
		res, err := benchBatch(ctx, env, *dataset, candidates, *subsample, *seed, *repeat)
		if err != nil {
			return err
		}
		rep.Batch = res
	}
	if len(streams) > 0 {
		res, err := benchStream(ctx, env, *series, *labels, streams, *seed, *repeat)
		if err != nil {
			return err
		}
		rep.Stream = res
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printBenchDetectors(env, rep)
	return nil
}

// streamCandidate is a streaming detector with resolved parameters.
type streamCandidate struct {
	name   string
	params detectors.Params
	info   detectors.Info
}

func streamCandidates(names []string, overrides map[string]detectors.Params) ([]streamCandidate, error) {
	var known []string
	for _, info := range detectors.List() {
		if info.Kind == detectors.KindStreaming && info.NewStreaming != nil {
			known = append(known, info.Name)
		}
	}
	var out []streamCandidate
	for _, name := range names {
		if slices.ContainsFunc(out, func(c streamCandidate) bool { return c.name == name }) {
			return nil, fmt.Errorf("detector %q is listed twice", name)
		}
		info, err := detectors.Lookup(name)
		if err != nil || info.Kind != detectors.KindStreaming || info.NewStreaming == nil {
			return nil, fmt.Errorf("unknown streaming detector %q (known: %s)", name, strings.Join(known, ", "))
		}
		p, err := info.Resolve(overrides[name])
		if err != nil {
			return nil, err
		}
		out = append(out, streamCandidate{name: name, params: p, info: info})
	}
	return out, nil
}

// splitmix64 is the row-ranking hash that peers.py reimplements bit for bit.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// peerSplit ranks n rows by seed, keeps the first subsample of the ranking (0: all) and
// cuts it 60/40 into train and test, each in file order. A ranking rather than Go's
// math/rand permutation, so that Python can draw exactly the same rows.
func peerSplit(n, subsample int, seed uint64) (train, test []int) {
	base := splitmix64(seed)
	keys := make([]uint64, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
		keys[i] = splitmix64(base + uint64(i))
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(keys[a], keys[b]) })
	if subsample > 0 && subsample < n {
		idx = idx[:subsample]
	}
	cut := int(math.Floor(0.6*float64(len(idx)) + 0.5))
	train, test = slices.Clone(idx[:cut]), slices.Clone(idx[cut:])
	slices.Sort(train)
	slices.Sort(test)
	return train, test
}

// singleThreaded runs fn with GOMAXPROCS 1, so that neither a detector's own goroutines
// nor the garbage collector's background workers borrow a second core: the Python peers
// are pinned to one thread too.
func singleThreaded(fn func() error) error {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	return fn()
}

func benchBatch(ctx context.Context, env *environment, path string, cands []eval.Candidate, subsample int, seed uint64, repeat int) ([]benchBatchResult, error) {
	ds, err := eval.LoadODDS(path)
	if err != nil {
		return nil, fmt.Errorf("--dataset: %w", err)
	}
	if subsample > ds.X.Rows {
		return nil, usageErr("--subsample %d: %s has only %d rows", subsample, ds.Name, ds.X.Rows)
	}
	trainIdx, testIdx := peerSplit(ds.X.Rows, subsample, seed)
	train, test := eval.Rows(ds.X, trainIdx), eval.Rows(ds.X, testIdx)
	eval.Standardize(train, test)
	labels := make([]int, len(testIdx))
	outliers := 0
	for i, r := range testIdx {
		labels[i] = ds.Labels[r]
		outliers += labels[i]
	}
	if outliers == 0 || outliers == len(labels) {
		return nil, fmt.Errorf("%s: the test part (%d rows) has %d outliers: ROC-AUC needs both classes; use more rows or another --seed",
			ds.Name, len(labels), outliers)
	}
	fmt.Fprintf(env.stderr, "bench detectors: %s %d×%d → train %d, test %d rows (%d outliers)\n",
		ds.Name, ds.X.Rows, ds.X.Cols, train.Rows, test.Rows, outliers)

	var out []benchBatchResult
	for _, c := range cands {
		r := benchBatchResult{
			Dataset: ds.Name, Subsample: subsample, Seed: seed, Detector: c.Name, Impl: "gonomaly." + c.Name,
			Params: c.Params, TrainRows: train.Rows, TestRows: test.Rows, Cols: train.Cols,
			TotalSeconds: math.Inf(1), CPUSeconds: math.Inf(1),
		}
		scores := make([]float64, test.Rows)
		for run := range repeat {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			det, err := c.New(c.Params, seed)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.Name, err)
			}
			if p, ok := det.(detectors.Parallel); ok {
				p.SetWorkers(1)
			}
			// Garbage from the previous run is collected now rather than billed to this one;
			// peers.py calls gc.collect() at the same point.
			runtime.GC()
			var fit, score, cpu time.Duration
			err = singleThreaded(func() error {
				c0 := bench.ProcessCPU()
				t0 := time.Now()
				if err := det.Fit(train); err != nil {
					return fmt.Errorf("%s on %s: fit: %w", c.Name, ds.Name, err)
				}
				t1 := time.Now()
				if err := det.Score(test, scores); err != nil {
					return fmt.Errorf("%s on %s: score: %w", c.Name, ds.Name, err)
				}
				fit, score = t1.Sub(t0), time.Since(t1)
				cpu = bench.ProcessCPU() - c0
				return nil
			})
			if err != nil {
				return nil, err
			}
			total := (fit + score).Seconds()
			r.RunsSeconds = append(r.RunsSeconds, total)
			if total < r.TotalSeconds {
				r.TotalSeconds, r.FitSeconds, r.ScoreSeconds = total, fit.Seconds(), score.Seconds()
			}
			r.CPUSeconds = min(r.CPUSeconds, cpu.Seconds())
			if run == 0 {
				for i, v := range scores {
					if math.IsNaN(v) {
						return nil, fmt.Errorf("%s on %s: data row %d scored NaN", c.Name, ds.Name, testIdx[i]+1)
					}
				}
				r.ROCAUC = detectors.ROCAUC(scores, labels)
			}
			fmt.Fprintf(env.stderr, "bench detectors: %s %s run %d/%d: fit %.3f s, score %.3f s\n",
				ds.Name, c.Name, run+1, repeat, fit.Seconds(), score.Seconds())
		}
		out = append(out, r)
	}
	return out, nil
}

// loadStreamSeries reads one NAB series with the eval loader, which takes a whole corpus:
// the series' root is two levels up (<root>/<category>/<name>.csv).
func loadStreamSeries(path, labels string) (*eval.NABSeries, error) {
	cat := filepath.Dir(path)
	root := filepath.Dir(cat)
	if labels == "" {
		labels = filepath.Join(root, "combined_windows.json")
	}
	corpus, err := eval.LoadNAB(root, labels)
	if err != nil {
		return nil, fmt.Errorf("--stream-series: %w", err)
	}
	key := filepath.Base(cat) + "/" + filepath.Base(path)
	for _, s := range corpus.Series {
		if s.Name == key {
			return s, nil
		}
	}
	return nil, usageErr("--stream-series %s: no series %s in the corpus at %s", path, key, root)
}

func benchStream(ctx context.Context, env *environment, path, labelsPath string, cands []streamCandidate, seed uint64, repeat int) ([]benchStreamResult, error) {
	s, err := loadStreamSeries(path, labelsPath)
	if err != nil {
		return nil, err
	}
	n := len(s.Values)
	labels := make([]int, n)
	positives := 0
	for _, w := range s.Windows {
		for i := w.Start; i <= w.End; i++ {
			labels[i] = 1
			positives++
		}
	}
	if positives == 0 || positives == n {
		return nil, usageErr("--stream-series %s: %d of %d rows are in anomaly windows; ROC-AUC needs both classes", s.Name, positives, n)
	}
	lo, hi := slices.Min(s.Values), slices.Max(s.Values)
	if hi == lo {
		return nil, usageErr("--stream-series %s: the series is constant", s.Name)
	}
	scaled := make([]float64, n)
	for i, v := range s.Values {
		scaled[i] = 2*(v-lo)/(hi-lo) - 1
	}
	fmt.Fprintf(env.stderr, "bench detectors: stream %s, %d records, %d in %d windows\n", s.Name, n, positives, len(s.Windows))

	var out []benchStreamResult
	scores := make([]float64, n)
	for _, c := range cands {
		r := benchStreamResult{Series: s.Name, Detector: c.name, Impl: "gonomaly." + c.name, Params: c.params, Records: n, Seconds: math.Inf(1), CPUSeconds: math.Inf(1)}
		for run := range repeat {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			det, err := c.info.NewStreaming(c.params, seed)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			runtime.GC()
			var elapsed, cpu time.Duration
			_ = singleThreaded(func() error {
				x := make([]float64, 1)
				c0 := bench.ProcessCPU()
				t0 := time.Now()
				for i, v := range scaled {
					x[0] = v
					scores[i] = det.ScoreLearn("series", x, nil)
				}
				elapsed = time.Since(t0)
				cpu = bench.ProcessCPU() - c0
				return nil
			})
			r.CPUSeconds = min(r.CPUSeconds, cpu.Seconds())
			sec := elapsed.Seconds()
			r.RunsSeconds = append(r.RunsSeconds, sec)
			if sec < r.Seconds {
				r.Seconds = sec
			}
			if run == 0 {
				r.ROCAUC = streamAUC(scores, labels)
			}
			fmt.Fprintf(env.stderr, "bench detectors: %s %s run %d/%d: %.3f s (%.0f updates/s)\n",
				s.Name, c.name, run+1, repeat, sec, float64(n)/sec)
		}
		r.UpdatesPerSec = float64(n) / r.Seconds
		out = append(out, r)
	}
	return out, nil
}

// streamAUC is ROC-AUC with warm-up NaNs ("no judgement") ranked below every score, as
// peers.py does: a detector is neither rewarded nor punished at random for its warm-up.
func streamAUC(scores []float64, labels []int) float64 {
	s := make([]float64, len(scores))
	for i, v := range scores {
		if math.IsNaN(v) {
			v = math.Inf(-1)
		}
		s[i] = v
	}
	return detectors.ROCAUC(s, labels)
}

func printBenchDetectors(env *environment, rep benchDetectorsReport) {
	fmt.Fprintf(env.stdout, "%s, 1 thread (GOMAXPROCS 1 while measuring), best of %d\n", rep.Runtime, rep.Repeat)
	if len(rep.Batch) > 0 {
		tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "dataset\tdetector\ttrain\ttest\tfit s\tscore s\ttotal s\tROC-AUC\t")
		for _, r := range rep.Batch {
			name := r.Dataset
			if r.Subsample > 0 {
				name = fmt.Sprintf("%s[%d]", name, r.Subsample)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.4f\t%.4f\t%.4f\t%.4f\t\n", name, r.Detector, r.TrainRows, r.TestRows,
				r.FitSeconds, r.ScoreSeconds, r.TotalSeconds, r.ROCAUC)
		}
		tw.Flush()
	}
	if len(rep.Stream) > 0 {
		tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "series\tdetector\trecords\tseconds\tupdates/s\tROC-AUC\t")
		for _, r := range rep.Stream {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.4f\t%.0f\t%.4f\t\n", r.Series, r.Detector, r.Records, r.Seconds, r.UpdatesPerSec, r.ROCAUC)
		}
		tw.Flush()
	}
}
