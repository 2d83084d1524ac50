package detectors

import (
	"fmt"
	"math"
	"strings"
)

func init() {
	Register(Info{
		Name: "zscore",
		Kind: KindStreaming,
		Doc: "Robust z-score per series and feature: |x − rolling median| / (1.4826·rolling MAD) " +
			"over the last `window` values, scored before x is learned; the record's score is the " +
			"largest over its features. Returns 0 until a feature has `min_samples` values. Cheap, " +
			"explainable, blind to anomalies that are jointly but not individually unusual.",
		Params: []Param{
			{Name: "window", Doc: "values per series and feature in the rolling median/MAD", Default: 64, Min: 8, Max: 100000, Integer: true},
			{Name: "min_samples", Doc: "values a feature needs before it is scored; at most window", Default: 8, Min: 1, Max: 100000, Integer: true},
		},
		NewStreaming: func(p Params, _ uint64) (Streaming, error) {
			return NewRobustZScore(p.Int("window"), p.Int("min_samples"))
		},
	})
}

// RobustZScore is the zscore detector: one RollingRobust window per series and feature.
// Median and MAD rather than mean and standard deviation, so that the anomalies it is looking
// for do not inflate the scale they are measured against.
type RobustZScore struct {
	window, minSamples int
	series             map[string]*zscoreState
}

// zscoreState is one series: a window per feature, all carved from one buffer so a series
// costs three allocations whatever its width.
type zscoreState struct {
	wins []RollingRobust
}

// NewRobustZScore returns a zscore detector; minSamples must be in [1, window].
func NewRobustZScore(window, minSamples int) (*RobustZScore, error) {
	if window < 1 {
		return nil, fmt.Errorf("zscore: window = %d must be at least 1", window)
	}
	if minSamples < 1 || minSamples > window {
		return nil, fmt.Errorf("zscore: min_samples = %d must be in [1, window = %d]", minSamples, window)
	}
	return &RobustZScore{window: window, minSamples: minSamples, series: make(map[string]*zscoreState)}, nil
}

// ScoreLearn implements Streaming. A non-finite value scores 0 and is not learned. If a
// series changes width, its state starts over (the contract says it does not).
func (z *RobustZScore) ScoreLearn(series string, x, contrib []float64) float64 {
	st := z.series[series]
	if st == nil || len(st.wins) != len(x) {
		st = z.newState(series, len(x))
	}
	var fs featureScores
	for f, v := range x {
		w := &st.wins[f]
		zf := 0.0
		if finite(v) {
			if w.Len() >= z.minSamples {
				zf = min(math.Abs(w.RobustZ(v)), scoreCap)
				fs.ready = true
			}
			w.Add(v)
		}
		fs.add(contrib, f, zf, zf)
	}
	return fs.result(contrib, len(x))
}

func (z *RobustZScore) newState(series string, width int) *zscoreState {
	st := &zscoreState{wins: make([]RollingRobust, width)}
	buf := make([]float64, 2*z.window*width)
	for f := range st.wins {
		st.wins[f].init(buf[2*z.window*f:2*z.window*(f+1)], z.window)
	}
	// Clone: the caller's string may point into a whole decoded message we must not pin.
	z.series[strings.Clone(series)] = st
	return st
}

// Len is the number of series held.
func (z *RobustZScore) Len() int { return len(z.series) }

// Forget drops a series' state, for callers that evict idle series.
func (z *RobustZScore) Forget(series string) { delete(z.series, series) }
