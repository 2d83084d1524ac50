package detectors_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func newLOF(t testing.TB, k int, standardize bool) *detectors.LOF {
	t.Helper()
	m, err := detectors.NewLOF(detectors.LOFConfig{Neighbors: k, Standardize: standardize})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lofReference is LOF written from the definition (Breunig et al. 2000, with sklearn's
// 1e-10 and novelty scoring) by exhaustive search: neighbours ordered by (distance, row),
// a training row's excluding itself.
func lofReference(train, test detectors.Matrix, k int) []float64 {
	k = min(k, train.Rows-1)
	dist := func(a, b []float64) float64 {
		s := 0.0
		for j := range a {
			e := a[j] - b[j]
			s += e * e
		}
		return math.Sqrt(s)
	}
	neighbours := func(q []float64, self int) (d []float64, idx []int) {
		idx = make([]int, 0, train.Rows)
		for i := range train.Rows {
			if i != self {
				idx = append(idx, i)
			}
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			da, db := dist(q, train.Row(a)), dist(q, train.Row(b))
			switch {
			case da < db:
				return -1
			case da > db:
				return 1
			}
			return 0
		})
		idx = idx[:k]
		for _, i := range idx {
			d = append(d, dist(q, train.Row(i)))
		}
		return d, idx
	}
	kdist := make([]float64, train.Rows)
	nd, ni := make([][]float64, train.Rows), make([][]int, train.Rows)
	for i := range train.Rows {
		nd[i], ni[i] = neighbours(train.Row(i), i)
		kdist[i] = nd[i][k-1]
	}
	meanReach := func(d []float64, idx []int) float64 {
		s := 0.0
		for j, o := range idx {
			s += max(d[j], kdist[o])
		}
		return s / float64(k)
	}
	lrd := make([]float64, train.Rows)
	for i := range lrd {
		lrd[i] = 1 / (meanReach(nd[i], ni[i]) + 1e-10)
	}
	out := make([]float64, test.Rows)
	for i := range out {
		d, idx := neighbours(test.Row(i), -1)
		own := 1 / (meanReach(d, idx) + 1e-10)
		for _, o := range idx {
			out[i] += lrd[o] / own / float64(k)
		}
	}
	return out
}

func TestLOFHandComputed(t *testing.T) {
	// k = 2 on {0, 1, 3, 7}: k-distances 3, 2, 3, 6; lrds 1/2.5, 1/3, 1/2.5, 1/5.
	train := rowsMatrix([]float64{0}, []float64{1}, []float64{3}, []float64{7})
	test := rowsMatrix([]float64{20}, []float64{2})
	got := scoreAll(t, newLOF(t, 2, false), train, test)
	// 20: neighbours 7 and 3, reach-distances 13 and 17, lrd 1/15: (0.2+0.4)/2 × 15.
	// 2: neighbours 1 and 3, reach-distances 2 and 3: (1/3+0.4)/2 × 2.5.
	want := []float64{4.5, 11.0 / 12}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("scores %v, want %v", got, want)
		}
	}
}

// TestLOFMatchesReference: on data with many ties and duplicates, in several dimensions
// and for several k, the tree-based LOF equals the exhaustive one.
func TestLOFMatchesReference(t *testing.T) {
	for _, d := range []int{1, 3, 8} {
		rng := rand.New(rand.NewPCG(uint64(d), 1))
		grid := func(n int) detectors.Matrix {
			X := detectors.NewMatrix(n, d)
			for i := range X.Data {
				X.Data[i] = float64(rng.IntN(6)) + 0.5*float64(rng.IntN(2))
			}
			return X
		}
		train, test := grid(150), grid(60)
		for _, k := range []int{1, 3, 20, 200} {
			got := scoreAll(t, newLOF(t, k, false), train, test)
			want := lofReference(train, test, k)
			for i := range want {
				if math.Abs(got[i]-want[i]) > 1e-9*math.Abs(want[i]) {
					t.Fatalf("d=%d k=%d row %d: %v, reference %v", d, k, i, got[i], want[i])
				}
			}
		}
	}
}

// TestLOFDuplicates: k or more identical training rows have an lrd of 1e10 rather than
// infinity, so every score stays finite; a copy of them scores 1 and a row beside them
// scores far higher.
func TestLOFDuplicates(t *testing.T) {
	train := detectors.NewMatrix(60, 2)
	for i := 30; i < 60; i++ {
		train.Row(i)[0], train.Row(i)[1] = float64(i), float64(i%7)
	}
	test := rowsMatrix([]float64{0, 0}, []float64{0.5, 0}, []float64{45, 3})
	got := scoreAll(t, newLOF(t, 5, false), train, test)
	for i, s := range got {
		if !(s > 0) || math.IsInf(s, 0) {
			t.Fatalf("row %d scores %v", i, s)
		}
	}
	if got[0] != 1 || got[1] < 1e6 {
		t.Fatalf("a duplicate scores %v (want 1), a row beside the duplicates %v (want ≫ 1)", got[0], got[1])
	}
}

// TestLOFFewRows: with fewer training rows than k+1, k drops to rows − 1, as in sklearn.
func TestLOFFewRows(t *testing.T) {
	train, test := neighborsBlobs(6, 2, 1), neighborsBlobs(20, 2, 2)
	got := scoreAll(t, newLOF(t, 20, true), train, test)
	want := scoreAll(t, newLOF(t, 5, true), train, test)
	if !slices.Equal(got, want) {
		t.Fatalf("k = 20 on 6 rows: %v, want k = 5's %v", got, want)
	}
	m := newLOF(t, 3, true)
	if err := m.Fit(detectors.NewMatrix(1, 2)); err == nil || !strings.Contains(err.Error(), "at least 2 training rows") {
		t.Fatalf("one row: %v", err)
	}
	nan := detectors.NewMatrix(4, 2)
	nan.Row(1)[0] = math.Inf(1)
	if err := m.Fit(nan); err == nil || !strings.Contains(err.Error(), "row 1, column 0") {
		t.Fatalf("Inf: %v", err)
	}
	huge := neighborsBlobs(30, 2, 3)
	for i := range huge.Data {
		huge.Data[i] *= 1e300
	}
	if err := m.Fit(huge); err == nil || !strings.Contains(err.Error(), "too large to standardise") {
		t.Fatalf("overflowing standardisation: %v", err)
	}
	if err := newLOF(t, 3, false).Fit(huge); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("overflowing distances: %v", err)
	}
	if err := m.Score(test, make([]float64, test.Rows)); err == nil || !strings.Contains(err.Error(), "before fit") {
		t.Fatalf("failed fits left a model: %v", err)
	}
	if err := m.Fit(train); err != nil {
		t.Fatal(err)
	}
	if err := m.Score(neighborsBlobs(3, 3, 1), make([]float64, 3)); err == nil || !strings.Contains(err.Error(), "3 columns, the model was fitted on 2") {
		t.Fatalf("wrong width: %v", err)
	}
	for _, k := range []int{0, -1, 1001} {
		if _, err := detectors.NewLOF(detectors.LOFConfig{Neighbors: k}); err == nil || !strings.Contains(err.Error(), "n_neighbors") {
			t.Errorf("k = %d: %v", k, err)
		}
	}
}

// TestLOFDeterministicAcrossWorkers: Fit and Score give the same bits on any number of
// goroutines.
func TestLOFDeterministicAcrossWorkers(t *testing.T) {
	train, test := neighborsBlobs(3000, 5, 3), neighborsBlobs(1000, 5, 4)
	want := scoreAll(t, newLOF(t, 20, true), train, test)
	for _, w := range []int{2, 3} {
		m := newLOF(t, 20, true)
		m.SetWorkers(w)
		if got := scoreAll(t, m, train, test); !slices.Equal(got, want) {
			t.Fatalf("workers = %d: scores differ", w)
		}
	}
}

func TestLOFPersistence(t *testing.T) {
	train, test := neighborsBlobs(800, 4, 5), neighborsBlobs(300, 4, 6)
	for _, std := range []bool{false, true} {
		m := newLOF(t, 10, std)
		want := scoreAll(t, m, train, test)
		data, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		r := newLOF(t, 3, !std)
		if err := r.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		got := make([]float64, test.Rows)
		if err := r.Score(test, got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
				t.Fatalf("standardize %v: row %d scores %v restored, %v originally", std, i, got[i], want[i])
			}
		}
		checkRestored(t, r, data)
	}
}

// FuzzLOFUnmarshalBinary: any bytes either restore a model that can score and re-encode
// to the same bytes, or fail with an error.
func FuzzLOFUnmarshalBinary(f *testing.F) {
	for _, seed := range neighborsFuzzSeeds(f, func() detectors.Batch { return newLOF(f, 2, true) }) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newLOF(t, 1, false)
		if err := m.UnmarshalBinary(data); err != nil {
			return
		}
		checkRestored(t, m, data)
	})
}

func BenchmarkLOFShuttle(b *testing.B) {
	benchmarkShuttle(b, func() detectors.Batch { return newLOF(b, 20, true) })
}
