package detectors

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"
)

func init() {
	Register(Info{
		Name: "mcd",
		Kind: KindBatch,
		Doc: "Robust Mahalanobis distance (Rousseeuw & Van Driessen's FastMCD, as scikit-learn's " +
			"MinCovDet under PyOD): the location and covariance of the h training rows whose " +
			"covariance has the smallest determinant, h = (n+d+1)/2 by default. Seeded random " +
			"h-subsets get two C-steps each (on a 1500-row sample when n is larger); the best 10 " +
			"converge there, the best 3 of those on all rows; the winner is made consistent at " +
			"the normal and reweighted with the rows inside its 97.5% χ² quantile. A row's " +
			"score is its Mahalanobis distance to that estimate. Singular covariances (a " +
			"feature constant over the support) are regularised: eigenvalues are floored at " +
			"1e-9 of the largest, so a row off such a flat direction scores very high instead " +
			"of infinitely. O(d²) per row.",
		Params: []Param{
			{Name: "support_fraction", Doc: "share of rows in the support; 0 means (n+d+1)/2n, the most robust", Default: 0, Min: 0, Max: 1},
			{Name: "trials", Doc: "random initial subsets, each refined by two C-steps", Default: 30, Min: 1, Max: 10000, Integer: true},
		},
		NewBatch: func(p Params, seed uint64) (Batch, error) {
			return NewMCD(MCDConfig{SupportFraction: p["support_fraction"], Trials: p.Int("trials")}, seed)
		},
	})
}

// MCDConfig holds the mcd parameters.
type MCDConfig struct {
	SupportFraction float64 // share of rows in the support; 0: (n+d+1)/2 rows
	Trials          int     // random initial subsets
}

const (
	// mcdSampleRows bounds the rows the random trials work on: their C-steps are the bulk
	// of the fit, and 1500 rows locate the candidates as well as millions would.
	mcdSampleRows = 1500
	// mcdBest candidates from the trials are iterated to convergence (on the sample when
	// there is one), and the mcdBestFull best of those on all rows.
	mcdBest     = 10
	mcdBestFull = 3
	// mcdMaxSteps bounds the C-steps of a candidate on all rows; they converge in a handful.
	mcdMaxSteps = 30
	// mcdSingular is the eigenvalue, relative to the largest, at or below which a support's
	// covariance counts as singular: rounding leaves ~1e-16 where the true value is 0.
	mcdSingular = 1e-12
	// mcdFloor is the smallest eigenvalue of the final covariance, relative to the largest
	// (or to the mean variance of the data when the support is a single point).
	mcdFloor = 1e-9
)

// MCD is the mcd detector. After Fit it is read-only, so Score may be called from several
// goroutines at once.
type MCD struct {
	cfg     MCDConfig
	seed    uint64
	workers int
	d       int
	// location and covariance are the reweighted robust estimates; whiten (d×d, upper
	// triangular) maps x−location to coordinates of unit variance, so the squared distance
	// is ‖whiten·(x−location)‖².
	location, covariance, whiten []float64
	regularized                  bool
}

// NewMCD checks cfg and returns an unfitted detector; the seed draws the random subsets.
func NewMCD(cfg MCDConfig, seed uint64) (*MCD, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &MCD{cfg: cfg, seed: seed}, nil
}

func (c MCDConfig) check() error {
	switch {
	case !(c.SupportFraction >= 0 && c.SupportFraction <= 1):
		return fmt.Errorf("mcd: support_fraction = %v must be in [0, 1] (0: automatic)", c.SupportFraction)
	case c.Trials < 1 || c.Trials > 10000:
		return fmt.Errorf("mcd: trials = %d must be in [1, 10000]", c.Trials)
	}
	return nil
}

// SetWorkers implements Parallel.
func (m *MCD) SetWorkers(n int) { m.workers = n }

// Location is the robust mean of the fitted model (shared; do not modify).
func (m *MCD) Location() []float64 { return m.location }

// Covariance is the robust covariance of the fitted model, row-major d×d (shared; do not
// modify).
func (m *MCD) Covariance() []float64 { return m.covariance }

// Regularized reports whether the fitted covariance was singular and had its smallest
// eigenvalues floored.
func (m *MCD) Regularized() bool { return m.regularized }

// mcdFit is the working state of one Fit.
type mcdFit struct {
	X        Matrix
	d, h     int
	floorAbs float64 // eigenvalue floor when the support has no spread at all
	dist     []float64
	buf      []float64
	z        []float64
}

// mcdEstimate is a location and covariance with its whitening (upper triangular) and
// log-determinant.
type mcdEstimate struct {
	mu, cov, w  []float64
	logdet      float64
	regularized bool
}

// Fit implements Batch. It needs more rows than columns.
func (m *MCD) Fit(X Matrix) error {
	if err := dpCheckMatrix("mcd", X); err != nil {
		return err
	}
	n, d := X.Rows, X.Cols
	if n < d+1 || n < 2 {
		return fmt.Errorf("mcd: X has %d rows and %d columns; more rows than columns are needed", n, d)
	}
	h := (n + d + 1) / 2
	if m.cfg.SupportFraction > 0 {
		h = int(math.Ceil(m.cfg.SupportFraction * float64(n)))
	}
	h = min(max(h, d+1), n)

	_, std := dpMeanStd(X)
	meanVar := 0.0
	for _, s := range std {
		meanVar += s * s / float64(d)
	}
	floorAbs := mcdFloor * meanVar
	if floorAbs == 0 {
		floorAbs = 1 // every column constant: any distance will do
	}
	rng := rand.New(rand.NewPCG(m.seed, 0x6d6364)) // "mcd"

	// Random h-subsets of a sample, two C-steps each; keep the best candidates.
	sample := X
	hs := h
	if n > mcdSampleRows {
		idx := rng.Perm(n)[:mcdSampleRows]
		slices.Sort(idx)
		sample = NewMatrix(mcdSampleRows, d)
		for i, r := range idx {
			copy(sample.Row(i), X.Row(r))
		}
		hs = min(max(int(math.Ceil(float64(mcdSampleRows)*float64(h)/float64(n))), d+1), mcdSampleRows)
	}
	sf := newMCDFit(sample, hs, floorAbs)
	perm := make([]int, sample.Rows)
	for i := range perm {
		perm[i] = i
	}
	cands := make([]mcdEstimate, 0, m.cfg.Trials)
	for range m.cfg.Trials {
		for i := range hs { // partial Fisher–Yates: the first hs of perm are a random subset
			k := i + rng.IntN(len(perm)-i)
			perm[i], perm[k] = perm[k], perm[i]
		}
		est, err := sf.estimate(perm[:hs], false)
		if err != nil {
			return err
		}
		for range 2 {
			if est, err = sf.estimate(sf.closest(est), false); err != nil {
				return err
			}
		}
		cands = append(cands, est)
	}
	byDet := func(a, b mcdEstimate) int { return cmp.Compare(a.logdet, b.logdet) }
	slices.SortStableFunc(cands, byDet)
	cands = cands[:min(len(cands), mcdBest)]

	// On a sample, the best candidates converge there first (cheap), and only the best of
	// those on all rows, where they then need few steps.
	if sample.Rows < n {
		for c := range cands {
			var err error
			if cands[c], err = sf.converge(cands[c]); err != nil {
				return err
			}
		}
		slices.SortStableFunc(cands, byDet)
		cands = cands[:min(len(cands), mcdBestFull)]
	}
	ff := newMCDFit(X, h, floorAbs)
	var best mcdEstimate
	for c, cand := range cands {
		est, err := ff.converge(cand)
		if err != nil {
			return err
		}
		if c == 0 || est.logdet < best.logdet {
			best = est
		}
	}

	// Consistency at the normal: the median squared distance of a normal sample is the χ²_d
	// median; then reweight with the rows inside the 97.5% quantile.
	chi := distuv.ChiSquared{K: float64(d)}
	ff.distances(best)
	copy(ff.buf, ff.dist)
	corr := dpKth(ff.buf, n/2) / chi.Quantile(0.5)
	if corr > 0 && finite(corr) {
		for k := range best.cov {
			best.cov[k] *= corr
		}
		for k := range ff.dist {
			ff.dist[k] /= corr
		}
	}
	cut := chi.Quantile(0.975)
	inliers := make([]int, 0, n)
	for i, dd := range ff.dist {
		if dd < cut {
			inliers = append(inliers, i)
		}
	}
	var final mcdEstimate
	var err error
	if len(inliers) > d {
		final, err = ff.estimate(inliers, true)
	} else {
		final, err = ff.whitened(best.mu, best.cov, true) // too few inliers: the corrected raw estimate
	}
	if err != nil {
		return err
	}
	m.d, m.location, m.covariance, m.whiten, m.regularized = d, final.mu, final.cov, final.w, final.regularized
	return nil
}

func newMCDFit(X Matrix, h int, floorAbs float64) *mcdFit {
	return &mcdFit{X: X, d: X.Cols, h: h, floorAbs: floorAbs,
		dist: make([]float64, X.Rows), buf: make([]float64, X.Rows), z: make([]float64, X.Cols)}
}

// converge runs C-steps from est until the determinant stops falling (or all but), at
// most mcdMaxSteps. The first step always counts: est may come from other rows.
func (f *mcdFit) converge(est mcdEstimate) (mcdEstimate, error) {
	est, err := f.estimate(f.closest(est), false)
	if err != nil {
		return est, err
	}
	for range mcdMaxSteps - 1 {
		next, err := f.estimate(f.closest(est), false)
		if err != nil {
			return est, err
		}
		if !(next.logdet < est.logdet) {
			break
		}
		// Close enough, as scikit-learn judges it: on tens of thousands of rows the
		// determinant can keep creeping down for dozens of steps that change no ranking.
		close := next.logdet >= est.logdet-(1e-8+1e-5*math.Abs(est.logdet))
		est = next
		if close {
			break
		}
	}
	return est, nil
}

// estimate is the mean and (maximum-likelihood) covariance of the given rows, whitened.
func (f *mcdFit) estimate(rows []int, final bool) (mcdEstimate, error) {
	d := f.d
	mu := make([]float64, d)
	for _, r := range rows {
		for q, v := range f.X.Row(r) {
			mu[q] += v
		}
	}
	for q := range mu {
		mu[q] /= float64(len(rows))
	}
	cov := make([]float64, d*d)
	for _, r := range rows {
		for q, v := range f.X.Row(r) {
			f.z[q] = v - mu[q]
		}
		dpAddOuter(cov, f.z)
	}
	dpFinishCov(cov, d, float64(len(rows)))
	return f.whitened(mu, cov, final)
}

// whitened completes an estimate with its whitening matrix, the triangular factor of
// Λ^−½·Vᵀ, and its log-determinant.
//
// While searching (final false), a support whose covariance is singular (an eigenvalue at
// most mcdSingular of the largest) lies on a hyperplane: FastMCD's exact fit. Its
// log-determinant is −∞, so it wins, and distances to it use the pseudo-inverse, as
// scikit-learn does: flat directions are left out, else the reweighting would keep only
// the rows on the hyperplane. The final estimate, which scores rows, instead floors its
// eigenvalues at mcdFloor of the largest: a row off a flat direction is then very
// anomalous, not ignored.
func (f *mcdFit) whitened(mu, cov []float64, final bool) (mcdEstimate, error) {
	d := f.d
	values, vectors, err := dpEigen("mcd", slices.Clone(cov), d)
	if err != nil {
		return mcdEstimate{}, err
	}
	est := mcdEstimate{mu: mu, cov: cov, w: vectors}
	for j, l := range values {
		if final {
			floor := f.floorAbs
			if values[0] > 0 {
				floor = mcdFloor * values[0]
			}
			if !(l >= floor) {
				l, est.regularized = floor, true
			}
		} else if !(l > mcdSingular*values[0]) {
			est.logdet = math.Inf(-1)
			clear(est.w[j*d : (j+1)*d])
			continue
		}
		est.logdet += math.Log(l)
		s := 1 / math.Sqrt(l)
		for q := range d {
			est.w[j*d+q] *= s
		}
	}
	// W = QR and ‖Wz‖ = ‖Rz‖: the triangular R halves the cost of every distance.
	var qr mat.QR
	qr.Factorize(mat.NewDense(d, d, est.w))
	var r mat.Dense
	qr.RTo(&r)
	for j := range d {
		for q := range d {
			est.w[j*d+q] = r.At(j, q)
		}
	}
	return est, nil
}

// dpTriSquaredNorm is ‖R·z‖² for an upper-triangular d×d R, row-major.
func dpTriSquaredNorm(r, z []float64) float64 {
	d := len(z)
	s := 0.0
	for j := range d {
		row := r[j*d+j : j*d+d]
		zs := z[j:]
		zs = zs[:len(row)]
		var p0, p1, p2, p3 float64
		q := 0
		for ; q+4 <= len(row); q += 4 {
			p0 += row[q] * zs[q]
			p1 += row[q+1] * zs[q+1]
			p2 += row[q+2] * zs[q+2]
			p3 += row[q+3] * zs[q+3]
		}
		for ; q < len(row); q++ {
			p0 += row[q] * zs[q]
		}
		p := (p0 + p1) + (p2 + p3)
		s += p * p
	}
	return s
}

// distances fills f.dist with every row's squared Mahalanobis distance to est.
func (f *mcdFit) distances(est mcdEstimate) {
	for i := range f.X.Rows {
		for q, v := range f.X.Row(i) {
			f.z[q] = v - est.mu[q]
		}
		f.dist[i] = dpTriSquaredNorm(est.w, f.z)
	}
}

// closest returns the h rows nearest to est (the C-step's new support), ties in row order.
func (f *mcdFit) closest(est mcdEstimate) []int {
	f.distances(est)
	copy(f.buf, f.dist)
	thr := dpKth(f.buf, f.h-1)
	rows := make([]int, 0, f.h)
	for i, dd := range f.dist {
		if dd < thr {
			rows = append(rows, i)
		}
	}
	for i, dd := range f.dist {
		if len(rows) == f.h {
			break
		}
		if dd == thr {
			rows = append(rows, i)
		}
	}
	if len(rows) < f.h { // NaN distances (overflowing data): fill up in row order
		for i := 0; len(rows) < f.h; i++ {
			if !(f.dist[i] <= thr) {
				rows = append(rows, i)
			}
		}
	}
	return rows
}

// dpKth returns the k-th smallest (0-based) of v, reordering v: Hoare's selection with a
// median-of-three pivot, O(len(v)) expected.
func dpKth(v []float64, k int) float64 {
	lo, hi := 0, len(v)-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if v[mid] < v[lo] {
			v[mid], v[lo] = v[lo], v[mid]
		}
		if v[hi] < v[lo] {
			v[hi], v[lo] = v[lo], v[hi]
		}
		if v[hi] < v[mid] {
			v[hi], v[mid] = v[mid], v[hi]
		}
		pivot := v[mid]
		i, j := lo, hi
		for i <= j {
			for v[i] < pivot {
				i++
			}
			for v[j] > pivot {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return v[k]
		}
	}
	return v[k]
}

// Score implements Batch: the Mahalanobis distance (not squared) to the robust estimate.
func (m *MCD) Score(X Matrix, out []float64) error {
	if err := dpCheckScore("mcd", X, out, m.d); err != nil {
		return err
	}
	dpParallel(m.workers, X.Rows, func(lo, hi int) {
		z := make([]float64, m.d)
		for i := lo; i < hi; i++ {
			for q, v := range X.Row(i) {
				z[q] = v - m.location[q]
			}
			out[i] = math.Sqrt(dpTriSquaredNorm(m.whiten, z))
		}
	})
	return nil
}

const mcdFormatV1 = 1

// MarshalBinary implements Persistent: version, parameters, seed, d, the regularised flag,
// then location, covariance and whitening matrix (stored, not derived, so a restored model
// does not depend on the eigen-solver giving the same bits).
func (m *MCD) MarshalBinary() ([]byte, error) {
	if m.d == 0 {
		return nil, fmt.Errorf("mcd: not fitted")
	}
	d := m.d
	w := dpWriter{b: make([]byte, 0, 30+8*(d+2*d*d))}
	w.u8(mcdFormatV1)
	w.f64(m.cfg.SupportFraction)
	w.u32(m.cfg.Trials)
	w.u64(m.seed)
	w.u32(d)
	w.u8(b2b(m.regularized))
	w.f64s(m.location)
	w.f64s(m.covariance)
	w.f64s(m.whiten)
	return w.b, nil
}

// UnmarshalBinary implements Persistent. The worker count is a runtime setting and is kept.
func (m *MCD) UnmarshalBinary(data []byte) error {
	r := dpReader{name: "mcd", b: data}
	if err := r.version(mcdFormatV1); err != nil {
		return err
	}
	cfg := MCDConfig{SupportFraction: r.f64(), Trials: r.u32()}
	seed := r.u64()
	d := r.u32()
	reg := r.u8()
	if r.err != nil {
		return r.err
	}
	if err := cfg.check(); err != nil {
		return fmt.Errorf("%w (in the model encoding)", err)
	}
	if d < 1 || reg > 1 {
		return fmt.Errorf("mcd: model encoding has %d features and regularised flag %d", d, reg)
	}
	loc := r.f64Matrix(1, d)
	cov := r.f64Matrix(d, d)
	wh := r.f64Matrix(d, d)
	if err := r.done(); err != nil {
		return err
	}
	for _, s := range [][]float64{loc, cov, wh} {
		for _, v := range s {
			if !finite(v) {
				return fmt.Errorf("mcd: model encoding: %v is not a finite number", v)
			}
		}
	}
	m.cfg, m.seed, m.d, m.regularized = cfg, seed, d, reg == 1
	m.location, m.covariance, m.whiten = loc, cov, wh
	return nil
}

// b2b is 1 for true, as a byte.
func b2b(b bool) byte {
	if b {
		return 1
	}
	return 0
}
