package detectors_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/eval"
)

// Tests shared by the distribution- and projection-based batch detectors: hbos, ecod,
// copod, pca, mcd and loda. Helpers carry a dp prefix to stay apart from other families'
// tests in this package.

var dpNames = []string{"hbos", "ecod", "copod", "pca", "mcd", "loda"}

var dpOddsDir = filepath.Join("..", "..", "shared", "data", "odds")

func dpLong() bool { return os.Getenv("GONOMALY_LONG") == "1" }

// dpLoad reads an ODDS dataset, skipping the test when the shared data is not there.
func dpLoad(tb testing.TB, name string) *eval.Dataset {
	tb.Helper()
	ds, err := eval.LoadODDS(filepath.Join(dpOddsDir, name+".csv"))
	if err != nil {
		tb.Skipf("dataset %s not available: %v", name, err)
	}
	return ds
}

// dpNew builds a registered detector with the given parameters (nil: defaults).
func dpNew(tb testing.TB, name string, given detectors.Params, seed uint64) detectors.Batch {
	tb.Helper()
	info, err := detectors.Lookup(name)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := info.Resolve(given)
	if err != nil {
		tb.Fatal(err)
	}
	det, err := info.NewBatch(p, seed)
	if err != nil {
		tb.Fatal(err)
	}
	return det
}

// dpGaussian is n rows of d independent standard normals.
func dpGaussian(n, d int, seed uint64) detectors.Matrix {
	rng := rand.New(rand.NewPCG(seed, 7))
	m := detectors.NewMatrix(n, d)
	for i := range m.Data {
		m.Data[i] = rng.NormFloat64()
	}
	return m
}

// dpRows builds a matrix from rows.
func dpRows(rows ...[]float64) detectors.Matrix {
	m := detectors.NewMatrix(len(rows), len(rows[0]))
	for i, r := range rows {
		copy(m.Row(i), r)
	}
	return m
}

// dpFitScore fits det on train and returns its scores of test.
func dpFitScore(tb testing.TB, det detectors.Batch, train, test detectors.Matrix) []float64 {
	tb.Helper()
	if err := det.Fit(train); err != nil {
		tb.Fatal(err)
	}
	out := make([]float64, test.Rows)
	if err := det.Score(test, out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func dpSameBits(a, b []float64) int {
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestDistributionRegistered(t *testing.T) {
	for _, name := range dpNames {
		info, err := detectors.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != detectors.KindBatch || info.NewBatch == nil || info.Doc == "" {
			t.Fatalf("%s: kind %q, constructor %v, doc %q", name, info.Kind, info.NewBatch != nil, info.Doc)
		}
		for _, p := range info.Params {
			if p.Doc == "" || p.Default < p.Min || p.Default > p.Max {
				t.Fatalf("%s.%s: undocumented or default %v outside [%v, %v]", name, p.Name, p.Default, p.Min, p.Max)
			}
		}
		det := dpNew(t, name, nil, 1)
		if _, ok := det.(detectors.Persistent); !ok {
			t.Errorf("%s is not Persistent", name)
		}
		if _, ok := det.(detectors.Parallel); !ok {
			t.Errorf("%s is not Parallel", name)
		}
		_, contributes := det.(detectors.Contributor)
		if want := name == "hbos" || name == "ecod" || name == "copod"; contributes != want {
			t.Errorf("%s: Contributor %v, want %v", name, contributes, want)
		}
	}
}

// TestDistributionParams: bad values fail in Resolve with the parameter and its range.
func TestDistributionParams(t *testing.T) {
	for _, tc := range []struct {
		detector string
		given    detectors.Params
		want     []string
	}{
		{"hbos", detectors.Params{"n_bins": 1}, []string{"n_bins", "[2, 10000]"}},
		{"hbos", detectors.Params{"n_bins": 10.5}, []string{"n_bins", "whole number"}},
		{"hbos", detectors.Params{"alpha": 0}, []string{"alpha", "[1e-12, 1]"}},
		{"hbos", detectors.Params{"tol": -1}, []string{"tol", "[0, 1000]"}},
		{"hbos", detectors.Params{"bins": 5}, []string{`"bins"`, "n_bins, alpha, tol"}},
		{"ecod", detectors.Params{"n_bins": 5}, []string{`"n_bins"`}},
		{"copod", detectors.Params{"alpha": 1}, []string{`"alpha"`}},
		{"pca", detectors.Params{"n_components": -1}, []string{"n_components", "[0, 100000]"}},
		{"pca", detectors.Params{"n_components": 1.5}, []string{"n_components", "whole number"}},
		{"mcd", detectors.Params{"support_fraction": 1.5}, []string{"support_fraction", "[0, 1]"}},
		{"mcd", detectors.Params{"support_fraction": math.NaN()}, []string{"support_fraction"}},
		{"mcd", detectors.Params{"trials": 0}, []string{"trials", "[1, 10000]"}},
		{"loda", detectors.Params{"n_bins": 1}, []string{"n_bins", "[2, 10000]"}},
		{"loda", detectors.Params{"n_random_cuts": 0}, []string{"n_random_cuts", "[1, 10000]"}},
	} {
		info, err := detectors.Lookup(tc.detector)
		if err != nil {
			t.Fatal(err)
		}
		_, err = info.Resolve(tc.given)
		if err == nil {
			t.Errorf("%s %v: accepted", tc.detector, tc.given)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s %v: error %q does not mention %q", tc.detector, tc.given, err, w)
			}
		}
	}
	// Values in range reach the detector.
	for _, tc := range []struct {
		detector string
		given    detectors.Params
	}{
		{"hbos", detectors.Params{"n_bins": 3, "alpha": 0.5, "tol": 0}},
		{"pca", detectors.Params{"n_components": 2}},
		{"mcd", detectors.Params{"support_fraction": 0.75, "trials": 5}},
		{"loda", detectors.Params{"n_bins": 20, "n_random_cuts": 7}},
	} {
		det := dpNew(t, tc.detector, tc.given, 1)
		if err := det.Fit(dpGaussian(200, 4, 3)); err != nil {
			t.Errorf("%s %v: %v", tc.detector, tc.given, err)
		}
	}
}

// TestDistributionOutlierScoresHighest: a row far out in both features scores strictly
// highest of a test set, for every detector and a few seeds. (Both, because hbos caps a
// feature's term at its sparsest bin's: a row far out in one feature can tie with a row in
// two tails.)
func TestDistributionOutlierScoresHighest(t *testing.T) {
	train := dpGaussian(500, 2, 1)
	test := dpGaussian(301, 2, 2)
	test.Row(50)[0], test.Row(50)[1] = -7, 8
	for _, name := range dpNames {
		for seed := range uint64(3) {
			out := dpFitScore(t, dpNew(t, name, nil, seed), train, test)
			for i, s := range out {
				if i != 50 && !(s < out[50]) {
					t.Fatalf("%s seed %d: row %d scored %v, the outlier %v", name, seed, i, s, out[50])
				}
				if !(s >= math.Inf(-1) && s <= math.MaxFloat64) {
					t.Fatalf("%s: row %d scored %v", name, i, s)
				}
			}
		}
	}
}

// TestDistributionDeterministic: the same seed gives the same scores bit for bit, and the
// seeded detectors give different models for different seeds.
func TestDistributionDeterministic(t *testing.T) {
	train, test := dpGaussian(2000, 6, 3), dpGaussian(500, 6, 4)
	for _, name := range dpNames {
		a := dpFitScore(t, dpNew(t, name, nil, 11), train, test)
		b := dpFitScore(t, dpNew(t, name, nil, 11), train, test)
		if i := dpSameBits(a, b); i >= 0 {
			t.Fatalf("%s: row %d scored %v then %v with the same seed", name, i, a[i], b[i])
		}
		c := dpFitScore(t, dpNew(t, name, nil, 12), train, test)
		if name == "loda" && dpSameBits(a, c) < 0 {
			t.Fatalf("%s: seeds 11 and 12 gave the same scores", name)
		}
	}
}

// TestDistributionParallelMatchesSerial: scoring rows on several goroutines changes no bit.
func TestDistributionParallelMatchesSerial(t *testing.T) {
	train, test := dpGaussian(1500, 5, 5), dpGaussian(3001, 5, 6)
	for _, name := range dpNames {
		det := dpNew(t, name, nil, 1)
		serial := dpFitScore(t, det, train, test)
		for _, w := range []int{2, 3, 16} {
			det.(detectors.Parallel).SetWorkers(w)
			par := make([]float64, test.Rows)
			if err := det.Score(test, par); err != nil {
				t.Fatal(err)
			}
			if i := dpSameBits(serial, par); i >= 0 {
				t.Fatalf("%s, %d workers: row %d scored %v, serially %v", name, w, i, par[i], serial[i])
			}
		}
	}
}

// TestDistributionPersistence: a restored model scores (and attributes) exactly as the
// original, re-encodes to the same bytes, and corrupt encodings fail with errors.
func TestDistributionPersistence(t *testing.T) {
	train, test := dpGaussian(800, 5, 7), dpGaussian(300, 5, 8)
	test.Row(3)[1] = 9
	for _, name := range dpNames {
		t.Run(name, func(t *testing.T) {
			orig := dpNew(t, name, nil, 21)
			want := dpFitScore(t, orig, train, test)
			data, err := orig.(detectors.Persistent).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			// A different seed and workers: everything that scores must come from the bytes.
			restored := dpNew(t, name, nil, 99)
			restored.(detectors.Parallel).SetWorkers(2)
			if err := restored.(detectors.Persistent).UnmarshalBinary(data); err != nil {
				t.Fatal(err)
			}
			got := make([]float64, test.Rows)
			if err := restored.Score(test, got); err != nil {
				t.Fatal(err)
			}
			if i := dpSameBits(want, got); i >= 0 {
				t.Fatalf("row %d: restored %v, original %v", i, got[i], want[i])
			}
			if again, _ := restored.(detectors.Persistent).MarshalBinary(); !bytes.Equal(again, data) {
				t.Fatal("restored model encodes differently")
			}
			if c, ok := orig.(detectors.Contributor); ok {
				a, b := make([]float64, 5), make([]float64, 5)
				if err := c.Contributions(test.Row(3), a); err != nil {
					t.Fatal(err)
				}
				if err := restored.(detectors.Contributor).Contributions(test.Row(3), b); err != nil {
					t.Fatal(err)
				}
				if i := dpSameBits(a, b); i >= 0 {
					t.Fatalf("contribution %d: restored %v, original %v", i, b[i], a[i])
				}
			}

			fresh := func() detectors.Persistent { return dpNew(t, name, nil, 1).(detectors.Persistent) }
			if _, err := fresh().MarshalBinary(); err == nil || !strings.Contains(err.Error(), "not fitted") {
				t.Errorf("marshal before fit: %v", err)
			}
			bad := append([]byte{99}, data[1:]...)
			if err := fresh().UnmarshalBinary(bad); err == nil || !strings.Contains(err.Error(), "version 99") {
				t.Errorf("unknown version: %v", err)
			}
			for cut := 0; cut < len(data); cut += 1 + cut/64 { // every byte of the header, then samples
				if err := fresh().UnmarshalBinary(data[:cut]); err == nil {
					t.Fatalf("truncated to %d of %d bytes: accepted", cut, len(data))
				}
			}
			if err := fresh().UnmarshalBinary(append(bytes.Clone(data), 0)); err == nil || !strings.Contains(err.Error(), "unexpected bytes") {
				t.Errorf("trailing byte: %v", err)
			}
			// A failed decode leaves a fitted model as it was.
			if err := restored.(detectors.Persistent).UnmarshalBinary(data[:len(data)/2]); err == nil {
				t.Fatal("half an encoding accepted")
			}
			if err := restored.Score(test, got); err != nil || dpSameBits(want, got) >= 0 {
				t.Fatalf("a failed decode changed the model: %v", err)
			}
		})
	}
}

// TestDistributionBadShapes: malformed input fails with an error naming the problem.
func TestDistributionBadShapes(t *testing.T) {
	train := dpGaussian(100, 3, 9)
	nan := dpGaussian(100, 3, 9)
	nan.Row(4)[2] = math.NaN()
	inf := dpGaussian(10, 3, 9)
	inf.Row(1)[0] = math.Inf(-1)
	for _, name := range dpNames {
		det := dpNew(t, name, nil, 1)
		out := make([]float64, 10)
		for _, tc := range []struct {
			what string
			err  error
			want string
		}{
			{"score before fit", det.Score(dpGaussian(10, 3, 1), out), "not fitted"},
			{"empty", det.Fit(detectors.Matrix{}), "empty"},
			{"short data", det.Fit(detectors.Matrix{Rows: 3, Cols: 3, Data: make([]float64, 8)}), "holds 8 values"},
			{"NaN", det.Fit(nan), "row 4, column 2"},
		} {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !strings.HasPrefix(tc.err.Error(), name+":") {
				t.Errorf("%s, %s: error %v, want one starting %q and naming %q", name, tc.what, tc.err, name, tc.want)
			}
		}
		if err := det.Fit(train); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			what string
			err  error
			want string
		}{
			{"columns", det.Score(dpGaussian(10, 4, 1), out), "4 columns"},
			{"out", det.Score(dpGaussian(11, 3, 1), out), "11 rows"},
			{"Inf", det.Score(inf, out), "row 1, column 0"},
		} {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("%s, %s: error %v, want one naming %q", name, tc.what, tc.err, tc.want)
			}
		}
		if c, ok := det.(detectors.Contributor); ok {
			for _, tc := range []struct {
				x, contrib []float64
				want       string
			}{
				{[]float64{1, 2}, make([]float64, 2), "x has 2 features"},
				{[]float64{1, 2, 3}, make([]float64, 4), "contrib has 4 values"},
				{[]float64{1, math.NaN(), 3}, make([]float64, 3), "feature 1"},
			} {
				if err := c.Contributions(tc.x, tc.contrib); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s contributions %v: error %v, want one naming %q", name, tc.x, err, tc.want)
				}
			}
		}
	}
}

// TestDistributionOddData: constant columns, a single row and huge values fit and score
// without NaN (or fail with an error), never panic.
func TestDistributionOddData(t *testing.T) {
	constant := dpGaussian(300, 3, 10)
	for i := range constant.Rows {
		constant.Row(i)[1] = 5
	}
	huge := dpGaussian(50, 2, 11)
	for i := range huge.Data {
		huge.Data[i] *= 1e300
	}
	for _, name := range dpNames {
		det := dpNew(t, name, nil, 1)
		test := dpRows([]float64{0, 5, 0}, []float64{0, 6, 0}, []float64{40, 5, -40})
		out := dpFitScore(t, det, constant, test)
		for i, s := range out {
			if math.IsNaN(s) {
				t.Errorf("%s, constant column: row %d scored NaN", name, i)
			}
		}
		if !(out[1] > out[0]) || !(out[2] > out[0]) {
			t.Errorf("%s, constant column: scores %v, want rows 1 and 2 above row 0", name, out)
		}
		// Values near the float64 limit: an error, or a model, but a failed Fit leaves the
		// fitted model as it was.
		if err := det.Fit(huge); err != nil {
			if !strings.HasPrefix(err.Error(), name+":") {
				t.Errorf("%s, huge values: error %v", name, err)
			}
			again := make([]float64, test.Rows)
			if err := det.Score(test, again); err != nil || dpSameBits(out, again) >= 0 {
				t.Errorf("%s: a failed Fit changed the model (%v)", name, err)
			}
		}
	}
	// One row: the marginal detectors manage; the covariance-based ones need more.
	one := dpRows([]float64{1, 2})
	for _, name := range dpNames {
		err := dpNew(t, name, nil, 1).Fit(one)
		if (err != nil) != (name == "pca" || name == "mcd") {
			t.Errorf("%s on one row: %v", name, err)
		}
	}
}

// dpPublished is PyOD's published ROC-AUC (10-trial mean; ECOD, COPOD, LODA single-split)
// on cardio, satellite, shuttle, pendigits, which hbos, ecod and copod must come within
// 0.02 of. pca, mcd and loda are held to our own 10-seed figures less the slack, to catch
// regressions: PyOD's pca figures measure another formula (see PCA), and its loda figures
// come from a single split (ours are above them on three datasets of four).
var dpPublished = map[string][4]float64{
	"hbos":  {.835, .758, .986, .924},
	"ecod":  {.936, .581, .993, .927},
	"copod": {.921, .633, .994, .905},
}

// dpMeasured are our 10-seed figures for the detectors without a required target.
var dpMeasured = map[string][4]float64{
	"pca":  {.891, .642, .982, .767},
	"mcd":  {.815, .808, .990, .841},
	"loda": {.908, .687, .989, .945},
}

var dpDatasets = [4]string{"cardio", "satellite", "shuttle", "pendigits"}

// TestDistributionQuality runs PyOD's protocol. Short (make test, under -race): two seeds
// on the two smaller datasets, mcd on cardio only, with 0.05 of slack for the few seeds.
// GONOMALY_LONG=1: ten seeds on all four, 0.02 of slack.
func TestDistributionQuality(t *testing.T) {
	seeds, slack := 2, 0.05
	if dpLong() {
		seeds, slack = 10, 0.02
	}
	for k, dsName := range dpDatasets {
		if !dpLong() && (dsName == "satellite" || dsName == "shuttle") {
			continue
		}
		ds := dpLoad(t, dsName)
		for _, name := range dpNames {
			if name == "mcd" && !dpLong() && dsName != "cardio" {
				continue // a few hundred ms per fit under -race
			}
			ref, required := dpPublished[name]
			if !required {
				ref = dpMeasured[name]
			}
			res, err := eval.PyOD(ds, func(seed uint64) (detectors.Batch, error) {
				return dpNew(t, name, nil, seed), nil
			}, seeds)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%-9s %-5s ROC-AUC %.3f (reference %.3f) precision@n %.3f fit %.1f ms score %.1f ms",
				dsName, name, res.ROCAUC, ref[k], res.PrecisionAtN, 1e3*res.FitSeconds, 1e3*res.ScoreSeconds)
			if res.ROCAUC < ref[k]-slack {
				t.Errorf("%s on %s: ROC-AUC %.3f, want at least %.3f − %.2f", name, dsName, res.ROCAUC, ref[k], slack)
			}
		}
	}
}

// FuzzDistributionUnmarshal feeds every detector of the family corrupt encodings: the
// first byte picks the detector. A decode must fail with an error or give a model that
// encodes to the same bytes and scores without panicking.
func FuzzDistributionUnmarshal(f *testing.F) {
	train := dpGaussian(40, 3, 1)
	for k, name := range dpNames {
		det := dpNew(f, name, detectors.Params(nil), 1)
		if name == "hbos" || name == "loda" {
			det = dpNew(f, name, detectors.Params{"n_bins": 3}, 1)
		}
		if name == "loda" {
			det = dpNew(f, name, detectors.Params{"n_bins": 3, "n_random_cuts": 2}, 1)
		}
		if err := det.Fit(train); err != nil {
			f.Fatal(err)
		}
		data, err := det.(detectors.Persistent).MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(k)}, data...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		name := dpNames[int(in[0])%len(dpNames)]
		det := dpNew(t, name, nil, 1)
		p := det.(detectors.Persistent)
		if err := p.UnmarshalBinary(in[1:]); err != nil {
			if !strings.HasPrefix(err.Error(), name+":") {
				t.Fatalf("error %q does not name %s", err, name)
			}
			return
		}
		again, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(again, in[1:]) {
			t.Fatalf("decoded model re-encodes differently (%v)", err)
		}
		for cols := 1; cols <= 4; cols++ {
			X := dpGaussian(3, cols, 2)
			_ = det.Score(X, make([]float64, 3))
			if c, ok := det.(detectors.Contributor); ok {
				_ = c.Contributions(X.Row(0), make([]float64, cols))
			}
		}
	})
}

// dpBenchShuttle measures fit on 60% of shuttle and scoring the other 40%, as PyOD's
// protocol splits it, serially and on two workers.
func dpBenchShuttle(b *testing.B, name string) {
	ds := dpLoad(b, "shuttle")
	trainIdx, testIdx := eval.Split(ds.X.Rows, 0.6, 0)
	train, test := eval.Rows(ds.X, trainIdx), eval.Rows(ds.X, testIdx)
	eval.Standardize(train, test)
	b.Run("fit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := dpNew(b, name, nil, 0).Fit(train); err != nil {
				b.Fatal(err)
			}
		}
	})
	det := dpNew(b, name, nil, 0)
	if err := det.Fit(train); err != nil {
		b.Fatal(err)
	}
	out := make([]float64, test.Rows)
	for _, workers := range []int{1, 2} {
		b.Run("score/workers="+string(rune('0'+workers)), func(b *testing.B) {
			det.(detectors.Parallel).SetWorkers(workers)
			b.ReportAllocs()
			for b.Loop() {
				if err := det.Score(test, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(test.Rows), "ns/row")
		})
	}
}
