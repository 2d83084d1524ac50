package detectors_test

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func newKNN(t testing.TB, k int, method detectors.KNNMethod, standardize bool) *detectors.KNN {
	t.Helper()
	m, err := detectors.NewKNN(detectors.KNNConfig{Neighbors: k, Method: method, Standardize: standardize})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// neighborsBlobs returns n rows of d features in three Gaussian clusters of different
// spreads, from a fixed seed.
func neighborsBlobs(n, d int, seed uint64) detectors.Matrix {
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	X := detectors.NewMatrix(n, d)
	centres := []float64{-6, 0, 5}
	spreads := []float64{0.5, 1, 2}
	for i := range n {
		c := rng.IntN(3)
		for j := range d {
			X.Row(i)[j] = centres[c] + spreads[c]*rng.NormFloat64()
		}
	}
	return X
}

// scoreAll fits m on train and returns its scores for test.
func scoreAll(t testing.TB, m detectors.Batch, train, test detectors.Matrix) []float64 {
	t.Helper()
	if err := m.Fit(train); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, test.Rows)
	if err := m.Score(test, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func rowsMatrix(rows ...[]float64) detectors.Matrix {
	X := detectors.NewMatrix(len(rows), len(rows[0]))
	for i, r := range rows {
		copy(X.Row(i), r)
	}
	return X
}

func TestKNNHandComputed(t *testing.T) {
	train := rowsMatrix([]float64{0}, []float64{1}, []float64{2}, []float64{3}, []float64{10})
	test := rowsMatrix([]float64{5}, []float64{1}, []float64{10})
	for _, tc := range []struct {
		k      int
		method detectors.KNNMethod
		want   []float64
	}{
		{2, detectors.KNNLargest, []float64{3, 1, 7}},    // 5: neighbours 3 (2), 2 (3)
		{2, detectors.KNNMean, []float64{2.5, 0.5, 3.5}}, // 1: itself (0), then 0 or 2 (1)
		{3, detectors.KNNMedian, []float64{3, 1, 7}},     // 10: itself, 3 (7), 2 (8)
		{4, detectors.KNNMedian, []float64{3.5, 1, 7.5}}, // even k: mean of the middle two
		{1, detectors.KNNLargest, []float64{2, 0, 0}},    // k = 1: the nearest
		{5, detectors.KNNMean, []float64{3.8, 2.6, 6.8}},
	} {
		got := scoreAll(t, newKNN(t, tc.k, tc.method, false), train, test)
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > 1e-12 {
				t.Errorf("k=%d method=%d: scores %v, want %v", tc.k, tc.method, got, tc.want)
				break
			}
		}
	}
}

// TestNeighborsIsolatedPointScoresHighest: a point far from three clusters outscores
// every cluster member, for every knn method and for lof.
func TestNeighborsIsolatedPointScoresHighest(t *testing.T) {
	train := neighborsBlobs(600, 4, 1)
	test := neighborsBlobs(200, 4, 2)
	copy(test.Row(77), []float64{-1, 12, -8, 3})
	models := map[string]detectors.Batch{
		"knn largest": newKNN(t, 5, detectors.KNNLargest, true),
		"knn mean":    newKNN(t, 5, detectors.KNNMean, true),
		"knn median":  newKNN(t, 5, detectors.KNNMedian, false),
		"lof":         newLOF(t, 20, true),
	}
	for name, m := range models {
		scores := scoreAll(t, m, train, test)
		if best := argmax(scores); best != 77 {
			t.Errorf("%s: row %d scores highest (%v), not the isolated row 77 (%v)", name, best, scores[best], scores[77])
		}
	}
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestKNNDeterministicAcrossWorkers: a refit gives the same scores, bit for bit, and so
// does scoring on several goroutines.
func TestKNNDeterministicAcrossWorkers(t *testing.T) {
	train, test := neighborsBlobs(2000, 6, 3), neighborsBlobs(1500, 6, 4)
	want := scoreAll(t, newKNN(t, 7, detectors.KNNMean, true), train, test)
	for _, w := range []int{0, 1, 2, 5} {
		m := newKNN(t, 7, detectors.KNNMean, true)
		m.SetWorkers(w)
		if got := scoreAll(t, m, train, test); !slices.Equal(got, want) {
			t.Fatalf("workers = %d: scores differ", w)
		}
	}
}

// TestKNNStandardizeIgnoresUnits: with standardize, rescaling a feature leaves the
// ranking alone; without it, the large feature dominates.
func TestKNNStandardizeIgnoresUnits(t *testing.T) {
	train, test := neighborsBlobs(500, 3, 5), neighborsBlobs(300, 3, 6)
	base := scoreAll(t, newKNN(t, 5, detectors.KNNLargest, true), train, test)
	for _, X := range []detectors.Matrix{train, test} {
		for i := range X.Rows {
			X.Row(i)[1] = 1000*X.Row(i)[1] + 7
		}
	}
	scaled := scoreAll(t, newKNN(t, 5, detectors.KNNLargest, true), train, test)
	for i := range base {
		if math.Abs(scaled[i]-base[i]) > 1e-9*(1+base[i]) {
			t.Fatalf("row %d: %v after rescaling a feature, %v before", i, scaled[i], base[i])
		}
	}
	raw := scoreAll(t, newKNN(t, 5, detectors.KNNLargest, false), train, test)
	if slices.Max(raw) < 100 {
		t.Fatalf("raw distances should be in the rescaled feature's units, max %v", slices.Max(raw))
	}
}

func TestKNNPersistence(t *testing.T) {
	train, test := neighborsBlobs(1000, 5, 7), neighborsBlobs(400, 5, 8)
	for _, method := range []detectors.KNNMethod{detectors.KNNLargest, detectors.KNNMean, detectors.KNNMedian} {
		for _, std := range []bool{false, true} {
			m := newKNN(t, 6, method, std)
			want := scoreAll(t, m, train, test)
			data, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			r := newKNN(t, 1, detectors.KNNLargest, !std) // different config: replaced by the checkpoint
			if err := r.UnmarshalBinary(data); err != nil {
				t.Fatal(err)
			}
			got := make([]float64, test.Rows)
			if err := r.Score(test, got); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("method %d standardize %v: row %d scores %v restored, %v originally", method, std, i, got[i], want[i])
				}
			}
			again, _ := r.MarshalBinary()
			if !bytes.Equal(again, data) {
				t.Fatal("a restored model encodes differently")
			}
		}
	}
	// An unfitted model round-trips and still refuses to score.
	data, _ := newKNN(t, 3, detectors.KNNMedian, true).MarshalBinary()
	r := newKNN(t, 1, detectors.KNNLargest, false)
	if err := r.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if err := r.Score(test, make([]float64, test.Rows)); err == nil || !strings.Contains(err.Error(), "before fit") {
		t.Fatalf("unfitted restore scored: %v", err)
	}
}

// TestNeighborsUnmarshalRejects: corrupt checkpoints fail with an error, never a panic,
// and leave the model as it was.
func TestNeighborsUnmarshalRejects(t *testing.T) {
	train := neighborsBlobs(100, 3, 9)
	knn := newKNN(t, 4, detectors.KNNLargest, true)
	lof := newLOF(t, 5, true)
	for _, m := range []detectors.Batch{knn, lof} {
		if err := m.Fit(train); err != nil {
			t.Fatal(err)
		}
	}
	knnData, _ := knn.MarshalBinary()
	lofData, _ := lof.MarshalBinary()
	for _, tc := range []struct {
		name  string
		model detectors.Persistent
		data  []byte
		want  string
	}{
		{"empty", knn, nil, "empty"},
		{"version", knn, append([]byte{2}, knnData[1:]...), "version 2"},
		{"lof as knn", knn, lofData, "not a knn"},
		{"knn as lof", lof, knnData, "not a lof"},
		{"trailing", knn, append(slices.Clone(knnData), 0), "trailing"},
		{"trailing lof", lof, append(slices.Clone(lofData), 0), "trailing"},
		{"k zero", knn, patch(knnData, 2, 0, 0, 0, 0), "n_neighbors = 0"},
		{"k above rows", knn, patch(knnData, 2, 200, 0, 0, 0), "n_neighbors = 200"},
		{"method", knn, patch(knnData, 6, 7), "method = 7"},
		{"standardize", knn, patch(knnData, 7, 2), "standardize = 2"},
		{"huge shape", knn, patch(knnData, 8, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f), "truncated"},
		{"NaN point", knn, patchFloat(knnData, 16+48, math.NaN()), "row 0, column 0"},
		{"zero scale", knn, patchFloat(knnData, 16+24, 0), "scale 0"},
		{"negative lrd", lof, patchFloat(lofData, len(lofData)-8, -1), "lrd -1"},
	} {
		before, _ := tc.model.MarshalBinary()
		err := tc.model.UnmarshalBinary(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
		if after, _ := tc.model.MarshalBinary(); !bytes.Equal(after, before) {
			t.Errorf("%s: a failed restore changed the model", tc.name)
		}
	}
	// Every truncation of a valid checkpoint is an error.
	for _, c := range []struct {
		model detectors.Persistent
		data  []byte
	}{{knn, knnData}, {lof, lofData}} {
		for n := range len(c.data) {
			if err := c.model.UnmarshalBinary(c.data[:n]); err == nil {
				t.Fatalf("%d of %d bytes accepted", n, len(c.data))
			}
		}
	}
}

func patch(data []byte, at int, b ...byte) []byte {
	out := slices.Clone(data)
	copy(out[at:], b)
	return out
}

func patchFloat(data []byte, at int, v float64) []byte {
	b := make([]byte, 8)
	bits := math.Float64bits(v)
	for i := range b {
		b[i] = byte(bits >> (8 * i))
	}
	return patch(data, at, b...)
}

func TestKNNBadShapes(t *testing.T) {
	train := neighborsBlobs(50, 3, 10)
	m := newKNN(t, 5, detectors.KNNLargest, true)
	if err := m.Score(train, make([]float64, 50)); err == nil || !strings.Contains(err.Error(), "before fit") {
		t.Errorf("score before fit: %v", err)
	}
	nan := detectors.NewMatrix(10, 3)
	nan.Row(4)[2] = math.NaN()
	for _, tc := range []struct {
		name string
		X    detectors.Matrix
		want string
	}{
		{"empty", detectors.Matrix{}, "empty"},
		{"ragged", detectors.Matrix{Rows: 3, Cols: 2, Data: make([]float64, 5)}, "holds 5 values"},
		{"fewer rows than k", detectors.NewMatrix(4, 3), "n_neighbors = 5"},
		{"NaN", nan, "row 4, column 2"},
	} {
		if err := m.Fit(tc.X); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fit %s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if err := m.Fit(train); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		X    detectors.Matrix
		out  []float64
		want string
	}{
		{"columns", detectors.NewMatrix(2, 4), make([]float64, 2), "4 columns, the model was fitted on 3"},
		{"out", detectors.NewMatrix(2, 3), make([]float64, 3), "out has 3 elements for 2 rows"},
		{"NaN", nan, make([]float64, 10), "row 4, column 2"},
		{"empty", detectors.Matrix{}, nil, "empty"},
	} {
		if err := m.Score(tc.X, tc.out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("score %s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	// A finite value that overflows once scaled by a tiny training spread is an error
	// naming the row, on any number of workers, not a stale or infinite score.
	tiny := detectors.NewMatrix(50, 1)
	for i := range tiny.Data {
		tiny.Data[i] = float64(i) * 1e-150
	}
	huge := detectors.NewMatrix(600, 1)
	huge.Data[517] = 1e200
	for _, w := range []int{1, 3} {
		m := newKNN(t, 5, detectors.KNNLargest, true)
		m.SetWorkers(w)
		if err := m.Fit(tiny); err != nil {
			t.Fatal(err)
		}
		if err := m.Score(huge, make([]float64, huge.Rows)); err == nil || !strings.Contains(err.Error(), "row 517") {
			t.Errorf("workers = %d: overflowing row: %v", w, err)
		}
	}
	for _, cfg := range []detectors.KNNConfig{{Neighbors: 0}, {Neighbors: 1001}, {Neighbors: 5, Method: 3}} {
		if _, err := detectors.NewKNN(cfg); err == nil {
			t.Errorf("NewKNN(%+v) accepted", cfg)
		}
	}
}

// TestNeighborsRegistered: both detectors are in the catalogue as batch detectors, build
// with their defaults, and Resolve rejects out-of-range parameters naming them.
func TestNeighborsRegistered(t *testing.T) {
	for _, name := range []string{"knn", "lof"} {
		info, err := detectors.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != detectors.KindBatch || info.NewBatch == nil || info.Doc == "" {
			t.Fatalf("%s: kind %q, constructor %v", name, info.Kind, info.NewBatch != nil)
		}
		p, err := info.Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := info.NewBatch(p, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := b.(detectors.Parallel); !ok {
			t.Errorf("%s is not Parallel", name)
		}
		if _, ok := b.(detectors.Persistent); !ok {
			t.Errorf("%s is not Persistent", name)
		}
	}
	for _, tc := range []struct {
		detector string
		given    detectors.Params
		want     []string
	}{
		{"knn", detectors.Params{"n_neighbors": 0}, []string{"n_neighbors", "[1, 1000]"}},
		{"knn", detectors.Params{"n_neighbors": 1001}, []string{"n_neighbors", "[1, 1000]"}},
		{"knn", detectors.Params{"n_neighbors": 2.5}, []string{"n_neighbors", "whole number"}},
		{"knn", detectors.Params{"method": 3}, []string{"method", "[0, 2]"}},
		{"knn", detectors.Params{"method": 0.5}, []string{"method", "whole number"}},
		{"knn", detectors.Params{"standardize": 2}, []string{"standardize", "[0, 1]"}},
		{"knn", detectors.Params{"k": 5}, []string{`"k"`, "n_neighbors, method, standardize"}},
		{"lof", detectors.Params{"n_neighbors": 0}, []string{"n_neighbors", "[1, 1000]"}},
		{"lof", detectors.Params{"n_neighbors": math.NaN()}, []string{"n_neighbors"}},
		{"lof", detectors.Params{"method": 1}, []string{`"method"`}},
	} {
		info, _ := detectors.Lookup(tc.detector)
		_, err := info.Resolve(tc.given)
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
	// Every value in range builds: the constructor agrees with the registry.
	info, _ := detectors.Lookup("knn")
	for _, method := range []float64{0, 1, 2} {
		p, err := info.Resolve(detectors.Params{"n_neighbors": 1000, "method": method, "standardize": 0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := info.NewBatch(p, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzKNNUnmarshalBinary: any bytes either restore a model that can score and re-encode
// to the same bytes, or fail with an error.
func FuzzKNNUnmarshalBinary(f *testing.F) {
	for _, seed := range neighborsFuzzSeeds(f, func() detectors.Batch { return newKNN(f, 2, detectors.KNNMean, true) }) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newKNN(t, 1, detectors.KNNLargest, false)
		if err := m.UnmarshalBinary(data); err != nil {
			return
		}
		checkRestored(t, m, data)
	})
}

// neighborsFuzzSeeds are small valid checkpoints: unfitted, and fitted on a few rows
// with duplicates.
func neighborsFuzzSeeds(f *testing.F, newModel func() detectors.Batch) [][]byte {
	unfitted, _ := newModel().(detectors.Persistent).MarshalBinary()
	m := newModel()
	if err := m.Fit(rowsMatrix([]float64{0, 1}, []float64{0, 1}, []float64{2, -1}, []float64{3, 3})); err != nil {
		f.Fatal(err)
	}
	fitted, _ := m.(detectors.Persistent).MarshalBinary()
	return [][]byte{unfitted, fitted}
}

// checkRestored scores with a restored model (when fitted) and checks it re-encodes to
// the bytes it came from.
func checkRestored(t *testing.T, m detectors.Batch, data []byte) {
	again, err := m.(detectors.Persistent).MarshalBinary()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("restored model re-encodes differently (%v)", err)
	}
	for _, cols := range []int{1, 2, 3, 9} {
		X := neighborsBlobs(5, cols, 1)
		_ = m.Score(X, make([]float64, X.Rows)) // must not panic; shape errors are fine
	}
}

func BenchmarkKNNShuttle(b *testing.B) {
	benchmarkShuttle(b, func() detectors.Batch { return newKNN(b, 5, detectors.KNNLargest, true) })
}
