package detectors

import "math"

// CalibrationPOT names the peaks-over-threshold calibrator in pipeline specs.
const CalibrationPOT = "pot"

// potTail is the fraction of the window treated as the tail: scores above its lower edge
// are excesses, modelled as exponential (a generalised Pareto tail of shape 0).
const potTail = 0.02

// potMinExcesses and potMinDistinct are how many excesses, and how many distinct ones,
// the tail needs before its scale is fitted from them.
const (
	potMinExcesses = 8
	potMinDistinct = 3
)

// potMinScores is how many scores the window needs before any tail is drawn: fewer are
// mostly the detectors' own noisy warm-up, and ranks answer alone until then.
const potMinScores = 100

// POTCalibrator is an empirical CDF whose upper tail is an exponential fitted to the
// excesses over the window's 98th percentile — peaks over threshold, as in Siffer et
// al., "Anomaly Detection in Streams with Extreme Value Theory" (KDD 2017).
//
// The ECDF alone saturates: any score above the largest in the window calibrates to 1,
// whether it beats it by a hair or by a factor of ten, so an ensemble cannot tell a
// natural extreme from a spike. The tail keeps that distance: 1 − p estimates how rare a
// score at least this high is, so a threshold of 0.9999 means "rarer than 1 in 10,000"
// for every detector whatever its scale.
type POTCalibrator struct {
	ecdf *ECDFCalibrator
}

// NewPOTCalibrator returns a peaks-over-threshold calibrator over the last window scores.
func NewPOTCalibrator(window int) *POTCalibrator {
	return &POTCalibrator{ecdf: NewECDFCalibrator(window)}
}

// Calibrate implements Calibrator. Below the tail's edge it is the ECDF; above it,
// 1 − tail·exp(−(raw − edge)/β) with β the mean excess, both taken from the window before
// raw joins it so a spike cannot widen its own tail. NaN yields NaN.
func (c *POTCalibrator) Calibrate(raw float64) float64 {
	if raw != raw {
		return raw
	}
	n := len(c.ecdf.win.sorted)
	tailP := c.tail(raw)
	p := c.ecdf.Calibrate(raw)
	if tailP > 0 {
		return tailP
	}
	// Ranks alone cannot say a score is rarer than 1 in n+1: a new maximum of a window
	// of n is exactly that, and must not read as certainty.
	return min(p, float64(n)/float64(n+1))
}

// tail returns the exponential tail's estimate for raw, or 0 where it does not apply
// (too few scores, or raw not above the tail's edge).
//
// The scale β is the mean excess when the tail holds enough distinct excesses to fit.
// When it does not — a short window, or a coarse or periodic detector whose top scores
// tie — β is the scale that an exponential tail above the median would need to put the
// edge where it is: a spike a hundred times beyond everything seen is still
// recognisable, while a score a little past a coarse maximum is not.
func (c *POTCalibrator) tail(raw float64) float64 {
	s := c.ecdf.win.sorted
	n := len(s)
	if n < max(c.ecdf.warmup, potMinScores) {
		return 0
	}
	k := min(int(math.Floor((1-potTail)*float64(n))), n-2) // at least one score beyond the edge
	edge := s[k]
	if raw <= edge {
		return 0
	}
	above := n - k - 1
	tail := float64(above) / float64(n)
	sum, distinct := 0.0, 0
	prev := edge
	for _, v := range s[k+1:] {
		sum += v - edge
		if v != prev {
			distinct++
			prev = v
		}
	}
	var beta float64
	if above >= potMinExcesses && distinct >= potMinDistinct && sum > 0 {
		beta = sum / float64(above)
	} else {
		median := s[n/2]
		if edge <= median {
			return 0 // no spread to measure against: ranks must answer
		}
		beta = (edge - median) / math.Log(0.5/tail)
	}
	return 1 - tail*math.Exp(-(raw-edge)/beta)
}
