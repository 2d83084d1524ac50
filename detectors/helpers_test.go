package detectors

import (
	"math/rand/v2"
	"strconv"
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
