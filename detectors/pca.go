package detectors

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

func init() {
	Register(Info{
		Name: "pca",
		Kind: KindBatch,
		Doc: "Principal-component outlier score (Shyu et al. 2003, as PyOD's weighted default): " +
			"features are standardised on the training data (as PyOD does by default; on data " +
			"already standardised this changes nothing), then a row's score is Σ over the kept " +
			"components of its squared projection divided by the component's eigenvalue. With " +
			"all components this is the squared Mahalanobis distance to the training mean. " +
			"Eigenvalues are floored at 1e-9 of the largest, so a direction without variance in " +
			"the training data (a constant feature, an exact linear relation) makes a row that " +
			"leaves it very anomalous, not infinitely so. O(k·d) per row.",
		Params: []Param{
			{Name: "n_components", Doc: "components kept, largest eigenvalues first; 0 keeps all", Default: 0, Min: 0, Max: 100000, Integer: true},
		},
		NewBatch: func(p Params, _ uint64) (Batch, error) { return NewPCA(p.Int("n_components")) },
	})
}

// pcaFloor is the smallest eigenvalue, relative to the largest. A direction without variance
// has an eigenvalue of rounding noise (~1e-17); dividing by it would let the rounding of
// ordinary rows decide the ranking, while at the floor their noise (~1e-16 squared) adds
// nothing and a real departure of 1e-4 adds about 10.
const pcaFloor = 1e-9

// PCA is the pca detector. PyOD's published pca figures do not measure this score: its
// decision_function sums the Euclidean distances from a row to each unit component vector,
// divided by the component's explained-variance ratio. That formula, run under our
// protocol, reproduced PyOD's satellite, shuttle and pendigits figures (.604, .990, .937)
// and depends on the signs of the eigenvectors (cardio .320 here); this one is Shyu's, sign
// free. After Fit it is read-only, so Score may be called from several goroutines at once.
type PCA struct {
	components int // as asked; 0 = all
	workers    int
	d          int
	// mean and scale standardise a feature (scale 1 for a constant one, as scikit-learn).
	mean, scale []float64
	// values are the kept eigenvalues of the standardised covariance, descending; vectors
	// their unit eigenvectors, one row of d each.
	values, vectors []float64
	// w[j*d+q] = vectors[j][q] / (scale[q]·√values[j]): a row's score is Σ_j (w_j·(x−mean))².
	w []float64
}

// NewPCA returns an unfitted pca detector keeping the given number of components (0: all).
func NewPCA(components int) (*PCA, error) {
	if components < 0 {
		return nil, fmt.Errorf("pca: n_components = %d must be 0 (all) or positive", components)
	}
	return &PCA{components: components}, nil
}

// SetWorkers implements Parallel.
func (p *PCA) SetWorkers(n int) { p.workers = n }

// Eigenvalues are the eigenvalues of the kept components, descending, after the floor
// (shared; do not modify).
func (p *PCA) Eigenvalues() []float64 { return p.values }

// Fit implements Batch. It needs two rows, and n_components no larger than the columns.
func (p *PCA) Fit(X Matrix) error {
	if err := dpCheckMatrix("pca", X); err != nil {
		return err
	}
	n, d := X.Rows, X.Cols
	if n < 2 {
		return fmt.Errorf("pca: X has %d row, at least 2 are needed for a covariance", n)
	}
	if p.components > d {
		return fmt.Errorf("pca: n_components = %d is more than the %d columns of X", p.components, d)
	}
	mean, scale := dpMeanStd(X)
	for q, s := range scale {
		if s == 0 {
			scale[q] = 1
		}
	}
	cov := make([]float64, d*d)
	z := make([]float64, d)
	for i := range n {
		for q, v := range X.Row(i) {
			z[q] = (v - mean[q]) / scale[q]
		}
		dpAddOuter(cov, z)
	}
	dpFinishCov(cov, d, float64(n-1))
	values, vectors, err := dpEigen("pca", cov, d)
	if err != nil {
		return err
	}
	k := d
	if p.components > 0 {
		k = p.components
	}
	floor := pcaFloor * values[0]
	if !(values[0] > 0) {
		floor = 1 // every column constant: distances in standard units
	}
	for j := range values {
		values[j] = max(values[j], floor)
	}
	p.d, p.mean, p.scale = d, mean, scale
	p.values, p.vectors = values[:k], vectors[:k*d]
	p.derive()
	return nil
}

func (p *PCA) derive() {
	d := p.d
	p.w = make([]float64, len(p.vectors))
	for j, l := range p.values {
		s := 1 / math.Sqrt(l)
		for q := range d {
			p.w[j*d+q] = p.vectors[j*d+q] * s / p.scale[q]
		}
	}
}

// Score implements Batch.
func (p *PCA) Score(X Matrix, out []float64) error {
	if err := dpCheckScore("pca", X, out, p.d); err != nil {
		return err
	}
	dpParallel(p.workers, X.Rows, func(lo, hi int) {
		z := make([]float64, p.d)
		for i := lo; i < hi; i++ {
			for q, v := range X.Row(i) {
				z[q] = v - p.mean[q]
			}
			out[i] = dpSquaredNorm(p.w, z)
		}
	})
	return nil
}

const pcaFormatV1 = 1

// MarshalBinary implements Persistent: version, n_components, d, k, then mean, scale,
// eigenvalues and eigenvectors; the scoring matrix is derived again on load.
func (p *PCA) MarshalBinary() ([]byte, error) {
	if p.d == 0 {
		return nil, fmt.Errorf("pca: not fitted")
	}
	w := dpWriter{b: make([]byte, 0, 13+8*(2*p.d+len(p.values)+len(p.vectors)))}
	w.u8(pcaFormatV1)
	w.u32(p.components)
	w.u32(p.d)
	w.u32(len(p.values))
	w.f64s(p.mean)
	w.f64s(p.scale)
	w.f64s(p.values)
	w.f64s(p.vectors)
	return w.b, nil
}

// UnmarshalBinary implements Persistent. The worker count is a runtime setting and is kept.
func (p *PCA) UnmarshalBinary(data []byte) error {
	r := dpReader{name: "pca", b: data}
	if err := r.version(pcaFormatV1); err != nil {
		return err
	}
	components, d, k := r.u32(), r.u32(), r.u32()
	if r.err == nil && (d < 1 || k < 1 || k > d || components > d) {
		return fmt.Errorf("pca: model encoding has %d features, %d components kept of %d asked", d, k, components)
	}
	mean := r.f64Matrix(1, d)
	scale := r.f64Matrix(1, d)
	values := r.f64Matrix(1, k)
	vectors := r.f64Matrix(k, d)
	if err := r.done(); err != nil {
		return err
	}
	for _, v := range mean {
		if !finite(v) {
			return fmt.Errorf("pca: model encoding: mean %v is not finite", v)
		}
	}
	for _, v := range scale {
		if !finite(v) || !(v > 0) {
			return fmt.Errorf("pca: model encoding: scale %v is not finite and positive", v)
		}
	}
	for _, v := range values {
		if !finite(v) || !(v > 0) {
			return fmt.Errorf("pca: model encoding: eigenvalue %v is not finite and positive", v)
		}
	}
	for _, v := range vectors {
		if !finite(v) {
			return fmt.Errorf("pca: model encoding: eigenvector entry %v is not finite", v)
		}
	}
	p.components, p.d, p.mean, p.scale, p.values, p.vectors = components, d, mean, scale, values, vectors
	p.derive()
	return nil
}

// dpMeanStd returns the mean and population standard deviation of every column.
func dpMeanStd(X Matrix) (mean, std []float64) {
	d := X.Cols
	mean, std = make([]float64, d), make([]float64, d)
	for i := range X.Rows {
		for q, v := range X.Row(i) {
			mean[q] += v
		}
	}
	for q := range mean {
		mean[q] /= float64(X.Rows)
	}
	for i := range X.Rows {
		for q, v := range X.Row(i) {
			dv := v - mean[q]
			std[q] += dv * dv
		}
	}
	for q := range std {
		std[q] = math.Sqrt(std[q] / float64(X.Rows))
	}
	return mean, std
}

// dpAddOuter adds z·zᵀ to the upper triangle of the d×d matrix c.
func dpAddOuter(c, z []float64) {
	d := len(z)
	for a, za := range z {
		row := c[a*d+a : a*d+d]
		zs := z[a:]
		zs = zs[:len(row)]
		b := 0
		for ; b+4 <= len(row); b += 4 {
			row[b] += za * zs[b]
			row[b+1] += za * zs[b+1]
			row[b+2] += za * zs[b+2]
			row[b+3] += za * zs[b+3]
		}
		for ; b < len(row); b++ {
			row[b] += za * zs[b]
		}
	}
}

// dpFinishCov divides the upper triangle of c by div and mirrors it to the lower.
func dpFinishCov(c []float64, d int, div float64) {
	for a := range d {
		for b := a; b < d; b++ {
			c[a*d+b] /= div
			c[b*d+a] = c[a*d+b]
		}
	}
}

// dpEigen returns the eigenvalues of the symmetric d×d matrix c in descending order and
// their unit eigenvectors as rows of a d×d matrix.
func dpEigen(name string, c []float64, d int) (values, vectors []float64, err error) {
	for _, v := range c {
		if !finite(v) {
			return nil, nil, fmt.Errorf("%s: the covariance overflows: X has values too large to square", name)
		}
	}
	var es mat.EigenSym
	if !es.Factorize(mat.NewSymDense(d, c), true) {
		return nil, nil, fmt.Errorf("%s: the eigen-decomposition of the covariance did not converge", name)
	}
	asc := es.Values(nil)
	var ev mat.Dense
	es.VectorsTo(&ev)
	values, vectors = make([]float64, d), make([]float64, d*d)
	for j := range d {
		src := d - 1 - j // gonum sorts ascending
		values[j] = asc[src]
		for q := range d {
			vectors[j*d+q] = ev.At(q, src)
		}
	}
	return values, vectors, nil
}

// dpSquaredNorm is ‖W·z‖² for W with len(z) columns. The dot products run four
// accumulators wide: the loop is the cost of scoring pca and mcd rows and of fitting mcd.
func dpSquaredNorm(w, z []float64) float64 {
	d := len(z)
	s := 0.0
	for j := 0; j+d <= len(w); j += d {
		row := w[j : j+d]
		var p0, p1, p2, p3 float64
		q := 0
		for ; q+4 <= d; q += 4 {
			p0 += row[q] * z[q]
			p1 += row[q+1] * z[q+1]
			p2 += row[q+2] * z[q+2]
			p3 += row[q+3] * z[q+3]
		}
		for ; q < d; q++ {
			p0 += row[q] * z[q]
		}
		p := (p0 + p1) + (p2 + p3)
		s += p * p
	}
	return s
}
