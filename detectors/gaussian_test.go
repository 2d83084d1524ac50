package detectors

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func newGaussian(t testing.TB, window, minSamples int) *WindowedGaussian {
	t.Helper()
	g, err := NewWindowedGaussian(window, minSamples)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGaussianHandComputed: {1,2,3,4} has mean 2.5 and population variance 1.25, so 5
// scores 2.5/√1.25; the window of 4 slides to {2,3,4,5} (mean 3.5, variance 1.25), so 6
// scores 2.5/√1.25 too; then {3,4,5,6} (mean 4.5, variance 1.25): 3.5 scores 1/√1.25.
func TestGaussianHandComputed(t *testing.T) {
	g := newGaussian(t, 4, 4)
	for _, x := range []float64{1, 2, 3, 4} {
		if s := g.ScoreLearn("a", []float64{x}, nil); !math.IsNaN(s) {
			t.Fatalf("score %v before min_samples, want NaN (no judgement)", s)
		}
	}
	sd := math.Sqrt(1.25)
	for _, st := range []struct{ x, want float64 }{
		{5, 2.5 / sd},
		{6, 2.5 / sd},
		{3.5, 1 / sd},
		// {4,5,6,3.5}: mean 4.625, squared deviations 0.390625+0.140625+1.890625+1.265625.
		{1, 3.625 / math.Sqrt(3.6875/4)},
	} {
		if got := g.ScoreLearn("a", []float64{st.x}, nil); math.Abs(got-st.want) > 1e-12 {
			t.Fatalf("score(%v) = %v, want %v", st.x, got, st.want)
		}
	}
}

// TestGaussianWarmUp: NaN until a feature has min_samples values; one ready feature is
// enough for a record to be judged.
func TestGaussianWarmUp(t *testing.T) {
	g := newGaussian(t, 16, 3)
	for i := range 3 {
		if s := g.ScoreLearn("a", []float64{float64(i), math.NaN()}, nil); !math.IsNaN(s) {
			t.Fatalf("record %d scored %v while warming up", i, s)
		}
	}
	if s := g.ScoreLearn("a", []float64{1, math.NaN()}, nil); math.IsNaN(s) || s != 0 {
		t.Fatalf("the mean after warm-up scored %v, want 0", s)
	}
}

// TestGaussianIgnoresNonFinite: NaN and ±Inf score 0, take no share and are not learned.
func TestGaussianIgnoresNonFinite(t *testing.T) {
	clean, dirty := newGaussian(t, 8, 4), newGaussian(t, 8, 4)
	contrib := make([]float64, 2)
	bad := []float64{math.NaN(), math.Inf(1), math.Inf(-1)}
	for i := range 40 {
		x := []float64{float64(i % 5), float64(i % 3)}
		// Interleaved wholly non-finite records change nothing, and score NaN (no judgement).
		if s := dirty.ScoreLearn("s", []float64{bad[i%3], bad[(i+1)%3]}, contrib); !math.IsNaN(s) || contrib[0] != 0 || contrib[1] != 0 {
			t.Fatalf("record %d: all non-finite scored %v, contributions %v", i, s, contrib)
		}
		a, b := clean.ScoreLearn("s", x, nil), dirty.ScoreLearn("s", x, nil)
		if math.Float64bits(a) != math.Float64bits(b) {
			t.Fatalf("record %d: %v, want %v: a non-finite value was learned", i, b, a)
		}
		// One non-finite feature takes no share and is not learned either.
		if i >= 4 {
			s := dirty.ScoreLearn("t", []float64{x[0] * 10, bad[i%3]}, contrib)
			if !finite(s) || contrib[1] != 0 || (s > 0 && math.Abs(contrib[0]-1) > 1e-15) {
				t.Fatalf("record %d: score %v, contributions %v", i, s, contrib)
			}
		} else {
			dirty.ScoreLearn("t", []float64{x[0] * 10, bad[i%3]}, nil)
		}
	}
	if w := dirty.series["t"].wins[1]; w.n != 0 || w.mean != 0 || w.m2 != 0 {
		t.Fatalf("non-finite values learned: %+v", w)
	}
}

// TestGaussianConstantThenJump: a constant window has variance 0; the floor makes a change
// large and finite, and the constant itself scores 0.
func TestGaussianConstantThenJump(t *testing.T) {
	for _, level := range []float64{0, 5, -3e6} {
		g := newGaussian(t, 64, 8)
		for i := range 100 {
			if s := g.ScoreLearn("s", []float64{level}, nil); i >= 8 && s != 0 {
				t.Fatalf("level %v, record %d: constant scored %v", level, i, s)
			}
		}
		// The floor is relative, madFloorRel·(|mean|+1), as RobustZ's MAD floor.
		s, want := g.ScoreLearn("s", []float64{level + 1}, nil), 1/(madFloorRel*(math.Abs(level)+1))
		if math.IsInf(s, 0) || math.IsNaN(s) || math.Abs(s-want) > 1e-9*want {
			t.Fatalf("level %v: a jump of 1 after a constant scored %v, want %v", level, s, want)
		}
		// And a value near the float64 range is capped, not +Inf.
		if s := g.ScoreLearn("s", []float64{1e300}, nil); s != scoreCap {
			t.Fatalf("level %v: 1e300 scored %v, want the cap %v", level, s, scoreCap)
		}
	}
}

// TestGaussianContributions: shares are in [0, 1], sum to 1 and are proportional to the
// per-feature z; the record's score is the largest z.
func TestGaussianContributions(t *testing.T) {
	g := newGaussian(t, 32, 8)
	rows := normalRows(100, 3, 7)
	contrib := make([]float64, 3)
	for _, r := range rows {
		g.ScoreLearn("s", r, contrib)
	}
	w := g.series["s"].wins
	x := []float64{0.5, -2, 4}
	z := []float64{w[0].z(x[0]), w[1].z(x[1]), w[2].z(x[2])}
	s := g.ScoreLearn("s", x, contrib)
	sum := z[0] + z[1] + z[2]
	if s != max(z[0], z[1], z[2]) {
		t.Fatalf("score %v, want the largest of %v", s, z)
	}
	total := 0.0
	for f, c := range contrib {
		if c < 0 || c > 1 || math.Abs(c-z[f]/sum) > 1e-12 {
			t.Fatalf("contributions %v, want %v/%v", contrib, z, sum)
		}
		total += c
	}
	if math.Abs(total-1) > 1e-12 {
		t.Fatalf("contributions sum to %v", total)
	}
	if contrib[2] < contrib[1] || contrib[1] < contrib[0] {
		t.Fatalf("contributions %v do not follow |x|", contrib)
	}
}

// TestGaussianStableAtLargeLevel: a level of 1e9 with a spread of 1 keeps the mean and
// variance of a two-pass computation over the window (a running Σx² − n·mean² would not),
// through many exact recomputations and the slid updates between them.
func TestGaussianStableAtLargeLevel(t *testing.T) {
	g := newGaussian(t, 64, 8)
	rng := rand.New(rand.NewPCG(3, 4))
	var vals []float64
	for i := range 5000 {
		v := 1e9 + rng.NormFloat64()
		vals = append(vals, v)
		g.ScoreLearn("s", []float64{v}, nil)
		if i%61 != 0 || i < 64 {
			continue
		}
		win := vals[len(vals)-64:]
		mean := 0.0
		for _, v := range win {
			mean += v
		}
		mean /= 64
		m2 := 0.0
		for _, v := range win {
			m2 += (v - mean) * (v - mean)
		}
		w := g.series["s"].wins[0]
		if math.Abs(w.mean-mean) > 1e-6 || math.Abs(w.m2-m2) > 1e-6*m2 {
			t.Fatalf("record %d: mean %v m2 %v, two-pass %v %v", i, w.mean, w.m2, mean, m2)
		}
	}
}

// TestGaussianSnapshotRoundTrip: restore mid-stream (in warm-up, just before and after an
// exact recomputation) and both copies score bit for bit alike thereafter.
func TestGaussianSnapshotRoundTrip(t *testing.T) {
	rows := normalRows(700, 2, 9)
	for i := range rows {
		rows[i][0] = 1e6 + 1e3*rows[i][0] // a level, so the slid updates round
		if i%50 == 7 {
			rows[i][1] = math.NaN()
		}
	}
	for _, cut := range []int{0, 3, 63, 64, 127, 128, 129, 333} {
		orig := newGaussian(t, 32, 5)
		series := func(i int) string { return []string{"a", "b"}[i%2] }
		for i, r := range rows[:cut] {
			orig.ScoreLearn(series(i), r, nil)
		}
		data, err := orig.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		res := new(WindowedGaussian)
		if err := res.UnmarshalBinary(data); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if again, _ := res.MarshalBinary(); !bytes.Equal(again, data) {
			t.Fatalf("cut %d: restored snapshot re-encodes differently", cut)
		}
		ca, cb := make([]float64, 2), make([]float64, 2)
		for i, r := range rows[cut:] {
			a, b := orig.ScoreLearn(series(cut+i), r, ca), res.ScoreLearn(series(cut+i), r, cb)
			if math.Float64bits(a) != math.Float64bits(b) || ca[0] != cb[0] || ca[1] != cb[1] {
				t.Fatalf("cut %d, record %d: %v %v resumed as %v %v", cut, cut+i, a, ca, b, cb)
			}
		}
	}
}

// TestGaussianSnapshotCorrupt: truncations, another type's tag, a NaN mean, a negative m2
// and a non-finite window value are ErrSnapshotCorrupt, and leave the receiver alone.
func TestGaussianSnapshotCorrupt(t *testing.T) {
	g := newGaussian(t, 8, 2)
	for i := range 20 {
		g.ScoreLearn("s", []float64{float64(i % 3)}, nil)
	}
	data, _ := g.MarshalBinary()
	for n := range len(data) {
		if err := new(WindowedGaussian).UnmarshalBinary(data[:n]); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("%d-byte prefix: %v", n, err)
		}
	}
	z := newZScore(t, 8, 2)
	zb, _ := z.MarshalBinary()
	if err := new(WindowedGaussian).UnmarshalBinary(zb); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("zscore snapshot into gaussian: %v", err)
	}
	// Layout after the header: window 8, min 2, 1 series, name "s", width 1, count 8,
	// evictions, then mean and m2 at a fixed offset.
	off := 2 + 1 + 1 + 1 + 2 + 1 + 1 + 1
	for _, tc := range []struct {
		at  int
		val float64
	}{{off, math.NaN()}, {off + 8, -1}, {off + 8, math.NaN()}, {off + 16, math.Inf(1)}, {off + 16 + 7*8, math.NaN()}} {
		bad := bytes.Clone(data)
		putF64(bad[tc.at:], tc.val)
		keep := newGaussian(t, 8, 2)
		keep.ScoreLearn("k", []float64{1}, nil)
		before, _ := keep.MarshalBinary()
		if err := keep.UnmarshalBinary(bad); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("%v at %d: %v", tc.val, tc.at, err)
		}
		if after, _ := keep.MarshalBinary(); !bytes.Equal(before, after) {
			t.Fatal("a failed restore changed the receiver")
		}
	}
}

func putF64(b []byte, v float64) {
	u := math.Float64bits(v)
	for i := range 8 {
		b[i] = byte(u >> (8 * i))
	}
}

func TestGaussianSeriesLenForget(t *testing.T) {
	g := newGaussian(t, 8, 2)
	for i := range 10 {
		g.ScoreLearn("quiet", []float64{float64(i % 2)}, nil)
		g.ScoreLearn("loud", []float64{1000 * float64(i%2)}, nil)
	}
	if s := g.ScoreLearn("quiet", []float64{1}, nil); s > 2 {
		t.Fatalf("quiet series scored %v for a usual value: state leaked between series", s)
	}
	if g.Len() != 2 {
		t.Fatalf("Len = %d, want 2", g.Len())
	}
	g.Forget("loud")
	if g.Len() != 1 {
		t.Fatalf("Len after Forget = %d, want 1", g.Len())
	}
}

func TestGaussianNoAllocsSteadyState(t *testing.T) {
	g := newGaussian(t, 64, 8)
	rows := normalRows(512, 4, 1)
	contrib := make([]float64, 4)
	for _, r := range rows {
		g.ScoreLearn("s", r, contrib)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() { g.ScoreLearn("s", rows[i%512], contrib); i++ }); a != 0 {
		t.Fatalf("ScoreLearn allocates %v times per call for a known series, want 0", a)
	}
}

func TestGaussianConstructorErrors(t *testing.T) {
	if _, err := NewWindowedGaussian(8, 9); err == nil {
		t.Fatal("min_samples > window accepted")
	}
	if _, err := NewWindowedGaussian(0, 1); err == nil {
		t.Fatal("window 0 accepted")
	}
}

func BenchmarkGaussian(b *testing.B) {
	g := newGaussian(b, 64, 8)
	rows := normalRows(4096, 10, 1)
	contrib := make([]float64, 10)
	for _, r := range rows[:128] {
		g.ScoreLearn("s", r, contrib)
	}
	b.ResetTimer()
	for i := range b.N {
		g.ScoreLearn("s", rows[i%4096], contrib)
	}
}
