package detectors

import (
	"math/rand/v2"
	"testing"
)

func BenchmarkHSTScoreLearn(b *testing.B) {
	h, err := NewHalfSpaceTrees(HSTConfig{Trees: 25, Height: 15, Window: 250, Limit: 4}, 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 4096
	xs := make([][]float64, n)
	for i := range xs {
		xs[i] = make([]float64, 10)
		for j := range xs[i] {
			xs[i][j] = rng.NormFloat64()
		}
	}
	contrib := make([]float64, 10)
	for i := range 2 * 250 {
		h.ScoreLearn("s", xs[i%n], contrib)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		h.ScoreLearn("s", xs[i%n], contrib)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
