package detectors_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func newMCD(t testing.TB, cfg detectors.MCDConfig, seed uint64) *detectors.MCD {
	t.Helper()
	m, err := detectors.NewMCD(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var mcdDefaults = detectors.MCDConfig{Trials: 30}

// TestMCDResistsContamination: a fifth of the training rows sit in a tight cluster at
// (8, 8); the robust location stays near the bulk at 0 (the mean moves to 1.6), and every
// cluster row scores above 95% of the bulk.
func TestMCDResistsContamination(t *testing.T) {
	train := dpGaussian(500, 2, 1)
	for i := 400; i < 500; i++ {
		r := train.Row(i)
		r[0], r[1] = 8+0.1*r[0], 8+0.1*r[1]
	}
	m := newMCD(t, mcdDefaults, 1)
	out := dpFitScore(t, m, train, train)
	if loc := m.Location(); math.Hypot(loc[0], loc[1]) > 0.3 {
		t.Fatalf("location %v, want near 0", loc)
	}
	bulk := slices.Clone(out[:400])
	slices.Sort(bulk)
	if c := slices.Min(out[400:]); !(c > bulk[379]) {
		t.Fatalf("cluster rows score from %v, the bulk's 95th percentile is %v", c, bulk[379])
	}
	cov := m.Covariance()
	if len(cov) != 4 || cov[1] != cov[2] || !(cov[0] > 0.5 && cov[0] < 2) {
		t.Fatalf("covariance %v: want symmetric with variances near 1", cov)
	}
}

// TestMCDJointOutlier: against a strong correlation, a row that breaks it is more anomalous
// than one further out along it.
func TestMCDJointOutlier(t *testing.T) {
	train := dpGaussian(600, 2, 2)
	for i := range train.Rows {
		r := train.Row(i)
		r[1] = r[0] + 0.1*r[1]
	}
	out := dpFitScore(t, newMCD(t, mcdDefaults, 1), train, dpRows([]float64{2.5, 2.5}, []float64{1, -1}))
	if !(out[1] > 3*out[0]) {
		t.Fatalf("along the correlation %v, across %v", out[0], out[1])
	}
}

// TestMCDSingular: rows on a plane (x2 = x0 + x1 exactly) give a singular covariance; the
// floor keeps scores finite and makes leaving the plane the anomaly.
func TestMCDSingular(t *testing.T) {
	train := dpGaussian(300, 3, 3)
	for i := range train.Rows {
		r := train.Row(i)
		r[2] = r[0] + r[1]
	}
	m := newMCD(t, mcdDefaults, 1)
	out := dpFitScore(t, m, train, dpRows([]float64{1, 1, 2}, []float64{2, -2, 0}, []float64{0, 0, 0.01}))
	if !m.Regularized() {
		t.Error("singular covariance not reported as regularised")
	}
	for i, s := range out {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			t.Fatalf("row %d scored %v", i, s)
		}
	}
	if !(out[2] > 10*out[0]) || !(out[2] > 10*out[1]) {
		t.Fatalf("on the plane %v, %v; off it by 0.01: %v", out[0], out[1], out[2])
	}
}

func TestMCDFitErrors(t *testing.T) {
	if err := newMCD(t, mcdDefaults, 1).Fit(dpGaussian(3, 3, 1)); err == nil || !strings.Contains(err.Error(), "more rows than columns") {
		t.Errorf("3×3: %v", err)
	}
	for _, cfg := range []detectors.MCDConfig{
		{SupportFraction: -0.1, Trials: 30},
		{SupportFraction: 1.1, Trials: 30},
		{SupportFraction: math.NaN(), Trials: 30},
		{Trials: 0},
	} {
		if _, err := detectors.NewMCD(cfg, 1); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	// A support of every row is the plain mean and covariance, reweighted.
	if err := newMCD(t, detectors.MCDConfig{SupportFraction: 1, Trials: 1}, 1).Fit(dpGaussian(50, 2, 1)); err != nil {
		t.Error(err)
	}
}

func BenchmarkMCDShuttle(b *testing.B) { dpBenchShuttle(b, "mcd") }
