package detectors

import (
	"fmt"
	"math"
	"strings"
)

func init() {
	Register(Info{
		Name: "ewma",
		Kind: KindStreaming,
		Doc: "Exponentially weighted mean and variance per series and feature; the score is the " +
			"largest |x − mean| / sd over the features, before x is learned. Returns 0 until a " +
			"feature has `min_samples` values. Follows drifting levels with memory ≈ 1/alpha records " +
			"and O(1) state, at the price of being pulled by the outliers it scores.",
		Params: []Param{
			{Name: "alpha", Doc: "weight of the newest value; memory is about 1/alpha values", Default: 0.05, Min: 0.0001, Max: 1},
			{Name: "min_samples", Doc: "values a feature needs before it is scored", Default: 8, Min: 1, Max: 100000, Integer: true},
		},
		NewStreaming: func(p Params, _ uint64) (Streaming, error) {
			return NewEWMA(p["alpha"], p.Int("min_samples"))
		},
	})
}

// EWMA is the ewma detector: an exponentially weighted mean and variance per series and
// feature, three float64s each.
type EWMA struct {
	alpha      float64
	minSamples float64
	series     map[string][]float64 // per feature: count, mean, variance
}

// NewEWMA returns an ewma detector; alpha must be in (0, 1] and minSamples at least 1.
func NewEWMA(alpha float64, minSamples int) (*EWMA, error) {
	if !(alpha > 0 && alpha <= 1) {
		return nil, fmt.Errorf("ewma: alpha = %v must be in (0, 1]", alpha)
	}
	if minSamples < 1 {
		return nil, fmt.Errorf("ewma: min_samples = %d must be at least 1", minSamples)
	}
	return &EWMA{alpha: alpha, minSamples: float64(minSamples), series: make(map[string][]float64)}, nil
}

// ScoreLearn implements Streaming. Contributions are shares of the squared standardised
// deviations, which is how much each feature adds to the record's distance. A non-finite
// value scores 0 and is not learned; a series that changes width starts over.
func (e *EWMA) ScoreLearn(series string, x, contrib []float64) float64 {
	st := e.series[series]
	if len(st) != 3*len(x) {
		st = make([]float64, 3*len(x))
		e.series[strings.Clone(series)] = st // clone: do not pin the caller's message buffer
	}
	var fs featureScores
	for f, v := range x {
		s := st[3*f : 3*f+3 : 3*f+3]
		zf := 0.0
		if finite(v) {
			n, mean, variance := s[0], s[1], s[2]
			if n >= e.minSamples {
				sd := max(math.Sqrt(variance), madFloorRel*(math.Abs(mean)+1))
				zf = min(math.Abs(v-mean)/sd, scoreCap)
				fs.ready = true
			}
			// Until 1/alpha values are in, weigh them equally (a = 1/n): the estimates are
			// then the exact mean and population variance, instead of starting at the first
			// value with variance 0 and taking ~1/alpha values to forget that start.
			n++
			a := max(e.alpha, 1/n)
			d := v - mean
			mean += a * d
			variance = (1 - a) * (variance + a*d*d)
			s[0], s[1], s[2] = n, mean, variance
		}
		fs.add(contrib, f, zf, zf*zf)
	}
	return fs.result(contrib, len(x))
}

// Len is the number of series held.
func (e *EWMA) Len() int { return len(e.series) }

// Forget drops a series' state, for callers that evict idle series.
func (e *EWMA) Forget(series string) { delete(e.series, series) }
