package detectors

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var xstreamDefaults = XStreamConfig{Projections: 100, Chains: 100, Depth: 15, Window: 250}

func newXStream(t testing.TB, cfg XStreamConfig, seed uint64) *XStream {
	t.Helper()
	x, err := NewXStream(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestXStreamFindsOutliers: in a 2-D standard Gaussian stream, injected points 4 sd out must
// rank in the top 1% of scores, and scores must stay in [0,1].
func TestXStreamFindsOutliers(t *testing.T) {
	x := newXStream(t, xstreamDefaults, 42)
	rng := rand.New(rand.NewPCG(5, 6))
	const n, warm = 12000, 1000
	var all []scored
	for i := range n {
		rec := []float64{rng.NormFloat64(), rng.NormFloat64()}
		spike := i >= warm && i%300 == 150
		if spike {
			a := rng.Float64() * 2 * math.Pi
			rec[0], rec[1] = 4*math.Cos(a), 4*math.Sin(a)
		}
		s := x.ScoreLearn("s", rec, nil)
		if i < xstreamDefaults.Window {
			if !math.IsNaN(s) {
				t.Fatalf("record %d scored %v during the first window, want NaN", i, s)
			}
			continue
		}
		if !(s >= 0 && s <= 1) {
			t.Fatalf("record %d: score %v out of [0,1]", i, s)
		}
		if i >= warm {
			all = append(all, scored{s, spike})
		}
	}
	checkSpikesRankTop(t, all, 100)
}

// TestXStreamHighDimensional: the projections make a 40-feature record whose features are
// each only 2.5 sd out, but all at once, stand out (a joint anomaly no single feature shows).
func TestXStreamHighDimensional(t *testing.T) {
	x := newXStream(t, xstreamDefaults, 3)
	rows := normalRows(5000, 40, 8)
	var normal []float64
	var odd []float64
	for i, r := range rows {
		if i > 1000 && i%250 == 0 {
			r = slices.Clone(r)
			for j := range r {
				r[j] = 2.5 * math.Copysign(1, float64(j%2)-0.5)
			}
			odd = append(odd, x.ScoreLearn("s", r, nil))
			continue
		}
		s := x.ScoreLearn("s", r, nil)
		if i > 1000 {
			normal = append(normal, s)
		}
	}
	slices.Sort(normal)
	p99 := normal[len(normal)*99/100]
	for _, s := range odd {
		if !(s > p99) {
			t.Fatalf("joint outliers scored %v, the 99th percentile of normal records is %v", odd, p99)
		}
	}
}

func TestXStreamContributions(t *testing.T) {
	x := newXStream(t, xstreamDefaults, 1)
	rows := normalRows(3000, 4, 2)
	contrib := make([]float64, 4)
	for _, r := range rows[:2000] {
		x.ScoreLearn("s", r, contrib)
	}
	hits := 0
	for k := range 20 {
		f := k % 4
		r := slices.Clone(rows[2000+k])
		r[f] = 6
		x.ScoreLearn("s", r, contrib)
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
	t.Logf("top contribution on the spiked feature in %d of 20", hits)
	if hits < 16 {
		t.Fatalf("top contribution on the spiked feature in only %d of 20", hits)
	}
}

func TestXStreamDeterministic(t *testing.T) {
	checkSeedDeterminism(t, normalRows(1200, 3, 3), func(seed uint64) Streaming {
		return newXStream(t, XStreamConfig{Projections: 20, Chains: 20, Depth: 10, Window: 100}, seed)
	})
}

// TestXStreamEpochSweep: crossing the renumbering pass of the window counter changes no
// score.
func TestXStreamEpochSweep(t *testing.T) {
	cfg := XStreamConfig{Projections: 10, Chains: 10, Depth: 8, Window: 20}
	rows := normalRows(400, 2, 4)
	a, b := newXStream(t, cfg, 1), newXStream(t, cfg, 1)
	for i, r := range rows {
		if i == 30 { // warm: move b's epoch next to the wrap, keeping its meaning
			m := b.models[2]
			shift := uint32(math.MaxUint32-3) - m.epoch
			for j := range m.tab {
				if m.tab[j].epoch != 0 {
					m.tab[j].epoch += shift
				}
			}
			m.epoch += shift
		}
		sa, sb := a.ScoreLearn("s", r, nil), b.ScoreLearn("s", r, nil)
		if math.Float64bits(sa) != math.Float64bits(sb) {
			t.Fatalf("record %d: %v without the sweep, %v with it", i, sa, sb)
		}
	}
	if e := b.models[2].epoch; e > 100 {
		t.Fatalf("the sweep did not happen: epoch %d", e)
	}
}

func TestXStreamNoAllocsSteadyState(t *testing.T) {
	x := newXStream(t, xstreamDefaults, 1)
	rows := normalRows(1024, 10, 1)
	contrib := make([]float64, 10)
	for _, r := range rows {
		x.ScoreLearn("s", r, contrib)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() { x.ScoreLearn("s", rows[i&1023], contrib); i++ }); a != 0 {
		t.Fatalf("ScoreLearn allocates %v times per call, want 0", a)
	}
}

func TestXStreamOddInputs(t *testing.T) {
	x := newXStream(t, XStreamConfig{Projections: 8, Chains: 5, Depth: 6, Window: 16}, 1)
	if s := x.ScoreLearn("s", nil, nil); !math.IsNaN(s) {
		t.Fatalf("empty record scored %v, want NaN", s)
	}
	contrib := []float64{9, 9}
	for i := range 60 {
		r := []float64{math.MaxFloat64, math.Inf(-1)}
		if i%2 == 0 {
			r = []float64{math.NaN(), -1e300}
		}
		s := x.ScoreLearn("s", r, contrib)
		if !(s >= 0 && s <= 1 || math.IsNaN(s)) {
			t.Fatalf("score %v for %v", s, r)
		}
		if c := contrib[0] + contrib[1]; c != 0 && math.Abs(c-1) > 1e-9 {
			t.Fatalf("contributions %v", contrib)
		}
	}
	for d := 3; d < 3+XStreamMaxModels+2; d++ {
		x.ScoreLearn("s", make([]float64, d), nil)
	}
	if len(x.models) > XStreamMaxModels {
		t.Fatalf("%d models, cap %d", len(x.models), XStreamMaxModels)
	}
	if _, err := NewXStream(XStreamConfig{Projections: 10, Chains: 1000, Depth: 40, Window: 65535}, 1); err == nil {
		t.Fatal("count tables of 1000 × 40 × 131072 cells were accepted")
	}
}

func BenchmarkXStream(b *testing.B) {
	x := newXStream(b, xstreamDefaults, 1)
	rows := normalRows(4096, 10, 1)
	contrib := make([]float64, 10)
	for i := range 2 * xstreamDefaults.Window {
		x.ScoreLearn("s", rows[i&4095], contrib)
	}
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		x.ScoreLearn("s", rows[i&4095], contrib)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
