package detectors

import "math"

// CalibrationPOT names the peaks-over-threshold calibrator in pipeline specs.
const CalibrationPOT = "pot"

// potTail is the fraction of the window treated as the tail: scores above its lower edge
// are excesses, modelled as exponential (a generalised Pareto tail of shape 0).
const potTail = 0.02

// potMinExcesses is how many distinct excesses the tail needs before it is modelled;
// with fewer (a coarse detector whose top scores tie) the ECDF answers alone.
const potMinExcesses = 8

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

// tail returns the exponential tail's estimate for raw, or 0 where it does not apply:
// too few scores, raw not above the edge, or too few distinct excesses to fit.
func (c *POTCalibrator) tail(raw float64) float64 {
	s := c.ecdf.win.sorted
	n := len(s)
	if n < c.ecdf.warmup {
		return 0
	}
	k := int(math.Floor((1 - potTail) * float64(n)))
	if k >= n-potMinExcesses || raw <= s[k] {
		return 0
	}
	edge := s[k]
	sum, distinct := 0.0, 0
	prev := edge
	for _, v := range s[k+1:] {
		sum += v - edge
		if v != prev {
			distinct++
			prev = v
		}
	}
	if distinct < potMinExcesses || sum <= 0 {
		return 0
	}
	beta := sum / float64(n-k-1)
	tail := float64(n-k-1) / float64(n)
	return 1 - tail*math.Exp(-(raw-edge)/beta)
}
