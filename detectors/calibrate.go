package detectors

import (
	"fmt"
	"math"
	"strings"
)

// Calibrator maps one detector's raw scores, whose scale is the detector's own, to [0,1]
// so the ensemble can combine detectors and one threshold means the same for all of them.
// Calibrate judges raw against the scores seen before it and then remembers it, so an
// anomaly is not compared with itself. One calibrator serves one detector in one partition
// and one goroutine.
type Calibrator interface {
	Calibrate(raw float64) float64
}

// CalibrationWarmup is how many scores a calibrator needs before it judges: until then it
// returns 0, "no evidence of an anomaly", rather than a rank among a handful of scores.
const CalibrationWarmup = 16

// Calibration methods, as named in pipeline specs.
const (
	CalibrationECDF     = "ecdf"
	CalibrationGaussian = "gaussian"
)

// CalibrationMethods lists the names NewCalibrator accepts (a fresh slice: callers may
// keep or change it).
func CalibrationMethods() []string {
	return []string{CalibrationECDF, CalibrationGaussian, CalibrationPOT}
}

// MaxCalibrationWindow bounds windows so a spec cannot ask for gigabytes per detector and
// partition (a window costs 16 bytes a score).
const MaxCalibrationWindow = 10_000_000

// NewCalibrator returns the calibrator named by method over the last window raw scores;
// window must be in [CalibrationWarmup, MaxCalibrationWindow].
func NewCalibrator(method string, window int) (Calibrator, error) {
	if window < CalibrationWarmup || window > MaxCalibrationWindow {
		return nil, fmt.Errorf("calibration window = %d is out of range [%d, %d]", window, CalibrationWarmup, MaxCalibrationWindow)
	}
	switch method {
	case CalibrationECDF:
		return NewECDFCalibrator(window), nil
	case CalibrationGaussian:
		return NewGaussianCalibrator(window), nil
	case CalibrationPOT:
		return NewPOTCalibrator(window), nil
	}
	return nil, fmt.Errorf("unknown calibration method %q (known: %s)", method, strings.Join(CalibrationMethods(), ", "))
}

// ECDFCalibrator returns the empirical CDF of the last window raw scores at raw: the
// fraction strictly below it plus half the fraction equal to it (the mid-rank). Ranks make
// it indifferent to the detector's scale and shape; the half tie keeps a detector that
// returns one value all the time (a flat series, a constant fallback) at 0.5, neither
// silent (0) nor alarming (1). A new maximum is 1.
type ECDFCalibrator struct {
	win    RollingRobust // its sorted window and ring are exactly what the ranks need
	warmup int
}

// NewECDFCalibrator returns an ECDF calibrator over the last window scores. It panics if
// window < 1. It judges once it holds min(CalibrationWarmup, window) scores.
func NewECDFCalibrator(window int) *ECDFCalibrator {
	c := &ECDFCalibrator{warmup: min(CalibrationWarmup, window)}
	c.win.init(make([]float64, 2*window), window)
	return c
}

// Calibrate implements Calibrator in O(log window) plus the window's insert. NaN (a
// detector warming up) yields NaN and ±Inf yield 0 or 1; none of them is remembered.
func (c *ECDFCalibrator) Calibrate(raw float64) float64 {
	if raw != raw {
		return raw
	}
	s := c.win.sorted
	n := len(s)
	p := 0.0
	if n >= c.warmup {
		below := lowerBound(s, raw)
		upTo := below
		if below < n && s[below] == raw { // ties are rare; search only when there is one
			upTo += upperBound(s[below:], raw)
		}
		p = (float64(below) + 0.5*float64(upTo-below)) / float64(n)
	}
	c.win.Add(raw)
	return p
}

// GaussianCalibrator returns Φ((raw − μ)/σ) with μ and σ the mean and standard deviation of
// the last window raw scores. Unlike the ECDF it can tell how far beyond the largest score
// seen a new one is, but it assumes a roughly normal score distribution.
type GaussianCalibrator struct {
	ring     []float64
	head, n  int
	mean, m2 float64 // mean and sum of squared deviations of the window
	updates  int     // sliding updates since the last exact recomputation
	warmup   int
}

// NewGaussianCalibrator returns a Gaussian calibrator over the last window scores. It panics
// if window < 1. It judges once it holds min(CalibrationWarmup, window) scores.
func NewGaussianCalibrator(window int) *GaussianCalibrator {
	if window < 1 {
		panic("detectors: calibration window must be at least 1")
	}
	return &GaussianCalibrator{ring: make([]float64, window), warmup: min(CalibrationWarmup, window)}
}

// Calibrate implements Calibrator in O(1) amortised. σ is floored like the robust scales
// (1e-9·(|μ|+1)), so after a constant run any higher score is 1 and any lower one 0. NaN
// (a detector warming up) yields NaN and ±Inf 0 or 1; none of them is remembered.
func (g *GaussianCalibrator) Calibrate(raw float64) float64 {
	if raw != raw {
		return raw
	}
	p := 0.0
	if g.n >= g.warmup {
		sd := max(math.Sqrt(max(g.m2, 0)/float64(g.n)), madFloorRel*(math.Abs(g.mean)+1))
		p = 0.5 * math.Erfc(-(raw-g.mean)/(sd*math.Sqrt2))
		p = min(max(p, 0), 1)
	}
	if finite(raw) {
		g.add(raw)
	}
	return p
}

func (g *GaussianCalibrator) add(x float64) {
	w := len(g.ring)
	if g.n < w { // growing: Welford
		g.ring[g.head] = x
		g.n++
		d := x - g.mean
		g.mean += d / float64(g.n)
		g.m2 += d * (x - g.mean)
	} else { // sliding: replace the oldest value
		old := g.ring[g.head]
		g.ring[g.head] = x
		mean := g.mean + (x-old)/float64(w)
		g.m2 += (x - old) * (x - mean + old - g.mean)
		g.mean = mean
		// Sliding updates subtract, and rounding errors accumulate; recomputing exactly
		// once per window keeps them bounded at O(1) amortised cost.
		if g.updates++; g.updates >= w {
			g.recompute()
		}
	}
	if g.head++; g.head == w {
		g.head = 0
	}
}

func (g *GaussianCalibrator) recompute() {
	g.updates = 0
	sum := 0.0
	for _, v := range g.ring[:g.n] {
		sum += v
	}
	g.mean = sum / float64(g.n)
	g.m2 = 0
	for _, v := range g.ring[:g.n] {
		d := v - g.mean
		g.m2 += d * d
	}
}
