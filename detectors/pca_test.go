package detectors_test

import (
	"math"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
	"gonum.org/v1/gonum/mat"
)

func newPCA(t testing.TB, components int) *detectors.PCA {
	t.Helper()
	p, err := detectors.NewPCA(components)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dpCorrelated is n rows of d features where feature 1 follows feature 0 closely and the
// rest are independent, on different scales.
func dpCorrelated(n, d int, seed uint64) detectors.Matrix {
	m := dpGaussian(n, d, seed)
	for i := range n {
		r := m.Row(i)
		r[1] = r[0] + 0.1*r[1]
		for q := range r {
			r[q] = r[q]*float64(q+1) + float64(q)
		}
	}
	return m
}

// TestPCAIsMahalanobis: with every component, the score is the squared Mahalanobis
// distance in standardised units, computed here with a plain matrix inverse.
func TestPCAIsMahalanobis(t *testing.T) {
	const n, d = 500, 4
	train, test := dpCorrelated(n, d, 1), dpCorrelated(50, d, 2)
	got := dpFitScore(t, newPCA(t, 0), train, test)

	mean, sd := make([]float64, d), make([]float64, d)
	for i := range n {
		for q, v := range train.Row(i) {
			mean[q] += v / n
		}
	}
	for i := range n {
		for q, v := range train.Row(i) {
			sd[q] += (v - mean[q]) * (v - mean[q]) / n
		}
	}
	z := mat.NewDense(n, d, nil)
	for i := range n {
		for q, v := range train.Row(i) {
			z.Set(i, q, (v-mean[q])/math.Sqrt(sd[q]))
		}
	}
	var cov, inv mat.Dense
	cov.Mul(z.T(), z)
	cov.Scale(1.0/(n-1), &cov)
	if err := inv.Inverse(&cov); err != nil {
		t.Fatal(err)
	}
	for i := range test.Rows {
		x := mat.NewVecDense(d, nil)
		for q, v := range test.Row(i) {
			x.SetVec(q, (v-mean[q])/math.Sqrt(sd[q]))
		}
		want := mat.Inner(x, &inv, x)
		if math.Abs(got[i]-want) > 1e-9*want {
			t.Fatalf("row %d: score %v, squared Mahalanobis distance %v", i, got[i], want)
		}
	}
}

// TestPCAComponents: keeping only the major component ignores a departure from the
// correlation (the minor direction) that the full score finds glaring.
func TestPCAComponents(t *testing.T) {
	train := dpCorrelated(500, 2, 3)
	// In standard units the major direction is (1, 1), the minor (1, −1).
	along, across := dpRows([]float64{2, 1 + 2*2}), dpRows([]float64{-1, 1 + 2*1})
	all, major := newPCA(t, 0), newPCA(t, 1)
	sAll := append(dpFitScore(t, all, train, along), dpFitScore(t, all, train, across)...)
	sMajor := append(dpFitScore(t, major, train, along), dpFitScore(t, major, train, across)...)
	if !(sAll[1] > 10*sAll[0]) {
		t.Errorf("all components: along %v, across %v; want across far above", sAll[0], sAll[1])
	}
	if !(sMajor[1] < sMajor[0]) {
		t.Errorf("major component only: along %v, across %v; want across below", sMajor[0], sMajor[1])
	}
	if ev := major.Eigenvalues(); len(ev) != 1 || !(ev[0] > 1.9) {
		t.Errorf("eigenvalues %v, want one near 2", ev)
	}
}

func TestPCAFitErrors(t *testing.T) {
	if err := newPCA(t, 5).Fit(dpGaussian(100, 4, 1)); err == nil || !strings.Contains(err.Error(), "n_components = 5") {
		t.Errorf("n_components above the columns: %v", err)
	}
	if _, err := detectors.NewPCA(-1); err == nil {
		t.Error("n_components −1 accepted")
	}
	// A constant column: floored, not dropped, so leaving it is an anomaly.
	m := dpGaussian(200, 2, 2)
	for i := range m.Rows {
		m.Row(i)[1] = 3
	}
	p := newPCA(t, 0)
	out := dpFitScore(t, p, m, dpRows([]float64{0, 3}, []float64{0, 3.001}))
	if ev := p.Eigenvalues(); ev[1] != 1e-9*ev[0] {
		t.Errorf("eigenvalues %v: want the second floored at 1e-9 of the first", ev)
	}
	if !(out[1] > 1000*out[0]) || math.IsInf(out[1], 0) {
		t.Errorf("constant column left by 0.001: %v, on it: %v", out[1], out[0])
	}
}

func BenchmarkPCAShuttle(b *testing.B) { dpBenchShuttle(b, "pca") }
