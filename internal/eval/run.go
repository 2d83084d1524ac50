package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
)

// Candidate is a batch detector ready to be evaluated: its registry entry with the
// parameters resolved.
type Candidate struct {
	Name   string
	Params detectors.Params
	New    func(p detectors.Params, seed uint64) (detectors.Batch, error)
}

// BatchDetectorNames lists the registered batch detectors, sorted.
func BatchDetectorNames() []string {
	var names []string
	for _, info := range detectors.List() {
		if info.Kind == detectors.KindBatch && info.NewBatch != nil {
			names = append(names, info.Name)
		}
	}
	return names
}

// BatchCandidates resolves detector names (none: every registered batch detector) and
// parameter overrides by detector into candidates, in the order given. Every error is
// the caller's mistake: an unknown or non-batch detector, a name given twice, an override
// of a detector not evaluated, or a parameter Resolve rejects.
func BatchCandidates(names []string, overrides map[string]detectors.Params) ([]Candidate, error) {
	known := BatchDetectorNames()
	if len(names) == 0 {
		names = known
		if len(names) == 0 {
			return nil, errors.New("no batch detectors are registered")
		}
	}
	out := make([]Candidate, 0, len(names))
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			return nil, fmt.Errorf("detector %q is listed twice", name)
		}
		seen[name] = true
		info, err := detectors.Lookup(name)
		if err != nil || info.Kind != detectors.KindBatch || info.NewBatch == nil {
			return nil, fmt.Errorf("unknown batch detector %q (known: %s)", name, listOrNone(known))
		}
		p, err := info.Resolve(overrides[name])
		if err != nil {
			return nil, err
		}
		out = append(out, Candidate{Name: name, Params: p, New: info.NewBatch})
	}
	for _, name := range sortedNames(overrides) {
		if !seen[name] {
			return nil, fmt.Errorf("parameters given for %s, which is not among the detectors evaluated (%s)", name, strings.Join(names, ", "))
		}
	}
	return out, nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none registered"
	}
	return strings.Join(names, ", ")
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ParseOverrides parses parameter overrides of the form detector.param=value (as given
// to --param) into parameters by detector. Ranges are checked later, by Resolve.
func ParseOverrides(specs []string) (map[string]detectors.Params, error) {
	out := map[string]detectors.Params{}
	for _, s := range specs {
		key, val, ok := strings.Cut(s, "=")
		det, param, dot := strings.Cut(strings.TrimSpace(key), ".")
		if !ok || !dot || det == "" || param == "" {
			return nil, fmt.Errorf("%q: want detector.param=value, e.g. iforest.trees=200", s)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %q is not a number", s, val)
		}
		if out[det] == nil {
			out[det] = detectors.Params{}
		}
		if _, dup := out[det][param]; dup {
			return nil, fmt.Errorf("%q: %s.%s is given twice", s, det, param)
		}
		out[det][param] = v
	}
	return out, nil
}

// DatasetFile is one dataset in a directory: its name is the file name without .csv or
// .csv.gz.
type DatasetFile struct {
	Name, Path string
}

// DatasetFiles lists the .csv and .csv.gz files of dir, sorted by name, keeping only the
// named ones when names is not empty. An unknown name is an error listing those present.
func DatasetFiles(dir string, names []string) ([]DatasetFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	byName := map[string]DatasetFile{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		base := e.Name()
		name, ok := strings.CutSuffix(strings.TrimSuffix(base, ".gz"), ".csv")
		if !ok || name == "" {
			continue
		}
		if prev, dup := byName[name]; dup {
			return nil, fmt.Errorf("%s: dataset %s is in both %s and %s", dir, name, filepath.Base(prev.Path), base)
		}
		byName[name] = DatasetFile{Name: name, Path: filepath.Join(dir, base)}
	}
	all := sortedNames(byName)
	if len(all) == 0 {
		return nil, fmt.Errorf("%s: no .csv or .csv.gz files", dir)
	}
	if len(names) == 0 {
		names = all
	}
	out := make([]DatasetFile, 0, len(names))
	for _, n := range names {
		f, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("%s: no dataset %q (present: %s)", dir, n, strings.Join(all, ", "))
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b DatasetFile) int { return strings.Compare(a.Name, b.Name) })
	out = slices.CompactFunc(out, func(a, b DatasetFile) bool { return a.Name == b.Name })
	return out, nil
}

// Result is one detector's mean over the seeds of PyOD's protocol on one dataset. The
// seconds are per seed. A failed evaluation has Error set and NaN metrics.
type Result struct {
	Dataset      string  `json:"dataset"`
	Detector     string  `json:"detector"`
	ROCAUC       float64 `json:"roc_auc"`
	PrecisionAtN float64 `json:"precision_at_n"`
	FitSeconds   float64 `json:"fit_seconds"`
	ScoreSeconds float64 `json:"score_seconds"`
	Rows         int     `json:"rows"`
	Cols         int     `json:"cols"`
	Seeds        int     `json:"seeds"`
	Error        string  `json:"error,omitempty"`
}

// MarshalJSON writes NaN metrics (a failed run, or test parts without an outlier) as
// null, which encoding/json would otherwise refuse.
func (r Result) MarshalJSON() ([]byte, error) {
	// Mirrors Result field by field, so that the keys keep their documented order.
	return json.Marshal(struct {
		Dataset      string   `json:"dataset"`
		Detector     string   `json:"detector"`
		ROCAUC       *float64 `json:"roc_auc"`
		PrecisionAtN *float64 `json:"precision_at_n"`
		FitSeconds   float64  `json:"fit_seconds"`
		ScoreSeconds float64  `json:"score_seconds"`
		Rows         int      `json:"rows"`
		Cols         int      `json:"cols"`
		Seeds        int      `json:"seeds"`
		Error        string   `json:"error,omitempty"`
	}{r.Dataset, r.Detector, finiteOrNil(r.ROCAUC), finiteOrNil(r.PrecisionAtN), r.FitSeconds, r.ScoreSeconds, r.Rows, r.Cols, r.Seeds, r.Error})
}

func finiteOrNil(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Progress reports one finished evaluation of a detector on a dataset.
type Progress struct {
	Dataset, Detector string
	// Seconds is the wall time of all seeds, including splitting and standardising.
	Seconds     float64
	Done, Total int
	Result      Result
}

// ODDSConfig says how to run PyOD's benchmark protocol.
type ODDSConfig struct {
	Detectors []Candidate
	// Seeds is the number of random 60/40 splits (seeds 0..Seeds-1) averaged; 0 means 10.
	Seeds int
	// Workers is how many goroutines a Parallel detector may use; 0 means GOMAXPROCS.
	// Evaluations themselves run one at a time so that their timings do not inflate each
	// other.
	Workers int
	// Progress, when set, is called after each detector finishes on a dataset.
	Progress func(Progress)
}

// RunODDSFiles loads every file first, so that a bad file fails the run before hours
// are spent on the good ones, then runs RunODDS.
func RunODDSFiles(ctx context.Context, cfg ODDSConfig, files []DatasetFile) ([]Result, error) {
	datasets := make([]*Dataset, 0, len(files))
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ds, err := LoadODDS(f.Path)
		if err != nil {
			return nil, err
		}
		ds.Name = f.Name
		datasets = append(datasets, ds)
	}
	return RunODDS(ctx, cfg, datasets)
}

// RunODDS evaluates every candidate on every dataset under PyOD's protocol and returns
// one Result per pair, datasets outer, in the order given. A detector that fails on a
// dataset yields a Result with Error set and the run goes on; the returned error is for
// what stops the whole run: a dataset that cannot be evaluated, or ctx ending (the
// results so far are returned with it).
func RunODDS(ctx context.Context, cfg ODDSConfig, datasets []*Dataset) ([]Result, error) {
	if cfg.Seeds == 0 {
		cfg.Seeds = 10
	}
	if cfg.Seeds < 0 {
		return nil, fmt.Errorf("seeds = %d must be positive", cfg.Seeds)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if len(cfg.Detectors) == 0 {
		return nil, errors.New("no detectors to evaluate")
	}
	for _, ds := range datasets {
		if err := checkDataset(ds); err != nil {
			return nil, err
		}
	}
	total := len(datasets) * len(cfg.Detectors)
	results := make([]Result, 0, total)
	for _, ds := range datasets {
		for _, c := range cfg.Detectors {
			start := time.Now()
			r, err := evaluate(ctx, ds, c, cfg.Seeds, cfg.Workers)
			if err != nil && ctx.Err() != nil {
				return results, ctx.Err()
			}
			results = append(results, r)
			if cfg.Progress != nil {
				cfg.Progress(Progress{
					Dataset: ds.Name, Detector: c.Name, Seconds: time.Since(start).Seconds(),
					Done: len(results), Total: total, Result: r,
				})
			}
		}
	}
	return results, nil
}

// checkDataset rejects what no detector could be measured on.
func checkDataset(ds *Dataset) error {
	if err := ds.X.Check(); err != nil {
		return fmt.Errorf("dataset %s: %w", ds.Name, err)
	}
	if len(ds.Labels) != ds.X.Rows {
		return fmt.Errorf("dataset %s: %d labels for %d rows", ds.Name, len(ds.Labels), ds.X.Rows)
	}
	outliers := 0
	for _, l := range ds.Labels {
		outliers += l
	}
	if outliers == 0 || outliers == ds.X.Rows {
		return fmt.Errorf("dataset %s: ROC-AUC needs both outliers and inliers (%d outliers in %d rows)", ds.Name, outliers, ds.X.Rows)
	}
	if ds.X.Rows < 5 {
		return fmt.Errorf("dataset %s: %d rows are too few for a 60/40 split", ds.Name, ds.X.Rows)
	}
	return nil
}

// evaluate runs the seeds of one detector on one dataset. The metrics are means over the
// seeds whose test part holds both classes (a small dataset can draw a test part without
// an outlier), NaN when none does.
func evaluate(ctx context.Context, ds *Dataset, c Candidate, seeds, workers int) (Result, error) {
	r := Result{Dataset: ds.Name, Detector: c.Name, Rows: ds.X.Rows, Cols: ds.X.Cols, Seeds: seeds}
	newDet := func(seed uint64) (detectors.Batch, error) {
		d, err := c.New(c.Params, seed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		if p, ok := d.(detectors.Parallel); ok {
			p.SetWorkers(workers)
		}
		return d, nil
	}
	start := time.Now()
	clock := func() float64 { return time.Since(start).Seconds() }
	var auc, prec, fit, score float64
	var measured int
	for s := range seeds {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		t, err := PyODTrial(ds, newDet, uint64(s), clock)
		if err != nil {
			r.ROCAUC, r.PrecisionAtN = math.NaN(), math.NaN()
			r.Error = fmt.Sprintf("seed %d: %v", s, err)
			return r, err
		}
		fit += t.FitSeconds
		score += t.ScoreSeconds
		if !math.IsNaN(t.ROCAUC) {
			auc += t.ROCAUC
			prec += t.PrecisionAtN
			measured++
		}
	}
	r.FitSeconds, r.ScoreSeconds = fit/float64(seeds), score/float64(seeds)
	r.ROCAUC, r.PrecisionAtN = math.NaN(), math.NaN()
	if measured > 0 {
		r.ROCAUC, r.PrecisionAtN = auc/float64(measured), prec/float64(measured)
	}
	return r, nil
}

// Failed returns the results that carry an error.
func Failed(results []Result) []Result {
	var out []Result
	for _, r := range results {
		if r.Error != "" {
			out = append(out, r)
		}
	}
	return out
}
