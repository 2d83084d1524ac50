package detectors

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// kdBrute is the k nearest rows of X to q by exhaustive search, ordered by (distance,
// row), skipping row exclude: what KDTree.Nearest must return exactly.
func kdBrute(X Matrix, q []float64, exclude, k int) (dist []float64, idx []int) {
	type cand struct {
		d2  float64
		row int
	}
	all := make([]cand, 0, X.Rows)
	for i := range X.Rows {
		if i == exclude {
			continue
		}
		s := 0.0
		for j, v := range X.Row(i) {
			e := v - q[j]
			s += e * e
		}
		all = append(all, cand{s, i})
	}
	slices.SortFunc(all, func(a, b cand) int {
		if c := cmp.Compare(a.d2, b.d2); c != 0 {
			return c
		}
		return a.row - b.row
	})
	for _, c := range all[:min(k, len(all))] {
		dist = append(dist, math.Sqrt(c.d2))
		idx = append(idx, c.row)
	}
	return dist, idx
}

// kdTestMatrix returns n×d values of a kind: "normal", "grid" (integers in a small range,
// so distances tie often and points repeat), "dup" (a few distinct points, each many
// times) or "sorted" (rows in increasing order, the median-of-three killer shape).
func kdTestMatrix(kind string, n, d int, seed uint64) Matrix {
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	X := NewMatrix(n, d)
	switch kind {
	case "normal":
		for i := range X.Data {
			X.Data[i] = rng.NormFloat64()
		}
	case "grid":
		for i := range X.Data {
			X.Data[i] = float64(rng.IntN(5))
		}
	case "dup":
		base := make([]float64, 4*d)
		for i := range base {
			base[i] = rng.NormFloat64()
		}
		for i := range n {
			copy(X.Row(i), base[rng.IntN(4)*d:])
		}
	case "sorted":
		for i := range n {
			for j := range d {
				X.Row(i)[j] = float64(i/3) + float64(j)
			}
		}
	}
	return X
}

// TestKDTreeMatchesBruteForce: the tree returns the brute-force neighbours exactly (rows
// and distances, ties by row), with and without excluding the query's own row, in 1 to 20
// dimensions, for k from 1 to more than the rows.
func TestKDTreeMatchesBruteForce(t *testing.T) {
	for _, kind := range []string{"normal", "grid", "dup", "sorted"} {
		for _, d := range []int{1, 2, 3, 5, 9, 14, 20} {
			for _, n := range []int{1, 17, 300} {
				X := kdTestMatrix(kind, n, d, uint64(n))
				tree, err := NewKDTree(X)
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(uint64(d), uint64(n)))
				var s KDScratch
				for qi := range 60 {
					k := []int{1, 2, 5, 16, 20, n, n + 3}[qi%7]
					q := make([]float64, d)
					exclude := -1
					switch qi % 3 {
					case 0: // a training row, finding its neighbours among the others
						exclude = rng.IntN(n)
						copy(q, X.Row(exclude))
					case 1: // a training row, itself included
						copy(q, X.Row(rng.IntN(n)))
					default: // anywhere, including far outside the data
						for j := range q {
							q[j] = math.Round(rng.NormFloat64() * 3 * float64(1+qi%4))
						}
					}
					dist, idx := make([]float64, k), make([]int, k)
					got, err := tree.Nearest(q, exclude, dist, idx, &s)
					if err != nil {
						t.Fatal(err)
					}
					wantDist, wantIdx := kdBrute(X, q, exclude, k)
					if got != len(wantIdx) || !slices.Equal(dist[:got], wantDist) || !slices.Equal(idx[:got], wantIdx) {
						t.Fatalf("%s n=%d d=%d k=%d exclude=%d q=%v:\n got %d %v %v\nwant %v %v",
							kind, n, d, k, exclude, q, got, idx[:got], dist[:got], wantIdx, wantDist)
					}
				}
			}
		}
	}
}

// TestKDTreeShape: leaves hold at most kdLeafSize points unless they all coincide, every
// position is covered once, and splits separate the children.
func TestKDTreeShape(t *testing.T) {
	for _, kind := range []string{"normal", "grid", "dup", "sorted"} {
		X := kdTestMatrix(kind, 5000, 3, 7)
		tree, err := NewKDTree(X)
		if err != nil {
			t.Fatal(err)
		}
		seen := make([]bool, X.Rows)
		for _, r := range tree.idx {
			if seen[r] {
				t.Fatalf("%s: row %d twice", kind, r)
			}
			seen[r] = true
		}
		var walk func(id int32, start, end int32)
		walk = func(id int32, start, end int32) {
			nd := tree.nodes[id]
			if nd.start != start || nd.end != end {
				t.Fatalf("%s: node %d covers [%d, %d), want [%d, %d)", kind, id, nd.start, nd.end, start, end)
			}
			if nd.dim < 0 {
				if n := nd.end - nd.start; n > kdLeafSize {
					first := tree.pts[int(nd.start)*tree.d : int(nd.start+1)*tree.d]
					for p := nd.start; p < nd.end; p++ {
						if !slices.Equal(tree.pts[int(p)*tree.d:int(p+1)*tree.d], first) {
							t.Fatalf("%s: leaf of %d distinct points", kind, n)
						}
					}
				}
				return
			}
			l, r := tree.nodes[nd.left], tree.nodes[nd.left+1]
			for p := l.start; p < l.end; p++ {
				if tree.pts[int(p)*tree.d+int(nd.dim)] > nd.split {
					t.Fatalf("%s: left point above the split", kind)
				}
			}
			for p := r.start; p < r.end; p++ {
				if tree.pts[int(p)*tree.d+int(nd.dim)] < nd.split {
					t.Fatalf("%s: right point below the split", kind)
				}
			}
			walk(nd.left, start, l.end)
			walk(nd.left+1, l.end, end)
		}
		walk(0, 0, int32(X.Rows))
	}
}

func TestKDTreeBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		X    Matrix
		want string
	}{
		{"empty", Matrix{}, "empty"},
		{"short data", Matrix{Rows: 2, Cols: 2, Data: []float64{1, 2, 3}}, "holds 3 values"},
		{"NaN", Matrix{Rows: 2, Cols: 2, Data: []float64{1, 2, 3, math.NaN()}}, "row 1, column 1"},
		{"Inf", Matrix{Rows: 1, Cols: 2, Data: []float64{math.Inf(-1), 0}}, "row 0, column 0"},
	} {
		if _, err := NewKDTree(tc.X); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	tree, err := NewKDTree(kdTestMatrix("normal", 50, 3, 1))
	if err != nil {
		t.Fatal(err)
	}
	var s KDScratch
	if _, err := tree.Nearest(make([]float64, 2), -1, make([]float64, 3), make([]int, 3), &s); err == nil || !strings.Contains(err.Error(), "2 coordinates") {
		t.Errorf("short query: %v", err)
	}
	if _, err := tree.Nearest(make([]float64, 3), -1, make([]float64, 3), make([]int, 2), &s); err == nil || !strings.Contains(err.Error(), "indices") {
		t.Errorf("mismatched outputs: %v", err)
	}
	if _, err := tree.Nearest([]float64{0, math.NaN(), 0}, -1, make([]float64, 3), make([]int, 3), &s); err == nil || !strings.Contains(err.Error(), "coordinate 1") {
		t.Errorf("NaN query: %v", err)
	}
	if n, err := tree.Nearest(make([]float64, 3), -1, nil, nil, &s); n != 0 || err != nil {
		t.Errorf("k = 0: %d, %v", n, err)
	}
}

// TestKDTreeHugeValues: finite values whose squared distances overflow still give an
// answer (infinite distances), not a panic or a hang.
func TestKDTreeHugeValues(t *testing.T) {
	X := kdTestMatrix("normal", 100, 2, 3)
	for i := range X.Data {
		X.Data[i] *= 1e300
	}
	tree, err := NewKDTree(X)
	if err != nil {
		t.Fatal(err)
	}
	var s KDScratch
	dist, idx := make([]float64, 4), make([]int, 4)
	if n, err := tree.Nearest([]float64{-1e308, 1e308}, -1, dist, idx, &s); n != 4 || err != nil {
		t.Fatalf("%d, %v", n, err)
	}
}

func TestKDTreeQueriesDoNotAllocate(t *testing.T) {
	X := kdTestMatrix("normal", 5000, 9, 1)
	tree, err := NewKDTree(X)
	if err != nil {
		t.Fatal(err)
	}
	var s KDScratch
	dist, idx := make([]float64, 20), make([]int, 20)
	q := make([]float64, 9)
	tree.Nearest(q, -1, dist, idx, &s) // sizes the scratch
	i := 0
	if a := testing.AllocsPerRun(200, func() {
		tree.Nearest(X.Row(i%X.Rows), i%X.Rows, dist, idx, &s)
		i++
	}); a != 0 {
		t.Fatalf("%v allocations per query", a)
	}
}

// FuzzKDSelect: quickselect puts the element of rank m at m with nothing greater before
// and nothing smaller after; kdUntie then gathers the median's run on one side.
func FuzzKDSelect(f *testing.F) {
	f.Add([]byte{3, 1, 2, 2, 2, 0, 9}, uint8(3))
	f.Add([]byte{1, 1, 1, 1, 1, 1, 1, 1}, uint8(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 5, 0, 0, 0, 0, 0, 9}, uint8(9))
	f.Fuzz(func(t *testing.T, keys []byte, m uint8) {
		if len(keys) == 0 {
			return
		}
		a := make([]int32, len(keys))
		for i := range a {
			a[i] = int32(i)
		}
		mi := int(m) % len(a)
		key := func(r int32) float64 { return float64(keys[r]) }
		kdSelect(a, mi, key)
		sorted := slices.Clone(keys)
		slices.Sort(sorted)
		if key(a[mi]) != float64(sorted[mi]) {
			t.Fatalf("rank %d: got %v, want %v", mi, key(a[mi]), sorted[mi])
		}
		v := key(a[mi])
		for i, r := range a {
			if i < mi && key(r) > v || i > mi && key(r) < v {
				t.Fatalf("position %d holds %v against the pivot %v", i, key(r), v)
			}
		}
		// kdUntie moves the split to an end of the median's run, or leaves it.
		p := kdUntie(a, 0, mi, len(a), key)
		if p <= 0 || p >= len(a) {
			if p != mi {
				t.Fatalf("split moved to %d of %d", p, len(a))
			}
			return
		}
		for i, r := range a {
			below := i < p
			if below && key(r) > v || !below && key(r) < v ||
				p != mi && (p < mi && below && key(r) == v || p > mi && !below && key(r) == v) {
				t.Fatalf("split %d (median at %d, %v): position %d holds %v", p, mi, v, i, key(r))
			}
		}
		if p != mi && min(p, len(a)-p) < len(a)/8 {
			t.Fatalf("split %d of %d is too lopsided", p, len(a))
		}
	})
}

func BenchmarkKDTreeBuild(b *testing.B) {
	X := kdTestMatrix("normal", 30000, 9, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewKDTree(X); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKDTreeNearest(b *testing.B) {
	for _, d := range []int{3, 9, 20} {
		b.Run("d="+itoa(d), func(b *testing.B) {
			X := kdTestMatrix("normal", 30000, d, 1)
			tree, err := NewKDTree(X)
			if err != nil {
				b.Fatal(err)
			}
			Q := kdTestMatrix("normal", 1000, d, 2)
			var s KDScratch
			dist, idx := make([]float64, 5), make([]int, 5)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				tree.Nearest(Q.Row(i%Q.Rows), -1, dist, idx, &s)
				i++
			}
		})
	}
}
