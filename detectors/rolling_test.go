package detectors

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// bruteMedianMAD is the textbook definition, sorting copies, to check RollingRobust against.
func bruteMedianMAD(vals []float64) (float64, float64) {
	if len(vals) == 0 {
		return 0, 0
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		n := len(s)
		if n%2 == 1 {
			return s[n/2]
		}
		return (s[n/2-1] + s[n/2]) / 2
	}
	m := med(vals)
	dev := make([]float64, len(vals))
	for i, v := range vals {
		dev[i] = math.Abs(v - m)
	}
	return m, med(dev)
}

// TestRollingRobustMatchesBruteForce is a property test: over many seeds, window sizes
// and value distributions (with and without ties), every Add leaves the sorted window, the
// median and the MAD exactly equal to recomputing them from the last W values.
func TestRollingRobustMatchesBruteForce(t *testing.T) {
	windows := []int{1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 100}
	gens := map[string]func(*rand.Rand) float64{
		"normal":   func(r *rand.Rand) float64 { return r.NormFloat64() },
		"ties":     func(r *rand.Rand) float64 { return float64(r.IntN(4)) },
		"skewed":   func(r *rand.Rand) float64 { return math.Exp(3 * r.NormFloat64()) },
		"trending": func(r *rand.Rand) float64 { return r.Float64() + float64(r.IntN(1000)) },
	}
	for seed := uint64(1); seed <= 25; seed++ {
		for _, w := range windows {
			for name, gen := range gens {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				rr := NewRollingRobust(w)
				var hist []float64
				for i := range 3*w + 20 {
					x := gen(rng)
					rr.Add(x)
					hist = append(hist, x)
					last := hist[max(0, len(hist)-w):]
					if rr.Len() != len(last) {
						t.Fatalf("%s seed %d w %d step %d: Len = %d, want %d", name, seed, w, i, rr.Len(), len(last))
					}
					want := slices.Sorted(slices.Values(last))
					if !slices.Equal(rr.sorted, want) {
						t.Fatalf("%s seed %d w %d step %d: sorted window %v, want %v", name, seed, w, i, rr.sorted, want)
					}
					m, mad := bruteMedianMAD(last)
					if got := rr.Median(); got != m {
						t.Fatalf("%s seed %d w %d step %d: Median = %v, want %v", name, seed, w, i, got, m)
					}
					if got := rr.MAD(); got != mad {
						t.Fatalf("%s seed %d w %d step %d: MAD = %v, want %v (window %v)", name, seed, w, i, got, mad, last)
					}
				}
			}
		}
	}
}

func TestRollingRobustEdgeCases(t *testing.T) {
	rr := NewRollingRobust(4)
	if rr.Median() != 0 || rr.MAD() != 0 || rr.RobustZ(5) != 0 {
		t.Fatal("empty window: want median, MAD and RobustZ 0")
	}
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		rr.Add(x)
	}
	if rr.Len() != 0 {
		t.Fatalf("non-finite values were added: Len = %d", rr.Len())
	}
	// A constant window has MAD 0: RobustZ must stay finite, large for a change, 0 for none.
	for range 4 {
		rr.Add(7)
	}
	if z := rr.RobustZ(7); z != 0 {
		t.Fatalf("RobustZ(7) on constant 7s = %v, want 0", z)
	}
	if z := rr.RobustZ(8); math.IsInf(z, 0) || z < 1e6 {
		t.Fatalf("RobustZ(8) on constant 7s = %v, want large and finite", z)
	}
	if z := rr.RobustZ(math.MaxFloat64); math.IsInf(z, 0) || math.IsNaN(z) {
		t.Fatalf("RobustZ(MaxFloat64) = %v, want finite", z)
	}
	rr.Reset()
	if rr.Len() != 0 || rr.Window() != 4 {
		t.Fatalf("after Reset: Len %d Window %d", rr.Len(), rr.Window())
	}
}

// TestRollingRobustRobustZ checks the hand-computable case: window {1..5}, median 3, MAD 1.
func TestRollingRobustRobustZ(t *testing.T) {
	rr := NewRollingRobust(5)
	for _, x := range []float64{5, 1, 4, 2, 3} {
		rr.Add(x)
	}
	if got, want := rr.RobustZ(10), 7/1.4826; math.Abs(got-want) > 1e-12 {
		t.Fatalf("RobustZ(10) = %v, want %v", got, want)
	}
	if got, want := rr.RobustZ(1), -2/1.4826; math.Abs(got-want) > 1e-12 {
		t.Fatalf("RobustZ(1) = %v, want %v", got, want)
	}
}

func TestRollingRobustNoAllocs(t *testing.T) {
	rr := NewRollingRobust(128)
	rng := rand.New(rand.NewPCG(1, 1))
	allocs := testing.AllocsPerRun(10000, func() {
		rr.Add(rng.NormFloat64())
		_ = rr.RobustZ(rng.NormFloat64())
	})
	if allocs != 0 {
		t.Fatalf("Add+RobustZ allocates %v times per call, want 0", allocs)
	}
}

// BenchmarkRollingRobust is one step of preprocess robust scaling: score, then add.
func BenchmarkRollingRobust(b *testing.B) {
	for _, w := range []int{64, 128, 1024} {
		b.Run("window="+itoa(w), func(b *testing.B) {
			rr := NewRollingRobust(w)
			xs := normals(4096, 1)
			for i := range w {
				rr.Add(xs[i])
			}
			b.ReportAllocs()
			reportCPU(b)
			for i := 0; b.Loop(); i++ {
				x := xs[i&4095]
				_ = rr.RobustZ(x)
				rr.Add(x)
			}
		})
	}
}

// TestRollingRobustSnapshotResumesExactly: a restored window, full or not, gives the
// same medians and MADs as the original for every value that follows.
func TestRollingRobustSnapshotResumesExactly(t *testing.T) {
	for _, before := range []int{0, 5, 64, 200} {
		orig := NewRollingRobust(64)
		x := 1.0
		next := func() float64 { x = math.Mod(x*7.31+3.7, 101); return x }
		for range before {
			orig.Add(next())
		}
		b, err := orig.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back RollingRobust
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("after %d values: %v", before, err)
		}
		if back.Window() != 64 || back.Len() != orig.Len() {
			t.Fatalf("after %d values: window %d len %d, want 64 and %d", before, back.Window(), back.Len(), orig.Len())
		}
		for i := range 150 {
			v := next()
			orig.Add(v)
			back.Add(v)
			m1, d1 := orig.MedianMAD()
			m2, d2 := back.MedianMAD()
			if m1 != m2 || d1 != d2 {
				t.Fatalf("after %d values, step %d: restored median/MAD %v/%v, original %v/%v", before, i, m2, d2, m1, d1)
			}
		}
		for cut := range len(b) {
			if err := new(RollingRobust).UnmarshalBinary(b[:cut]); err == nil {
				t.Fatalf("a snapshot cut to %d of %d bytes was accepted", cut, len(b))
			}
		}
	}
}
