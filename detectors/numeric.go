package detectors

import "math"

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

// featureScores folds the z-like scores of a record's features into what the per-feature
// streaming detectors (zscore, windowed_gaussian, ewma, seasonal) report: the largest
// score, each feature's share of the weights in contrib, and NaN while no feature has
// enough history to judge. Three scalars, so it stays in registers; its methods inline.
type featureScores struct {
	score, sum float64
	ready      bool // some feature was scored
}

// add records feature f's score z, weighing weight in contrib (nil: no attribution).
func (s *featureScores) add(contrib []float64, f int, z, weight float64) {
	if contrib != nil {
		contrib[f] = weight
	}
	s.sum += weight
	s.score = max(s.score, z)
}

// result normalises the first width contributions and returns the record's score.
func (s *featureScores) result(contrib []float64, width int) float64 {
	if contrib != nil {
		normalizeShares(contrib[:width], s.sum)
	}
	if !s.ready {
		return math.NaN() // warming up: no judgement, not "normal"
	}
	return s.score
}
