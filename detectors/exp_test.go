package detectors

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkExpHST(b *testing.B) {
	for _, c := range []HSTConfig{{25, 15, 250, 4}, {44, 8, 250, 4}, {25, 11, 250, 4}, {100, 3, 250, 4}} {
		for _, withC := range []bool{false, true} {
			b.Run(fmt.Sprint(c.Trees, "x", c.Height, withC), func(b *testing.B) {
				h, _ := NewHalfSpaceTrees(c, 1)
				rng := rand.New(rand.NewPCG(1, 2))
				const n = 4096
				xs := make([][]float64, n)
				for i := range xs {
					xs[i] = make([]float64, 10)
					for j := range xs[i] {
						xs[i][j] = rng.NormFloat64()
					}
				}
				var contrib []float64
				if withC {
					contrib = make([]float64, 10)
				}
				for i := range 2 * 250 {
					h.ScoreLearn("s", xs[i%n], contrib)
				}
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					h.ScoreLearn("s", xs[i%n], contrib)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.Trees*(c.Height+1)), "ns/visit")
			})
		}
	}
}
