package detectors

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
)

var eifDefaults = EIFConfig{Trees: 100, MaxSamples: 256, ExtensionLevel: -1}

func newEIF(t testing.TB, cfg EIFConfig, seed uint64) *ExtendedIsolationForest {
	t.Helper()
	f, err := NewExtendedIsolationForest(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// eifInner returns the slope (features and coefficients) of every inner node of f.
func eifInner(f *ExtendedIsolationForest) (feats [][]uint32, coefs [][]float64) {
	for t := range f.steps {
		nodes := f.nodes[f.base[t]:f.base[t+1]]
		coef := f.coef[f.cbase[t]:f.cbase[t+1]]
		for i, n := range nodes {
			if int(n.left) == i {
				continue
			}
			c := coef[n.off : int(n.off)+f.k]
			fs := make([]uint32, f.k)
			if f.feat == nil {
				for j := range fs {
					fs[j] = uint32(j)
				}
			} else {
				copy(fs, f.feat[int(f.cbase[t])+int(n.off):][:f.k])
			}
			feats, coefs = append(feats, fs), append(coefs, c)
		}
	}
	return feats, coefs
}

// TestEIFExtensionLevel: extension_level e gives slopes of e+1 distinct features (all
// of them for −1), and one beyond columns − 1 is an error naming the parameter.
func TestEIFExtensionLevel(t *testing.T) {
	X := isoNormalMatrix(400, 5, 1)
	for _, tc := range []struct{ level, k int }{{-1, 5}, {0, 1}, {2, 3}, {4, 5}} {
		f := newEIF(t, EIFConfig{Trees: 10, MaxSamples: 64, ExtensionLevel: tc.level}, 1)
		if err := f.Fit(X); err != nil {
			t.Fatal(err)
		}
		feats, coefs := eifInner(f)
		if f.k != tc.k || len(feats) == 0 {
			t.Fatalf("extension_level %d: %d components, %d inner nodes", tc.level, f.k, len(feats))
		}
		used := map[uint32]bool{}
		for i, fs := range feats {
			for j, q := range fs {
				used[q] = true
				if q >= 5 || slices.Contains(fs[:j], q) || coefs[i][j] == 0 {
					t.Fatalf("extension_level %d: slope %v on features %v", tc.level, coefs[i], fs)
				}
			}
		}
		if len(used) != 5 {
			t.Fatalf("extension_level %d: only features %v are ever cut on", tc.level, used)
		}
	}
	f := newEIF(t, EIFConfig{Trees: 10, MaxSamples: 64, ExtensionLevel: 5}, 1)
	if err := f.Fit(X); err == nil || !strings.Contains(err.Error(), "extension_level = 5 must be at most columns − 1 = 4") {
		t.Fatalf("extension_level 5 on 5 columns: %v", err)
	}
}

// TestEIFMatchesDefinition: the blocked, lockstep descent gives the score of walking
// each tree to x's leaf, testing slope·x against the threshold at every inner node.
func TestEIFMatchesDefinition(t *testing.T) {
	train := isoNormalMatrix(1000, 4, 1)
	test := isoNormalMatrix(700, 4, 2) // several blocks and a partial one
	for i := 0; i < test.Rows; i += 50 {
		test.Row(i)[i%4] = 6
	}
	test.Row(1)[2] = math.Inf(1)
	for _, level := range []int{-1, 1} {
		f := newEIF(t, EIFConfig{Trees: 30, MaxSamples: 128, ExtensionLevel: level}, 3)
		got := isoFitScore(t, f, train, test)
		for r := range test.Rows {
			x, sum := test.Row(r), 0.0
			for tr := range f.steps {
				nodes := f.nodes[f.base[tr]:f.base[tr+1]]
				coef := f.coef[f.cbase[tr]:f.cbase[tr+1]]
				i := 0
				for int(nodes[i].left) != i {
					n := nodes[i]
					dot := 0.0
					for j, c := range coef[n.off:][:f.k] {
						q := j
						if f.feat != nil {
							q = int(f.feat[f.cbase[tr]:][n.off:][j])
						}
						dot += float64(c * x[q])
					}
					i = int(n.left)
					if dot > n.b {
						i++
					}
				}
				sum += f.pathLen[int(f.base[tr])+i]
			}
			if want := math.Exp2(-sum / (30 * isoAvgPath(128))); math.Abs(got[r]-want) > 1e-15 {
				t.Fatalf("extension_level %d, row %d: score %v, by definition %v", level, r, got[r], want)
			}
		}
	}
}

// TestEIFTreeShape: roots hold ψ rows, children split their parent's rows (one side may
// be empty), and no leaf is deeper than the height limit.
func TestEIFTreeShape(t *testing.T) {
	for _, level := range []int{-1, 0} {
		f := newEIF(t, EIFConfig{Trees: 20, MaxSamples: 100, ExtensionLevel: level}, 1)
		if err := f.Fit(isoNormalMatrix(1000, 3, 1)); err != nil {
			t.Fatal(err)
		}
		h := isoHeight(100)
		for tr := range f.steps {
			nodes, size := f.nodes[f.base[tr]:f.base[tr+1]], f.size[f.base[tr]:f.base[tr+1]]
			pathLen := f.pathLen[f.base[tr]:f.base[tr+1]]
			depth := make([]int, len(nodes))
			if size[0] != 100 {
				t.Fatalf("tree %d: root holds %d rows", tr, size[0])
			}
			for i, n := range nodes {
				if int(n.left) == i {
					if depth[i] > h || depth[i] > int(f.steps[tr]) || pathLen[i] != float64(depth[i])+isoAvgPath(int(size[i])) {
						t.Fatalf("tree %d leaf %d: depth %d, h %v", tr, i, depth[i], pathLen[i])
					}
					continue
				}
				l := n.left
				if size[l]+size[l+1] != size[i] {
					t.Fatalf("tree %d node %d: %d rows into %d and %d", tr, i, size[i], size[l], size[l+1])
				}
				depth[l], depth[l+1] = depth[i]+1, depth[i]+1
			}
		}
	}
}

// TestEIFFarPointScoresHighest: a point off a tilted 2-D ellipse, though inside the range
// of both features, gets the top score; all scores are in (0, 1].
func TestEIFFarPointScoresHighest(t *testing.T) {
	X := isoNormalMatrix(600, 2, 4)
	for i := range X.Rows {
		r := X.Row(i)
		r[0], r[1] = 2*r[0], 2*r[0]+0.3*r[1] // along the diagonal
	}
	copy(X.Row(77), []float64{4, -4}) // across it
	for _, workers := range []int{1, 2} {
		f := newEIF(t, eifDefaults, 1)
		f.SetWorkers(workers)
		s := isoFitScore(t, f, X, X)
		top := slices.Index(s, slices.Max(s))
		if top != 77 {
			t.Fatalf("workers %d: top score %v at row %d; the far point scores %v", workers, s[top], top, s[77])
		}
		for i, v := range s {
			if !(v > 0 && v <= 1) {
				t.Fatalf("row %d: score %v", i, v)
			}
		}
	}
}

// TestEIFDeterministic: the same seed gives the same scores bit for bit, whatever the
// number of workers; another seed does not.
func TestEIFDeterministic(t *testing.T) {
	train, test := isoNormalMatrix(2000, 4, 1), isoNormalMatrix(1000, 4, 2)
	var runs [][]float64
	for _, tc := range []struct {
		seed    uint64
		workers int
	}{{7, 1}, {7, 1}, {7, 2}, {8, 1}} {
		f := newEIF(t, eifDefaults, tc.seed)
		f.SetWorkers(tc.workers)
		runs = append(runs, isoFitScore(t, f, train, test))
	}
	isoSameBits(t, "seed 7, again", runs[0], runs[1])
	isoSameBits(t, "seed 7, two workers", runs[0], runs[2])
	if slices.Equal(runs[0], runs[3]) {
		t.Fatal("seeds 7 and 8 give the same scores")
	}
}

// TestEIFConstantAndTinyData: identical rows and a single row fit without error and
// score alike.
func TestEIFConstantAndTinyData(t *testing.T) {
	for _, X := range []Matrix{
		{Rows: 40, Cols: 2, Data: slices.Repeat([]float64{3, -1}, 40)},
		{Rows: 1, Cols: 2, Data: []float64{3, -1}},
	} {
		s := isoFitScore(t, newEIF(t, eifDefaults, 1), X, X)
		for _, v := range s {
			if v != s[0] || !(v > 0 && v <= 1) {
				t.Fatalf("%d rows: scores %v", X.Rows, s)
			}
		}
	}
}

// TestEIFPersistence: restored forests, dense and sparse slopes, score bit for bit as the
// originals and re-encode to the same bytes; an unfitted one keeps its configuration.
func TestEIFPersistence(t *testing.T) {
	train, test := isoNormalMatrix(1000, 6, 1), isoNormalMatrix(300, 6, 2)
	for _, cfg := range []EIFConfig{eifDefaults, {Trees: 7, MaxSamples: 50, ExtensionLevel: 2}, {Trees: 3, MaxSamples: 2, ExtensionLevel: 0}} {
		f := newEIF(t, cfg, 9)
		want := isoFitScore(t, f, train, test)
		enc, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var g ExtendedIsolationForest
		if err := g.UnmarshalBinary(enc); err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		got := make([]float64, test.Rows)
		if err := g.Score(test, got); err != nil {
			t.Fatal(err)
		}
		isoSameBits(t, "restored", want, got)
		if again, _ := g.MarshalBinary(); !bytes.Equal(enc, again) {
			t.Fatal("re-encoding a restored forest changes the bytes")
		}
		isoSameBits(t, "refit after restore", want, isoFitScore(t, &g, train, test))
	}
	u := newEIF(t, EIFConfig{Trees: 3, MaxSamples: 10, ExtensionLevel: 1}, 4)
	enc, _ := u.MarshalBinary()
	var g ExtendedIsolationForest
	if err := g.UnmarshalBinary(enc); err != nil || g.cfg != u.cfg || g.seed != 4 || g.d != 0 {
		t.Fatalf("unfitted round trip: %+v, %v", g.cfg, err)
	}
}

// TestEIFDecodeRejects: unknown versions, every truncation, trailing bytes and broken
// trees are errors that leave the forest as it was.
func TestEIFDecodeRejects(t *testing.T) {
	f := newEIF(t, EIFConfig{Trees: 3, MaxSamples: 16, ExtensionLevel: 1}, 1)
	if err := f.Fit(isoNormalMatrix(100, 3, 1)); err != nil {
		t.Fatal(err)
	}
	enc, _ := f.MarshalBinary()
	var g ExtendedIsolationForest
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
	const root = 1 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 4 // version, seed, cfg, d, ψ, k, node count
	bad(func(b []byte) []byte { b[0] = 0; return b }, "unknown encoding version 0")
	bad(func(b []byte) []byte { return append(b, 1, 2) }, "2 bytes after the last tree")
	bad(func(b []byte) []byte { b[17] = 7; return b }, "extension_level 7")                           // cfg
	bad(func(b []byte) []byte { b[root+3] = 0x7f; return b }, "has children")                         // root's left child
	bad(func(b []byte) []byte { b[root+4]++; return b }, "the root holds 17 rows, not 16")            // root's size
	bad(func(b []byte) []byte { b[root+8+8+2*8] = 3; return b }, "cuts on feature 3 of 3")            // root's first feature
	bad(func(b []byte) []byte { b[root-8] = 3; return b }, "slopes of 3 components")                  // k
	bad(func(b []byte) []byte { b[root-12] = 200; return b }, "200 samples per tree, max_samples is") // ψ
}

// FuzzEIFUnmarshal: no input makes decoding panic, and whatever decodes can score and
// re-encode to bytes that decode.
func FuzzEIFUnmarshal(f *testing.F) {
	for _, cfg := range []EIFConfig{{Trees: 2, MaxSamples: 8, ExtensionLevel: -1}, {Trees: 1, MaxSamples: 4, ExtensionLevel: 0}} {
		m := newEIF(f, cfg, 1)
		enc, _ := m.MarshalBinary()
		f.Add(enc)
		_ = m.Fit(isoNormalMatrix(20, 2, 1))
		enc, _ = m.MarshalBinary()
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m ExtendedIsolationForest
		if err := m.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := m.MarshalBinary()
		if err == nil && !bytes.Equal(enc, data) {
			err = m.UnmarshalBinary(enc) // leaves' unused thresholds are not kept
		}
		if err != nil {
			t.Fatalf("re-encoding a decoded forest: %v", err)
		}
		if m.d == 0 || m.d > 64 {
			return
		}
		X := isoNormalMatrix(3, m.d, 1)
		X.Data[0] = math.Inf(-1)
		out := make([]float64, 3)
		if err := m.Score(X, out); err != nil {
			t.Fatal(err)
		}
		for _, s := range out {
			if !(s > 0 && s <= 1) {
				t.Fatalf("score %v", s)
			}
		}
	})
}

func BenchmarkEIFFit(b *testing.B) {
	X := isoNormalMatrix(49097, 9, 1)
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		if err := newEIF(b, eifDefaults, uint64(i)).Fit(X); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEIFScore(b *testing.B) {
	for _, level := range []int{-1, 0} {
		b.Run("extension_level="+itoa(level), func(b *testing.B) {
			X := isoNormalMatrix(49097, 9, 1)
			f := newEIF(b, EIFConfig{Trees: 100, MaxSamples: 256, ExtensionLevel: level}, 1)
			out := isoFitScore(b, f, X, X)
			b.ReportAllocs()
			reportCPU(b)
			for b.Loop() {
				if err := f.Score(X, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(X.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
