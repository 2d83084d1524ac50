package detectors

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func itoa(i int) string { return strconv.Itoa(i) }

// normals returns n standard normal draws from a fixed seed.
func normals(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 0))
	out := make([]float64, n)
	for i := range out {
		out[i] = rng.NormFloat64()
	}
	return out
}

// normalRows returns n rows of d standard normal features.
func normalRows(n, d int, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, d)
		for j := range out[i] {
			out[i][j] = rng.NormFloat64()
		}
	}
	return out
}

// ReportCPU lets the external test package's benchmarks report thread CPU time too,
// which the shared machine's load does not inflate.
var ReportCPU = reportCPU

// checkSeedDeterminism runs rows through detectors built from seeds 7, 7 and 8: the two
// 7s must score identically and the 8 differently. Scores compare as bit patterns, since
// warm-up NaNs never compare equal.
func checkSeedDeterminism(t *testing.T, rows [][]float64, build func(seed uint64) Streaming) {
	t.Helper()
	run := func(seed uint64) []float64 {
		d := build(seed)
		out := make([]float64, len(rows))
		for i, r := range rows {
			out[i] = d.ScoreLearn("s", r, nil)
		}
		return out
	}
	same := func(x, y []float64) bool {
		return slices.EqualFunc(x, y, func(p, q float64) bool { return math.Float64bits(p) == math.Float64bits(q) })
	}
	a, b, c := run(7), run(7), run(8)
	if !same(a, b) {
		t.Fatal("same seed, different scores")
	}
	if same(a, c) {
		t.Fatal("different seeds, identical scores: the seed is not used")
	}
}

// scored is one score of a stream and whether its record was an injected spike.
type scored struct {
	s     float64
	spike bool
}

// checkSpikesRankTop fails unless 90 % of the spikes rank in the top 1/div of all scores.
func checkSpikesRankTop(t *testing.T, all []scored, div int) {
	t.Helper()
	slices.SortFunc(all, func(a, b scored) int { return -cmp.Compare(a.s, b.s) })
	top := len(all) / div
	spikes, inTop := 0, 0
	for i, a := range all {
		if a.spike {
			spikes++
			if i < top {
				inTop++
			}
		}
	}
	t.Logf("%d of %d spikes in the top %d%% (%d scores)", inTop, spikes, 100/div, top)
	if inTop < spikes*9/10 {
		t.Fatalf("only %d of %d spikes rank in the top %d%%", inTop, spikes, 100/div)
	}
}
