package detectors

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var rrcfDefaults = RRCFConfig{Trees: 100, TreeSize: 256, Shingle: 1}

func newRRCF(t testing.TB, cfg RRCFConfig, seed uint64) *RandomCutForest {
	t.Helper()
	r, err := NewRandomCutForest(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rrcfCheck verifies every invariant the incremental updates maintain: parents, counts,
// exact bounding boxes, cuts that separate the two subtrees, FIFO slots mapped to leaves
// holding their coordinates, and free lists that account for every node.
func rrcfCheck(t testing.TB, f *rrcfForest) {
	t.Helper()
	dim := f.dim
	for ti := range f.trees {
		tr := &f.trees[ti]
		usedB, usedL := 0, 0
		var walk func(ref, parent int32) (n int32, lo, hi []float64)
		walk = func(ref, parent int32) (int32, []float64, []float64) {
			if ref < 0 {
				l := tr.lf[^ref]
				usedL++
				if l.parent != parent {
					t.Fatalf("tree %d leaf %d: parent %d, want %d", ti, ^ref, l.parent, parent)
				}
				q := f.point(l.slot)
				return l.n, slices.Clone(q), slices.Clone(q)
			}
			b := tr.br[ref]
			usedB++
			if b.parent != parent {
				t.Fatalf("tree %d branch %d: parent %d, want %d", ti, ref, b.parent, parent)
			}
			ln, llo, lhi := walk(b.child[0], ref)
			rn, rlo, rhi := walk(b.child[1], ref)
			if b.n != ln+rn {
				t.Fatalf("tree %d branch %d: n %d, children %d + %d", ti, ref, b.n, ln, rn)
			}
			if !(lhi[b.dim] <= b.cut && rlo[b.dim] > b.cut) {
				t.Fatalf("tree %d branch %d: cut %v in dim %d does not separate [.., %v] from [%v, ..]", ti, ref, b.cut, b.dim, lhi[b.dim], rlo[b.dim])
			}
			box := tr.bounds(ref, dim)
			for j := range dim {
				lo, hi := min(llo[j], rlo[j]), max(lhi[j], rhi[j])
				if box[j][0] != lo || box[j][1] != hi {
					t.Fatalf("tree %d branch %d dim %d: box [%v, %v], points span [%v, %v]", ti, ref, j, box[j][0], box[j][1], lo, hi)
				}
				llo[j], lhi[j] = lo, hi
			}
			return b.n, llo, lhi
		}
		n := int32(0)
		if tr.root != rrcfNone {
			n, _, _ = walk(tr.root, -1)
		}
		if int(n) != f.n {
			t.Fatalf("tree %d holds %d points, forest %d", ti, n, f.n)
		}
		freeB, freeL := 0, 0
		for b := tr.freeB; b >= 0; b = tr.br[b].parent {
			freeB++
		}
		for l := tr.freeL; l >= 0; l = tr.lf[l].parent {
			freeL++
		}
		if usedB+freeB != len(tr.br) || usedL+freeL != len(tr.lf) {
			t.Fatalf("tree %d: %d+%d branches, %d+%d leaves", ti, usedB, freeB, usedL, freeL)
		}
		for k := range f.n {
			slot := (f.head - 1 - k + 2*f.size) % f.size
			l := tr.lf[tr.leafOf[slot]]
			if !slices.Equal(f.point(l.slot), f.point(int32(slot))) {
				t.Fatalf("tree %d: slot %d maps to a leaf holding %v, not %v", ti, slot, f.point(l.slot), f.point(int32(slot)))
			}
		}
	}
}

// rrcfBruteCoDisp is the rrcf package's codisp, on counts found by walking the tree
// rather than the maintained n fields: max over ancestors of |sibling| / |subtree|.
func rrcfBruteCoDisp(f *rrcfForest, tr *rrcfTree, slot int32) float64 {
	var count func(ref int32) int32
	count = func(ref int32) int32 {
		if ref < 0 {
			return tr.lf[^ref].n
		}
		return count(tr.br[ref].child[0]) + count(tr.br[ref].child[1])
	}
	li := tr.leafOf[slot]
	node := ^li
	best := 0.0
	for p := tr.lf[li].parent; p >= 0; p = tr.br[p].parent {
		b := tr.br[p]
		sib := b.child[0]
		if sib == node {
			sib = b.child[1]
		}
		best = max(best, float64(count(sib))/float64(count(node)))
		node = p
	}
	return best
}

// TestRRCFInvariantsAndCoDisp runs streams with duplicates, a flat stretch, clipping and
// NaN through small forests, checking the structure and the score after every update.
func TestRRCFInvariantsAndCoDisp(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RRCFConfig
		d    int
		gen  func(rng *rand.Rand, i int, x []float64)
	}{
		{"gauss-2d", RRCFConfig{Trees: 7, TreeSize: 32, Shingle: 1}, 2, func(rng *rand.Rand, i int, x []float64) {
			for j := range x {
				x[j] = rng.NormFloat64()
			}
		}},
		{"duplicates", RRCFConfig{Trees: 7, TreeSize: 32, Shingle: 1}, 2, func(rng *rand.Rand, i int, x []float64) {
			for j := range x {
				x[j] = float64(rng.IntN(3))
			}
		}},
		{"flat-then-odd", RRCFConfig{Trees: 5, TreeSize: 16, Shingle: 1}, 3, func(rng *rand.Rand, i int, x []float64) {
			for j := range x {
				x[j] = 1
			}
			switch {
			case i > 100 && i%7 == 0:
				x[i%3] = math.Inf(1 - 2*(i%2))
			case i > 100 && i%11 == 0:
				x[i%3] = math.NaN()
			case i > 100 && i%5 == 0:
				x[i%3] = math.Copysign(0, -1)
			case i > 60:
				x[i%3] = rng.NormFloat64()
			}
		}},
		{"shingle-3", RRCFConfig{Trees: 6, TreeSize: 24, Shingle: 3}, 2, func(rng *rand.Rand, i int, x []float64) {
			x[0] = math.Sin(float64(i)/5) + 0.1*rng.NormFloat64()
			x[1] = float64(i % 4)
		}},
		// Deeper trees over 8 dimensions, with repeated values: evictions whose boxes shrink
		// several levels up, and insertions sharing a long upper path with them.
		{"shingle-4-deep", RRCFConfig{Trees: 8, TreeSize: 128, Shingle: 4}, 2, func(rng *rand.Rand, i int, x []float64) {
			for j := range x {
				x[j] = math.Sin(2*math.Pi*float64(i)/64) + 0.1*rng.NormFloat64()
				if i%13 == 0 {
					x[j] = float64(rng.IntN(3))
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRRCF(t, tc.cfg, 3)
			rng := rand.New(rand.NewPCG(1, 2))
			x := make([]float64, tc.d)
			for i := range 400 {
				tc.gen(rng, i, x)
				got := r.ScoreLearn("s", x, nil)
				f := r.forests[tc.d*tc.cfg.Shingle]
				if f == nil || f.n == 0 {
					if !math.IsNaN(got) {
						t.Fatalf("step %d: score %v before any point", i, got)
					}
					continue
				}
				rrcfCheck(t, f)
				last := int32((f.head - 1 + f.size) % f.size)
				want := 0.0
				for ti := range f.trees {
					want += rrcfBruteCoDisp(f, &f.trees[ti], last)
				}
				want /= float64(len(f.trees))
				if math.IsNaN(got) {
					if f.seen > uint64(f.warmup) {
						t.Fatalf("step %d: NaN after warm-up", i)
					}
					continue
				}
				if got != want {
					t.Fatalf("step %d: score %v, brute-force CoDisp %v", i, got, want)
				}
			}
		})
	}
}

// TestRRCFInsertionIsRandomCut: the insertion algorithm must yield trees distributed as a
// random cut tree of the whole set. For {0, 1, 3} the first cut isolates 3 with probability
// 2/3 (the gap [1, 3] is two thirds of the span), so 3's CoDisp is 2 (it displaces {0, 1})
// with probability 2/3 and 1 otherwise: 5/3 on average, whatever the insertion order.
func TestRRCFInsertionIsRandomCut(t *testing.T) {
	for _, order := range [][]float64{{0, 1, 3}, {3, 0, 1}, {1, 3, 0}} {
		r := newRRCF(t, RRCFConfig{Trees: 1000, TreeSize: 16, Shingle: 1}, 5)
		for _, v := range order {
			r.ScoreLearn("s", []float64{v}, nil)
		}
		f := r.forests[1]
		isolated := 0
		for ti := range f.trees {
			tr := &f.trees[ti]
			b := tr.br[tr.root]
			if b.child[1] < 0 && f.point(tr.lf[^b.child[1]].slot)[0] == 3 {
				isolated++
			}
		}
		// A binomial(1000, 2/3) share is within 2/3 ± 0.07 with probability > 0.9999.
		if frac := float64(isolated) / 1000; math.Abs(frac-2.0/3) > 0.07 {
			t.Fatalf("order %v: 3 isolated at the root in %.3f of the trees, want 2/3", order, frac)
		}
	}
	r := newRRCF(t, RRCFConfig{Trees: 1000, TreeSize: 8, Shingle: 1}, 7)
	r.ScoreLearn("s", []float64{0}, nil)
	r.ScoreLearn("s", []float64{1}, nil)
	if s := r.ScoreLearn("s", []float64{3}, nil); math.Abs(s-5.0/3) > 0.05 {
		t.Fatalf("CoDisp of 3 after {0, 1} = %v, want 5/3", s)
	}
}

// TestRRCFFindsOutliers: in a 2-D standard Gaussian stream, injected points 4 sd out must
// rank in the top 2% of scores (CoDisp is noisier than hst's mass: top 1% holds ~90%).
func TestRRCFFindsOutliers(t *testing.T) {
	r := newRRCF(t, rrcfDefaults, 42)
	rng := rand.New(rand.NewPCG(5, 6))
	const n, warm = 8000, 1000
	var all []scored
	for i := range n {
		x := []float64{rng.NormFloat64(), rng.NormFloat64()}
		spike := i >= warm && i%300 == 150
		if spike {
			a := rng.Float64() * 2 * math.Pi
			x[0], x[1] = 4*math.Cos(a), 4*math.Sin(a)
		}
		s := r.ScoreLearn("s", x, nil)
		if i < rrcfDefaults.TreeSize/4 {
			if !math.IsNaN(s) {
				t.Fatalf("point %d scored %v during warm-up", i, s)
			}
			continue
		}
		if !(s >= 0 && s < float64(rrcfDefaults.TreeSize)) {
			t.Fatalf("point %d: score %v", i, s)
		}
		if i >= warm {
			all = append(all, scored{s, spike})
		}
	}
	checkSpikesRankTop(t, all, 50)
}

// TestRRCFShingleSeesShapes: with a shingle, a sine wave's values stay in range when its
// phase jumps, yet the shape of the last four observations is new and scores highest.
func TestRRCFShingleSeesShapes(t *testing.T) {
	r := newRRCF(t, RRCFConfig{Trees: 100, TreeSize: 256, Shingle: 4}, 1)
	rng := rand.New(rand.NewPCG(9, 9))
	phase := 0.0
	best, bestAt := 0.0, -1
	for i := range 2000 {
		if i == 1510 {
			phase = math.Pi // the wave flips at a crest: every value is still in [−1, 1]
		}
		x := math.Sin(2*math.Pi*float64(i)/40+phase) + 0.01*rng.NormFloat64()
		s := r.ScoreLearn("s", []float64{x}, nil)
		if i > 600 && s > best {
			best, bestAt = s, i
		}
	}
	if bestAt < 1510 || bestAt > 1513 {
		t.Fatalf("highest score %v at %d, want within the shingle after the flip at 1510", best, bestAt)
	}
}

// TestRRCFContributions: a spike in one feature of four is attributed mostly to it, also
// through a shingle whose positions fold onto the feature.
func TestRRCFContributions(t *testing.T) {
	for _, shingle := range []int{1, 2} {
		r := newRRCF(t, RRCFConfig{Trees: 50, TreeSize: 256, Shingle: shingle}, 1)
		rows := normalRows(2000, 4, 2)
		contrib := make([]float64, 4)
		for _, x := range rows[:1000] {
			r.ScoreLearn("s", x, contrib)
		}
		hits := 0
		for k := range 20 {
			f := k % 4
			for _, x := range rows[1000+4*k : 1003+4*k] { // spikes apart: one shingle holds one
				r.ScoreLearn("s", x, contrib)
			}
			x := slices.Clone(rows[1003+4*k])
			x[f] = 6
			r.ScoreLearn("s", x, contrib)
			sum := 0.0
			for _, c := range contrib {
				sum += c
			}
			if math.Abs(sum-1) > 1e-9 {
				t.Fatalf("contributions %v sum to %v", contrib, sum)
			}
			if slices.Index(contrib, slices.Max(contrib)) == f {
				hits++
			}
		}
		t.Logf("shingle %d: top contribution on the spiked feature in %d of 20", shingle, hits)
		if hits < 17 {
			t.Fatalf("shingle %d: top contribution on the spiked feature in only %d of 20", shingle, hits)
		}
	}
}

func TestRRCFShingleWarmupPerSeries(t *testing.T) {
	r := newRRCF(t, RRCFConfig{Trees: 3, TreeSize: 16, Shingle: 3}, 1)
	for i := range 40 {
		if s := r.ScoreLearn("a", []float64{float64(i)}, nil); i >= 6 && math.IsNaN(s) {
			t.Fatalf("series a, record %d: NaN after warm-up", i)
		}
	}
	for i := range 2 {
		if s := r.ScoreLearn("b", []float64{float64(i)}, nil); !math.IsNaN(s) {
			t.Fatalf("series b, record %d: %v before a whole shingle", i, s)
		}
	}
	if s := r.ScoreLearn("b", []float64{2}, nil); math.IsNaN(s) {
		t.Fatal("series b: NaN with a whole shingle")
	}
	if r.Len() != 2 {
		t.Fatalf("%d series held, want 2", r.Len())
	}
	r.Forget("a")
	if r.Len() != 1 {
		t.Fatal("Forget did not drop the series")
	}
}

func TestRRCFDeterministic(t *testing.T) {
	checkSeedDeterminism(t, normalRows(800, 3, 3), func(seed uint64) Streaming {
		return newRRCF(t, RRCFConfig{Trees: 20, TreeSize: 64, Shingle: 2}, seed)
	})
}

func TestRRCFNoAllocsSteadyState(t *testing.T) {
	for _, shingle := range []int{1, 4} {
		r := newRRCF(t, RRCFConfig{Trees: 20, TreeSize: 128, Shingle: shingle}, 1)
		rows := normalRows(1024, 3, 1)
		contrib := make([]float64, 3)
		for _, x := range rows {
			r.ScoreLearn("s", x, contrib)
		}
		i := 0
		if a := testing.AllocsPerRun(1000, func() { r.ScoreLearn("s", rows[i&1023], contrib); i++ }); a != 0 {
			t.Fatalf("shingle %d: ScoreLearn allocates %v times per call, want 0", shingle, a)
		}
	}
}

func TestRRCFOddInputs(t *testing.T) {
	r := newRRCF(t, RRCFConfig{Trees: 4, TreeSize: 16, Shingle: 1}, 1)
	if s := r.ScoreLearn("s", nil, nil); !math.IsNaN(s) {
		t.Fatalf("empty record scored %v, want NaN", s)
	}
	contrib := []float64{9, 9}
	for i := range 60 {
		x := []float64{math.MaxFloat64, -math.MaxFloat64}
		if i%2 == 0 {
			x = []float64{math.NaN(), math.Inf(-1)}
		}
		s := r.ScoreLearn("s", x, contrib)
		if !(s >= 0 && s < 16 || math.IsNaN(s)) {
			t.Fatalf("score %v for %v", s, x)
		}
		if c := contrib[0] + contrib[1]; c != 0 && math.Abs(c-1) > 1e-9 {
			t.Fatalf("contributions %v", contrib)
		}
	}
	rrcfCheck(t, r.forests[2])
	for d := 3; d < 3+RRCFMaxForests+2; d++ {
		r.ScoreLearn("s", make([]float64, d), nil)
	}
	if len(r.forests) > RRCFMaxForests {
		t.Fatalf("%d forests, cap %d", len(r.forests), RRCFMaxForests)
	}
	if _, err := NewRandomCutForest(RRCFConfig{Trees: 1000, TreeSize: 100000, Shingle: 64}, 1); err == nil {
		t.Fatal("a forest of 1000 trees × 100000 points × 64 dimensions was accepted")
	}
}

// BenchmarkRRCF is the target: 100 trees of 256 points over shingles of 4 of one
// feature, at least 30,000 updates/s on one core.
func BenchmarkRRCF(b *testing.B) {
	r := newRRCF(b, RRCFConfig{Trees: 100, TreeSize: 256, Shingle: 4}, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, 4096)
	for i := range xs {
		xs[i] = math.Sin(2*math.Pi*float64(i)/64) + 0.1*rng.NormFloat64()
	}
	x := make([]float64, 1)
	contrib := make([]float64, 1)
	for i := range 1024 {
		x[0] = xs[i&4095]
		r.ScoreLearn("s", x, contrib)
	}
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		x[0] = xs[i&4095]
		r.ScoreLearn("s", x, contrib)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
