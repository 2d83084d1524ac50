package detectors

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

var iforestDefaults = IForestConfig{Trees: 100, MaxSamples: 256, MaxFeatures: 1}

// isoNormalMatrix is n rows of d standard normal features.
func isoNormalMatrix(n, d int, seed uint64) Matrix {
	m := NewMatrix(n, d)
	for i, row := range normalRows(n, d, seed) {
		copy(m.Row(i), row)
	}
	return m
}

func newIForest(t testing.TB, cfg IForestConfig, seed uint64) *IsolationForest {
	t.Helper()
	f, err := NewIsolationForest(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func isoFitScore(t testing.TB, det Batch, train, test Matrix) []float64 {
	t.Helper()
	if err := det.Fit(train); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, test.Rows)
	if err := det.Score(test, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func isoSameBits(t *testing.T, what string, a, b []float64) {
	t.Helper()
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			t.Fatalf("%s: row %d scores %v, then %v", what, i, a[i], b[i])
		}
	}
}

func TestIsoAvgPathAndHeight(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want float64
	}{{0, 0}, {1, 0}, {2, 1}, {3, 2*(math.Log(2)+eulerGamma) - 4.0/3}, {256, 10.244770920119917}} {
		if got := isoAvgPath(tc.n); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("c(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	for psi, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 255: 8, 256: 8, 257: 9} {
		if got := isoHeight(psi); got != want {
			t.Errorf("height(%d) = %d, want %d", psi, got, want)
		}
	}
}

// TestBatchForestsRegistered: both forests are in the registry, documented, and build
// with their defaults.
func TestBatchForestsRegistered(t *testing.T) {
	for _, name := range []string{"iforest", "eif"} {
		info, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != KindBatch || info.NewBatch == nil || info.Doc == "" {
			t.Fatalf("%s: kind %q, constructor %v, doc %q", name, info.Kind, info.NewBatch != nil, info.Doc)
		}
		for _, p := range info.Params {
			if p.Doc == "" || p.Default < p.Min || p.Default > p.Max {
				t.Fatalf("%s.%s: undocumented or default %v outside [%v, %v]", name, p.Name, p.Default, p.Min, p.Max)
			}
		}
		p, err := info.Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		det, err := info.NewBatch(p, 1)
		if err != nil {
			t.Fatalf("%s with defaults: %v", name, err)
		}
		_, persistent := det.(Persistent)
		_, parallel := det.(Parallel)
		if !persistent || !parallel {
			t.Fatalf("%s: Persistent %v, Parallel %v", name, persistent, parallel)
		}
	}
	if _, ok := any(&IsolationForest{}).(Contributor); !ok {
		t.Fatal("iforest is not a Contributor")
	}
}

// TestBatchForestsResolve: out-of-range, fractional and inconsistent parameters fail
// with a message naming the parameter, in Resolve or in the constructor.
func TestBatchForestsResolve(t *testing.T) {
	for _, tc := range []struct {
		detector string
		given    Params
		want     []string
	}{
		{"iforest", Params{"trees": 0}, []string{"trees", "[1, 10000]"}},
		{"iforest", Params{"trees": 10001}, []string{"trees", "[1, 10000]"}},
		{"iforest", Params{"trees": 2.5}, []string{"trees", "whole number"}},
		{"iforest", Params{"max_samples": 1}, []string{"max_samples", "[2, 1.048576e+06]"}},
		{"iforest", Params{"max_features": 0}, []string{"max_features", "[0.01, 1]"}},
		{"iforest", Params{"max_features": 1.5}, []string{"max_features", "[0.01, 1]"}},
		{"iforest", Params{"max_features": math.NaN()}, []string{"max_features"}},
		{"iforest", Params{"extension_level": 1}, []string{`"extension_level"`, "trees, max_samples, max_features"}},
		{"iforest", Params{"trees": 10000, "max_samples": 100000}, []string{"max_samples", "MiB"}},
		{"eif", Params{"trees": 0}, []string{"trees", "[1, 10000]"}},
		{"eif", Params{"max_samples": 2e6}, []string{"max_samples", "[2, 1.048576e+06]"}},
		{"eif", Params{"extension_level": -2}, []string{"extension_level", "[-1, 1000]"}},
		{"eif", Params{"extension_level": 1001}, []string{"extension_level", "[-1, 1000]"}},
		{"eif", Params{"extension_level": 0.5}, []string{"extension_level", "whole number"}},
		{"eif", Params{"max_features": 1}, []string{`"max_features"`}},
		{"eif", Params{"trees": 10000, "max_samples": 100000}, []string{"max_samples", "MiB"}},
	} {
		info, err := Lookup(tc.detector)
		if err != nil {
			t.Fatal(err)
		}
		p, err := info.Resolve(tc.given)
		if err == nil {
			_, err = info.NewBatch(p, 1)
		}
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
}

// TestBatchForestsBadInput: bad shapes and values are errors naming the problem, for
// both forests.
func TestBatchForestsBadInput(t *testing.T) {
	good := isoNormalMatrix(50, 3, 1)
	nan := isoNormalMatrix(50, 3, 1)
	nan.Data[7] = math.NaN()
	inf := isoNormalMatrix(50, 3, 1)
	inf.Data[8] = math.Inf(-1)
	for _, name := range []string{"iforest", "eif"} {
		newDet := func() Batch {
			info, _ := Lookup(name)
			p, _ := info.Resolve(Params{"trees": 10})
			det, err := info.NewBatch(p, 1)
			if err != nil {
				t.Fatal(err)
			}
			return det
		}
		fitted := newDet()
		if err := fitted.Score(good, make([]float64, 50)); err == nil || !strings.Contains(err.Error(), "before fit") {
			t.Errorf("%s: score before fit: %v", name, err)
		}
		if err := fitted.Fit(good); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			what string
			err  error
			want string
		}{
			{"fit on an empty matrix", newDet().Fit(Matrix{}), "empty"},
			{"fit on 0 rows", newDet().Fit(Matrix{Rows: 0, Cols: 3}), "empty"},
			{"fit with short data", newDet().Fit(Matrix{Rows: 5, Cols: 3, Data: make([]float64, 14)}), "holds 14"},
			{"fit with NaN", newDet().Fit(nan), "row 2, column 1 is NaN"},
			{"fit with -Inf", newDet().Fit(inf), "row 2, column 2 is -Inf"},
			{"score on fewer columns", fitted.Score(isoNormalMatrix(4, 2, 1), make([]float64, 4)), "X has 2 columns, the model was fitted on 3"},
			{"score on an empty matrix", fitted.Score(Matrix{Cols: 3}, nil), "empty"},
			{"score into a short out", fitted.Score(good, make([]float64, 49)), "out holds 49 scores for 50 rows"},
			{"score NaN", fitted.Score(nan, make([]float64, 50)), "row 2, column 1 is NaN"},
		} {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !strings.HasPrefix(tc.err.Error(), name+": ") {
				t.Errorf("%s: %s: error %v, want one starting %q and saying %q", name, tc.what, tc.err, name, tc.want)
			}
		}
	}
	f := newIForest(t, IForestConfig{Trees: 5, MaxSamples: 16, MaxFeatures: 1}, 1)
	if err := f.Contributions(make([]float64, 3), make([]float64, 3)); err == nil {
		t.Error("contributions before fit: accepted")
	}
	if err := f.Fit(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ x, c []float64 }{
		{make([]float64, 2), make([]float64, 3)},
		{make([]float64, 3), make([]float64, 4)},
		{[]float64{0, math.NaN(), 0}, make([]float64, 3)},
	} {
		if err := f.Contributions(tc.x, tc.c); err == nil {
			t.Errorf("contributions of %v into %d: accepted", tc.x, len(tc.c))
		}
	}
}

// refPathSum walks every tree of f node by node, the textbook way, and sums h(x).
func refPathSum(f *IsolationForest, x []float64) (sum float64, depthOK bool) {
	depthOK = true
	for t := range f.steps {
		nodes := f.nodes[f.base[t]:f.base[t+1]]
		i, depth := 0, 0
		for int(nodes[i].left) != i {
			n := nodes[i]
			if x[n.feat] <= n.split {
				i = int(n.left)
			} else {
				i = int(n.left) + 1
			}
			depth++
		}
		leafSize := int(f.size[int(f.base[t])+i])
		h := float64(depth) + isoAvgPath(leafSize)
		depthOK = depthOK && depth <= isoHeight(f.psi) && h == f.pathLen[int(f.base[t])+i]
		sum += h
	}
	return sum, depthOK
}

// TestIForestMatchesDefinition: the blocked, lockstep descent gives, bit for bit, the
// score of walking each tree to x's leaf and averaging depth + c(leaf size).
func TestIForestMatchesDefinition(t *testing.T) {
	train := isoNormalMatrix(1000, 4, 1)
	test := isoNormalMatrix(700, 4, 2) // several blocks and a partial one
	for i := 0; i < test.Rows; i += 50 {
		test.Row(i)[i%4] = 6
	}
	f := newIForest(t, IForestConfig{Trees: 30, MaxSamples: 128, MaxFeatures: 1}, 3)
	got := isoFitScore(t, f, train, test)
	c := isoAvgPath(128)
	for i := range test.Rows {
		sum, ok := refPathSum(f, test.Row(i))
		if !ok {
			t.Fatalf("row %d: a leaf is deeper than the height limit or has the wrong path length", i)
		}
		if want := math.Exp2(-sum / (30 * c)); math.Abs(got[i]-want) > 1e-15 {
			t.Fatalf("row %d: score %v, by definition %v", i, got[i], want)
		}
	}
}

// TestIForestHeapMatchesNodes: scoring from the heap-ordered copy (short trees, few
// columns) gives the scores of the node walk bit for bit, for shapes at and past its
// limits, row counts that leave a partial group or block, and values the splits treat
// specially (±Inf, −0, ties with a split, constant features).
func TestIForestHeapMatchesNodes(t *testing.T) {
	for _, tc := range []struct {
		rows, cols, psi, test int
		heap                  bool
	}{
		{300, 4, 256, 701, true},
		{300, 1, 256, 3, true}, // one partial group, one column
		{2, 3, 2, 50, true},    // trees of one split
		{1, 3, 256, 9, true},   // ψ = 1: every tree a lone leaf, every score 0.5
		{1000, 32, 100, 517, true},
		{1000, 33, 100, 20, false}, // too many columns for a byte offset
		{1000, 5, 257, 20, false},  // trees of height 9
	} {
		train := isoNormalMatrix(tc.rows, tc.cols, 1)
		for i := range train.Rows { // a constant feature, and ties with it
			train.Row(i)[0] = 1
		}
		test := isoNormalMatrix(tc.test, tc.cols, 2)
		special := []float64{math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, 1, 40}
		for i := range test.Rows {
			if i%3 == 0 {
				test.Row(i)[i%tc.cols] = special[i%len(special)]
			}
			if i%7 == 0 { // a training value: exactly on some split's side of equality
				copy(test.Row(i), train.Row(i%train.Rows))
			}
		}
		f := newIForest(t, IForestConfig{Trees: 40, MaxSamples: tc.psi, MaxFeatures: 1}, 3)
		got := isoFitScore(t, f, train, test)
		if (f.heap != nil) != tc.heap {
			t.Fatalf("%+v: heap copy %v, want %v", tc, f.heap != nil, tc.heap)
		}
		want := make([]float64, test.Rows)
		f.scoreRows(test, want, 0, test.Rows)
		isoSameBits(t, fmt.Sprintf("%+v: heap against nodes", tc), want, got)
		for i := range test.Rows {
			sum, _ := refPathSum(f, test.Row(i))
			if w := isoScore(sum, f.inv); math.Float64bits(w) != math.Float64bits(got[i]) {
				t.Fatalf("%+v: row %d scores %v, by definition %v", tc, i, got[i], w)
			}
		}
	}
}

// TestIsoKeyKeepsOrder: keys compare as the values do, zeros of both signs included.
func TestIsoKeyKeepsOrder(t *testing.T) {
	vals := []float64{math.Inf(-1), -math.MaxFloat64, -1, -math.SmallestNonzeroFloat64,
		math.Copysign(0, -1), 0, math.SmallestNonzeroFloat64, 1, math.MaxFloat64, math.Inf(1)}
	for _, row := range normalRows(200, 1, 3) {
		vals = append(vals, row[0], math.Nextafter(row[0], math.Inf(1)))
	}
	for _, a := range vals {
		for _, b := range vals {
			if (a > b) != (isoKey(a) > isoKey(b)) {
				t.Fatalf("%v > %v is %v, on keys %v", a, b, a > b, isoKey(a) > isoKey(b))
			}
		}
	}
}

// TestIForestTreeShape: ψ = min(max_samples, rows); every tree holds ψ rows at its root,
// splits them into non-empty children, and stops at the height limit.
func TestIForestTreeShape(t *testing.T) {
	for _, tc := range []struct {
		rows, maxSamples, psi int
	}{{1000, 256, 256}, {100, 256, 100}, {3, 256, 3}, {1000, 2, 2}} {
		f := newIForest(t, IForestConfig{Trees: 20, MaxSamples: tc.maxSamples, MaxFeatures: 1}, 1)
		if err := f.Fit(isoNormalMatrix(tc.rows, 3, 1)); err != nil {
			t.Fatal(err)
		}
		if f.psi != tc.psi {
			t.Fatalf("%d rows, max_samples %d: ψ = %d, want %d", tc.rows, tc.maxSamples, f.psi, tc.psi)
		}
		for tr := range f.steps {
			nodes, size := f.nodes[f.base[tr]:f.base[tr+1]], f.size[f.base[tr]:f.base[tr+1]]
			if size[0] != uint32(tc.psi) || len(nodes) > 2*tc.psi-1 || int(f.steps[tr]) > isoHeight(tc.psi) {
				t.Fatalf("tree %d: root %d rows, %d nodes, depth %d", tr, size[0], len(nodes), f.steps[tr])
			}
			for i, n := range nodes {
				if l := int(n.left); l != i && (size[l] == 0 || size[l+1] == 0 || size[l]+size[l+1] != size[i]) {
					t.Fatalf("tree %d node %d: %d rows into %d and %d", tr, i, size[i], size[l], size[l+1])
				}
			}
		}
	}
}

// TestIForestMaxFeatures: with max_features 0.25 of 8 columns, each tree splits on at
// most two features, and the trees do not all pick the same two.
func TestIForestMaxFeatures(t *testing.T) {
	f := newIForest(t, IForestConfig{Trees: 20, MaxSamples: 64, MaxFeatures: 0.25}, 1)
	if err := f.Fit(isoNormalMatrix(500, 8, 1)); err != nil {
		t.Fatal(err)
	}
	used := map[uint32]bool{}
	for tr := range f.steps {
		feats := map[uint32]bool{}
		nodes := f.nodes[f.base[tr]:f.base[tr+1]]
		for i, n := range nodes {
			if int(n.left) != i {
				feats[n.feat], used[n.feat] = true, true
			}
		}
		if len(feats) > 2 {
			t.Fatalf("tree %d splits on %d features", tr, len(feats))
		}
	}
	if len(used) < 4 {
		t.Fatalf("20 trees split on %d features in all", len(used))
	}
}

// TestIForestFarPointScoresHighest: in a 2-D Gaussian blob, a point far from it gets the
// top score, above 0.5, and every score is in (0, 1].
func TestIForestFarPointScoresHighest(t *testing.T) {
	X := isoNormalMatrix(500, 2, 4)
	copy(X.Row(123), []float64{6, -6})
	for _, workers := range []int{1, 2} {
		f := newIForest(t, iforestDefaults, 1)
		f.SetWorkers(workers)
		s := isoFitScore(t, f, X, X)
		top := slices.Index(s, slices.Max(s))
		if top != 123 || s[123] <= 0.6 {
			t.Fatalf("workers %d: top score %v at row %d; the far point scores %v", workers, s[top], top, s[123])
		}
		for i, v := range s {
			if !(v > 0 && v <= 1) {
				t.Fatalf("row %d: score %v", i, v)
			}
		}
	}
}

// TestIForestDeterministic: the same seed gives the same scores bit for bit, whatever the
// number of workers; another seed gives other trees.
func TestIForestDeterministic(t *testing.T) {
	train, test := isoNormalMatrix(2000, 5, 1), isoNormalMatrix(1500, 5, 2)
	var runs [][]float64
	for _, tc := range []struct {
		seed    uint64
		workers int
	}{{7, 1}, {7, 1}, {7, 2}, {7, 3}, {8, 1}} {
		f := newIForest(t, iforestDefaults, tc.seed)
		f.SetWorkers(tc.workers)
		runs = append(runs, isoFitScore(t, f, train, test))
	}
	for i := 1; i < 4; i++ {
		isoSameBits(t, "seed 7, again", runs[0], runs[i])
	}
	if slices.Equal(runs[0], runs[4]) {
		t.Fatal("seeds 7 and 8 give the same scores")
	}
}

// TestIForestConstantAndTinyData: identical rows cannot be split (all leaves are roots),
// one row has c(1) = 0; neither is an error and all scores agree.
func TestIForestConstantAndTinyData(t *testing.T) {
	for _, X := range []Matrix{
		{Rows: 40, Cols: 2, Data: slices.Repeat([]float64{3, -1}, 40)},
		{Rows: 1, Cols: 2, Data: []float64{3, -1}},
	} {
		f := newIForest(t, iforestDefaults, 1)
		s := isoFitScore(t, f, X, isoNormalMatrix(5, 2, 1))
		for _, v := range s {
			if v != s[0] || !(v > 0 && v <= 1) {
				t.Fatalf("%d rows: scores %v", X.Rows, s)
			}
		}
		contrib := make([]float64, 2)
		if err := f.Contributions([]float64{100, 100}, contrib); err != nil || contrib[0] != 0 || contrib[1] != 0 {
			t.Fatalf("%d rows: contributions %v, %v; want zeros", X.Rows, contrib, err)
		}
	}
}

// TestIForestContributions: a point extreme in one feature credits that feature most;
// shares are non-negative and sum to 1.
func TestIForestContributions(t *testing.T) {
	X := isoNormalMatrix(2000, 4, 5)
	f := newIForest(t, iforestDefaults, 1)
	if err := f.Fit(X); err != nil {
		t.Fatal(err)
	}
	contrib := make([]float64, 4)
	for j := range 4 {
		x := []float64{0.1, -0.2, 0.3, 0}
		x[j] = 7
		if err := f.Contributions(x, contrib); err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, c := range contrib {
			if c < 0 {
				t.Fatalf("negative share: %v", contrib)
			}
			sum += c
		}
		if math.Abs(sum-1) > 1e-12 || slices.Index(contrib, slices.Max(contrib)) != j || contrib[j] < 0.5 {
			t.Fatalf("x extreme in feature %d: contributions %v", j, contrib)
		}
	}
}

// TestIForestPersistence: a restored forest scores and attributes bit for bit as the
// original, re-encodes to the same bytes and keeps its configuration (a refit matches).
func TestIForestPersistence(t *testing.T) {
	train, test := isoNormalMatrix(1000, 6, 1), isoNormalMatrix(300, 6, 2)
	for _, cfg := range []IForestConfig{iforestDefaults, {Trees: 7, MaxSamples: 50, MaxFeatures: 0.5}} {
		f := newIForest(t, cfg, 9)
		want := isoFitScore(t, f, train, test)
		enc, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var g IsolationForest
		if err := g.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		got := make([]float64, test.Rows)
		if err := g.Score(test, got); err != nil {
			t.Fatal(err)
		}
		isoSameBits(t, "restored", want, got)
		c1, c2 := make([]float64, 6), make([]float64, 6)
		_ = f.Contributions(test.Row(0), c1)
		_ = g.Contributions(test.Row(0), c2)
		isoSameBits(t, "restored contributions", c1, c2)
		if again, _ := g.MarshalBinary(); !bytes.Equal(enc, again) {
			t.Fatal("re-encoding a restored forest changes the bytes")
		}
		isoSameBits(t, "refit after restore", want, isoFitScore(t, &g, train, test))
	}

	// Unfitted: the configuration survives, and scoring is still "before fit".
	u := newIForest(t, IForestConfig{Trees: 3, MaxSamples: 10, MaxFeatures: 0.5}, 4)
	enc, _ := u.MarshalBinary()
	var g IsolationForest
	if err := g.UnmarshalBinary(enc); err != nil || g.cfg != u.cfg || g.seed != 4 || g.d != 0 {
		t.Fatalf("unfitted round trip: %+v, %v", g.cfg, err)
	}
}

// TestIForestDecodeRejects: unknown versions, every truncation, trailing bytes and broken
// trees are errors that leave the forest as it was.
func TestIForestDecodeRejects(t *testing.T) {
	f := newIForest(t, IForestConfig{Trees: 4, MaxSamples: 16, MaxFeatures: 1}, 1)
	if err := f.Fit(isoNormalMatrix(100, 3, 1)); err != nil {
		t.Fatal(err)
	}
	enc, _ := f.MarshalBinary()
	var g IsolationForest
	for n := range len(enc) {
		if err := g.UnmarshalBinary(enc[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(enc))
		}
	}
	if g.d != 0 || g.nodes != nil {
		t.Fatal("a failed decode changed the forest")
	}
	bad := func(edit func(b []byte) []byte, want string) {
		t.Helper()
		b := edit(slices.Clone(enc))
		if err := g.UnmarshalBinary(b); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one saying %q", err, want)
		}
	}
	const tree0 = 1 + 8 + 4 + 4 + 8 + 4 + 4 + 4 // version, seed, cfg, d, ψ, node count
	bad(func(b []byte) []byte { b[0] = 2; return b }, "unknown encoding version 2")
	bad(func(b []byte) []byte { return append(b, 0) }, "1 bytes after the last tree")
	bad(func(b []byte) []byte { b[9] = 0; return b }, "trees = 0")                           // cfg.Trees
	bad(func(b []byte) []byte { b[tree0+3] = 0x7f; return b }, "has children")               // root's left child
	bad(func(b []byte) []byte { b[tree0+4] = 3; return b }, "splits feature 3 of 3")         // root's feature
	bad(func(b []byte) []byte { b[tree0+16]++; return b }, "the root holds 17 rows, not 16") // root's size
}

// FuzzIForestUnmarshal: no input makes decoding panic, and whatever decodes can score,
// attribute and re-encode to the same bytes.
func FuzzIForestUnmarshal(f *testing.F) {
	for _, cfg := range []IForestConfig{{Trees: 2, MaxSamples: 8, MaxFeatures: 1}, {Trees: 1, MaxSamples: 2, MaxFeatures: 0.5}} {
		m := newIForest(f, cfg, 1)
		enc, _ := m.MarshalBinary()
		f.Add(enc)
		_ = m.Fit(isoNormalMatrix(20, 2, 1))
		enc, _ = m.MarshalBinary()
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m IsolationForest
		if err := m.UnmarshalBinary(data); err != nil {
			return
		}
		// Leaves' unused fields are normalised, so the bytes may differ, but must decode.
		enc, err := m.MarshalBinary()
		if err == nil && !bytes.Equal(enc, data) {
			err = m.UnmarshalBinary(enc)
		}
		if err != nil {
			t.Fatalf("re-encoding a decoded forest: %v", err)
		}
		if m.d == 0 || m.d > 64 {
			return
		}
		X := isoNormalMatrix(3, m.d, 1)
		X.Data[0] = math.Inf(1)
		out := make([]float64, 3)
		if err := m.Score(X, out); err != nil {
			t.Fatal(err)
		}
		for _, s := range out {
			if !(s > 0 && s <= 1) {
				t.Fatalf("score %v", s)
			}
		}
		contrib := make([]float64, m.d)
		if err := m.Contributions(X.Row(1), contrib); err != nil {
			t.Fatal(err)
		}
		for _, c := range contrib {
			if !(c >= 0 && c <= 1) {
				t.Fatalf("contributions %v", contrib)
			}
		}
	})
}

// TestIForestScoreAllocs: scoring a batch on one worker allocates nothing.
func TestIForestScoreAllocs(t *testing.T) {
	f := newIForest(t, iforestDefaults, 1)
	X := isoNormalMatrix(300, 5, 1)
	out := make([]float64, X.Rows)
	isoFitScore(t, f, X, X)
	contrib := make([]float64, 5)
	if n := testing.AllocsPerRun(10, func() {
		_ = f.Score(X, out)
		_ = f.Contributions(X.Row(3), contrib)
	}); n != 0 {
		t.Fatalf("%v allocations per Score and Contributions", n)
	}
}

// The benchmarks use shuttle's shape, 49,097 × 9 (see BenchmarkIForestShuttle for the
// dataset itself).
func BenchmarkIForestFit(b *testing.B) {
	X := isoNormalMatrix(49097, 9, 1)
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		f := newIForest(b, iforestDefaults, uint64(i))
		if err := f.Fit(X); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIForestScore scores rows of standard normal data shaped as all of shuttle and
// as cover's test split in the peer benchmark (40 % of 286,048 × 10); ns/row is per row
// scored by all 100 trees. path=nodes is the walk of the node arrays that forests of
// deeper trees or more columns use (and all forests did before the heap copy).
func BenchmarkIForestScore(b *testing.B) {
	for _, shape := range []struct {
		name       string
		rows, cols int
	}{{"shuttle", 49097, 9}, {"cover", 114419, 10}} {
		X := isoNormalMatrix(shape.rows, shape.cols, 1)
		f := newIForest(b, iforestDefaults, 1)
		out := isoFitScore(b, f, X, X)
		for _, tc := range []struct {
			path    string
			workers int
		}{{"heap", 1}, {"heap", 2}, {"nodes", 1}} {
			b.Run(shape.name+"/path="+tc.path+"/workers="+itoa(tc.workers), func(b *testing.B) {
				g := *f
				g.SetWorkers(tc.workers)
				if tc.path == "nodes" {
					g.heap = nil
				}
				b.ReportAllocs()
				if tc.workers == 1 { // thread CPU time misses the other workers
					reportCPU(b)
				}
				for b.Loop() {
					if err := g.Score(X, out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(X.Rows), "ns/row")
			})
		}
	}
}

func BenchmarkIForestContributions(b *testing.B) {
	X := isoNormalMatrix(4096, 9, 1)
	f := newIForest(b, iforestDefaults, 1)
	isoFitScore(b, f, X, X)
	contrib := make([]float64, 9)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = f.Contributions(X.Row(i&4095), contrib)
	}
}
