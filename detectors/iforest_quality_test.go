package detectors_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/eval"
)

// isoOddsDir is the shared ODDS folder as seen from the detectors package.
var isoOddsDir = filepath.Join("..", "..", "shared", "data", "odds")

// isoLongRun gates the full checks: all ten PyOD splits and the paper's big datasets.
func isoLongRun() bool { return os.Getenv("GONOMALY_LONG") == "1" }

func isoLoadODDS(tb testing.TB, file string) *eval.Dataset {
	tb.Helper()
	path := filepath.Join(isoOddsDir, file)
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("%s: %v", file, err)
	}
	ds, err := eval.LoadODDS(path)
	if err != nil {
		tb.Fatal(err)
	}
	return ds
}

// isoNewDetector builds a registered batch detector with the given parameters for a seed.
func isoNewDetector(tb testing.TB, name string, given detectors.Params) eval.NewBatchFunc {
	tb.Helper()
	info, err := detectors.Lookup(name)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := info.Resolve(given)
	if err != nil {
		tb.Fatal(err)
	}
	return func(seed uint64) (detectors.Batch, error) { return info.NewBatch(p, seed) }
}

// isoPyOD is PyOD's published IForest ROC-AUC (docs/tables/roc.csv, 10-split means).
// quick marks the datasets that `make test` checks, on two splits: small enough to stay
// fast under -race. GONOMALY_LONG=1 checks all of them on PyOD's ten splits.
var isoPyOD = []struct {
	file  string
	auc   float64
	quick bool
}{
	{"cardio.csv", .921, true},
	{"satellite.csv", .702, false},
	{"shuttle.csv", .997, false},
	{"pendigits.csv", .944, true},
}

// TestIsolationForestsMatchPyOD: under PyOD's protocol both forests must be within 0.02
// of PyOD's IForest or above it.
func TestIsolationForestsMatchPyOD(t *testing.T) {
	seeds := 2
	if isoLongRun() {
		seeds = 10
	}
	for _, ds := range isoPyOD {
		if !ds.quick && !isoLongRun() {
			continue
		}
		data := isoLoadODDS(t, ds.file)
		for _, name := range []string{"iforest", "eif"} {
			res, err := eval.PyOD(data, isoNewDetector(t, name, nil), seeds)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-9s %-8s ROC-AUC %.3f (PyOD IForest %.3f), precision@n %.3f, %d splits",
				data.Name, name, res.ROCAUC, ds.auc, res.PrecisionAtN, seeds)
			if res.ROCAUC < ds.auc-0.02 {
				t.Errorf("%s %s: ROC-AUC %.3f, more than 0.02 below PyOD's %.3f", data.Name, name, res.ROCAUC, ds.auc)
			}
		}
	}
}

// TestIsolationForestPaper: fit and score the whole dataset (no split, raw features), as
// in Liu, Ting & Zhou (2008) Table 3, averaged over three seeds; iforest must be within
// 0.03 of the paper. EIF is only reported: the paper has no figures for it, and its
// oblique cuts on raw, unscaled features (annthyroid) are at a disadvantage.
// GONOMALY_LONG=1 only: the whole-data fits are too slow for -race.
func TestIsolationForestPaper(t *testing.T) {
	if !isoLongRun() {
		t.Skip("set GONOMALY_LONG=1 to compare with the Isolation Forest paper")
	}
	for _, tc := range []struct {
		file string
		auc  float64
	}{
		{"http.csv.gz", 1.00},
		{"cover.csv.gz", 0.88},
		{"smtp.csv.gz", 0.88},
		{"shuttle.csv", 1.00},
		{"mammography.csv", 0.86},
		{"annthyroid.csv", 0.82},
		{"satellite.csv", 0.71},
	} {
		data := isoLoadODDS(t, tc.file)
		for _, name := range []string{"iforest", "eif"} {
			const seeds = 3
			mean := 0.0
			for seed := range uint64(seeds) {
				det, err := isoNewDetector(t, name, nil)(seed)
				if err != nil {
					t.Fatal(err)
				}
				det.(detectors.Parallel).SetWorkers(2)
				if err := det.Fit(data.X); err != nil {
					t.Fatal(err)
				}
				scores := make([]float64, data.X.Rows)
				if err := det.Score(data.X, scores); err != nil {
					t.Fatal(err)
				}
				mean += detectors.ROCAUC(scores, data.Labels) / seeds
			}
			t.Logf("%-11s %-8s ROC-AUC %.3f (paper iForest %.2f)", data.Name, name, mean, tc.auc)
			if name == "iforest" && mean < tc.auc-0.03 {
				t.Errorf("%s %s: ROC-AUC %.3f, more than 0.03 below the paper's %.2f", data.Name, name, mean, tc.auc)
			}
		}
	}
}

// BenchmarkIForestShuttle is the target: fit 100 trees of 256 samples on all of
// shuttle (49,097 × 9) and score every row, in ≤ 0.25 s on one core.
func BenchmarkIForestShuttle(b *testing.B) {
	data := isoLoadODDS(b, "shuttle.csv")
	info, err := detectors.Lookup("iforest")
	if err != nil {
		b.Fatal(err)
	}
	p, _ := info.Resolve(nil)
	scores := make([]float64, data.X.Rows)
	b.ReportAllocs()
	detectors.ReportCPU(b)
	for i := 0; b.Loop(); i++ {
		det, err := info.NewBatch(p, uint64(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := det.Fit(data.X); err != nil {
			b.Fatal(err)
		}
		if err := det.Score(data.X, scores); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(data.X.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
