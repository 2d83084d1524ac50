package detectors

import (
	"fmt"
	"math"
	"strings"
)

func init() {
	Register(Info{
		Name: "windowed_gaussian",
		Kind: KindStreaming,
		Doc: "Windowed Gaussian z-score per series and feature: |x − rolling mean| / rolling standard " +
			"deviation (population, as numpy.std) over the last `window` values, scored before x is " +
			"learned; the record's score is the largest over its features. Returns NaN until a feature " +
			"has `min_samples` values. The classic non-robust baseline (NAB's Windowed Gaussian, River's " +
			"GaussianScorer): an anomaly inflates the scale it is measured against, which zscore avoids.",
		Params: []Param{
			{Name: "window", Doc: "values per series and feature in the rolling mean/standard deviation", Default: 64, Min: 8, Max: 100000, Integer: true},
			{Name: "min_samples", Doc: "values a feature needs before it is scored; at most window", Default: 8, Min: 1, Max: 100000, Integer: true},
		},
		NewStreaming: func(p Params, _ uint64) (Streaming, error) {
			return NewWindowedGaussian(p.Int("window"), p.Int("min_samples"))
		},
	})
}

// WindowedGaussian is the windowed_gaussian detector: one rolling mean and variance per series and
// feature over a ring of the last `window` values.
type WindowedGaussian struct {
	window, minSamples int
	series             map[string]*gaussianState
}

// gaussianState is one series: a window per feature, the rings carved from one buffer.
type gaussianState struct {
	wins []gaussWindow
}

// gaussWindow keeps the mean and the sum of squared deviations (m2) of the last len(ring)
// values. The update is Welford's, slid: adding x to a window of n, or replacing the oldest
// value y by x in a full one,
//
//	mean' = mean + (x−y)/n,  m2' = m2 + (x−y)·(x − mean' + y − mean)
//
// rather than a running sum and sum of squares, whose variance Σx²/n − mean² cancels
// catastrophically when the level dwarfs the spread (a counter at 1e9 moving by 1 keeps no
// correct digit). The slid update is O(1) and stable but its rounding errors accumulate, so
// every `window` evictions, and whenever the state stops being finite (a value near the
// float64 range overflows m2 to +Inf, and its eviction makes Inf − Inf), the mean and m2
// are recomputed two-pass from the ring: O(1) amortised.
type gaussWindow struct {
	ring     []float64
	head     int // next slot to write; the oldest value once the ring is full
	n        int
	evicted  int // evictions since the last exact recomputation, < len(ring)
	mean, m2 float64
}

func (g *gaussWindow) add(x float64) {
	w := len(g.ring)
	if g.n < w {
		g.ring[g.head] = x
		g.n++
		d := x - g.mean
		g.mean += d / float64(g.n)
		g.m2 += d * (x - g.mean)
	} else {
		y := g.ring[g.head]
		g.ring[g.head] = x
		mean := g.mean + (x-y)/float64(w)
		g.m2 += (x - y) * (x - mean + y - g.mean)
		g.mean = mean
		g.evicted++
	}
	if g.head++; g.head == w {
		g.head = 0
	}
	if g.evicted >= w || !finite(g.mean) || g.m2 != g.m2 {
		g.recompute()
	}
	g.m2 = max(g.m2, 0) // rounding can take a slid m2 of a near-constant window below 0
}

// recompute sets mean and m2 exactly (two-pass) from the ring, in arrival order so that a
// restored ring, which starts at slot 0, sums in the same order.
func (g *gaussWindow) recompute() {
	g.evicted = 0
	old, recent := g.ring[g.head:g.n], g.ring[:g.head]
	if g.n < len(g.ring) {
		old, recent = nil, g.ring[:g.n]
	}
	sum := 0.0
	for _, v := range old {
		sum += v
	}
	for _, v := range recent {
		sum += v
	}
	mean, m2 := sum/float64(g.n), 0.0
	for _, v := range old {
		m2 += (v - mean) * (v - mean)
	}
	for _, v := range recent {
		m2 += (v - mean) * (v - mean)
	}
	g.mean, g.m2 = mean, m2
}

// z is |x − mean| / sd, the standard deviation floored like RobustZ's MAD (a constant
// window then a change is large, not ±Inf) and the result capped at scoreCap. A window
// whose variance overflowed (values near the float64 range) has sd +Inf: ordinary values
// score 0 there, and Inf/Inf, which says nothing, scores 0 too.
func (g *gaussWindow) z(x float64) float64 {
	sd := max(math.Sqrt(g.m2/float64(g.n)), madFloorRel*(math.Abs(g.mean)+1))
	z := math.Abs(x-g.mean) / sd
	if z != z {
		return 0
	}
	return min(z, scoreCap)
}

// NewWindowedGaussian returns a gaussian detector; minSamples must be in [1, window].
func NewWindowedGaussian(window, minSamples int) (*WindowedGaussian, error) {
	if window < 1 {
		return nil, fmt.Errorf("gaussian: window = %d must be at least 1", window)
	}
	if minSamples < 1 || minSamples > window {
		return nil, fmt.Errorf("gaussian: min_samples = %d must be in [1, window = %d]", minSamples, window)
	}
	return &WindowedGaussian{window: window, minSamples: minSamples, series: make(map[string]*gaussianState)}, nil
}

// ScoreLearn implements Streaming. A non-finite value scores 0 and is not learned; the
// score is NaN until some feature has min_samples values. If a series changes width, its
// state starts over (the contract says it does not).
func (g *WindowedGaussian) ScoreLearn(series string, x, contrib []float64) float64 {
	st := g.series[series]
	if st == nil || len(st.wins) != len(x) {
		st = g.newState(series, len(x))
	}
	var fs featureScores
	for f, v := range x {
		w := &st.wins[f]
		zf := 0.0
		if finite(v) {
			if w.n >= g.minSamples {
				zf = w.z(v)
				fs.ready = true
			}
			w.add(v)
		}
		fs.add(contrib, f, zf, zf)
	}
	return fs.result(contrib, len(x))
}

func (g *WindowedGaussian) newState(series string, width int) *gaussianState {
	st := &gaussianState{wins: make([]gaussWindow, width)}
	buf := make([]float64, g.window*width)
	for f := range st.wins {
		st.wins[f].ring = buf[g.window*f : g.window*(f+1) : g.window*(f+1)]
	}
	// Clone: the caller's string may point into a whole decoded message we must not pin.
	g.series[strings.Clone(series)] = st
	return st
}

// Len is the number of series held.
func (g *WindowedGaussian) Len() int { return len(g.series) }

// Forget drops a series' state, for callers that evict idle series.
func (g *WindowedGaussian) Forget(series string) { delete(g.series, series) }
