package detectors

// scoreCap bounds the z-like scores of zscore and ewma. A z of 1e12 already means "never
// seen"; the bound keeps sums in calibrators and ensembles finite when a scale is floored.
const scoreCap = 1e12

// finite reports whether x is neither NaN nor ±Inf (x−x is NaN for both), in one compare.
func finite(x float64) bool { return x-x == 0 }

// normalizeShares scales v (non-negative, summing to sum) to sum 1 in place, or zeroes it
// when sum is 0: the Streaming contract for "cannot attribute".
func normalizeShares(v []float64, sum float64) {
	if sum > 0 {
		inv := 1 / sum
		for i := range v {
			v[i] *= inv
		}
		return
	}
	clear(v)
}
