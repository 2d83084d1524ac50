package detectors_test

import (
	"math"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func newLODA(t testing.TB, bins, cuts int, seed uint64) *detectors.LODA {
	t.Helper()
	l, err := detectors.NewLODA(detectors.LODAConfig{Bins: bins, Cuts: cuts}, seed)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLODAOneFeature: with one feature every projection is a scaled copy of it, so the
// histograms hold the same counts whatever the weights: on {0 ×6, 1.5 ×3, 2} in two bins,
// 0 is in a bin of 6 rows and 1.5 in one of 4, so their scores differ by log(6/4). Values
// beyond the range take the edge bin (PyOD); an empty bin counts 1e-12 of a row.
func TestLODAOneFeature(t *testing.T) {
	train := detectors.Matrix{Rows: 10, Cols: 1, Data: []float64{0, 0, 0, 0, 0, 0, 1.5, 1.5, 1.5, 2}}
	test := dpRows([]float64{0}, []float64{1.5}, []float64{2}, []float64{30}, []float64{-30})
	out := dpFitScore(t, newLODA(t, 2, 5, 1), train, test)
	if d := out[1] - out[0]; math.Abs(d-math.Log(6.0/4)) > 1e-9 {
		t.Errorf("score(1.5) − score(0) = %v, want log(6/4)", d)
	}
	if out[3] != out[2] || out[4] != out[0] {
		t.Errorf("beyond the range: %v, want the edge bins' %v and %v", out[3:], out[2], out[0])
	}
	out = dpFitScore(t, newLODA(t, 3, 1, 1), train, dpRows([]float64{0}, []float64{1}))
	want := math.Log(6 / 1e-12)
	if d := out[1] - out[0]; math.Abs(d-want) > 1e-6*want {
		t.Errorf("empty bin: score(1) − score(0) = %v, want %v", d, want)
	}
}

func TestLODAConfigErrors(t *testing.T) {
	for _, cfg := range []detectors.LODAConfig{{Bins: 1, Cuts: 10}, {Bins: 10, Cuts: 0}, {Bins: 10, Cuts: 10001}} {
		if _, err := detectors.NewLODA(cfg, 1); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func BenchmarkLODAShuttle(b *testing.B) { dpBenchShuttle(b, "loda") }
