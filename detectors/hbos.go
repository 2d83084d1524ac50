package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
)

func init() {
	Register(Info{
		Name: "hbos",
		Kind: KindBatch,
		Doc: "Histogram-based Outlier Score (Goldstein & Dengel 2012, PyOD semantics): one " +
			"static histogram of `n_bins` equal-width bins per feature over the training range; " +
			"a row's score is Σ over features of −log2(density of its bin + alpha). A value " +
			"beyond the range by at most `tol` bin widths takes the edge bin, further out the " +
			"sparsest bin. Features are treated as independent: fast, O(d log n_bins) per row, " +
			"blind to anomalies that are only jointly unusual. Contributions: each feature's " +
			"term above the term of its densest bin.",
		Params: []Param{
			{Name: "n_bins", Doc: "equal-width bins per feature", Default: 10, Min: 2, Max: 10000, Integer: true},
			{Name: "alpha", Doc: "added to every bin's density, so empty bins score finitely", Default: 0.1, Min: 1e-12, Max: 1},
			{Name: "tol", Doc: "bin widths beyond the training range that still count as the edge bin", Default: 0.5, Min: 0, Max: 1000},
		},
		NewBatch: func(p Params, _ uint64) (Batch, error) {
			return NewHBOS(HBOSConfig{Bins: p.Int("n_bins"), Alpha: p["alpha"], Tol: p["tol"]})
		},
	})
}

// HBOSConfig holds the hbos parameters.
type HBOSConfig struct {
	Bins  int     // equal-width bins per feature
	Alpha float64 // regulariser added to each bin's density
	Tol   float64 // bin widths beyond the range that still take the edge bin
}

// HBOS is the hbos detector. After Fit it is read-only, so Score and Contributions may be
// called from several goroutines at once.
type HBOS struct {
	cfg     HBOSConfig
	workers int
	d       int
	// edges[j*(Bins+1):(j+1)*(Bins+1)] are feature j's bin edges; hist[j*Bins:(j+1)*Bins]
	// its densities (count / (n · width)), as numpy.histogram(density=True).
	edges, hist []float64
	// terms[j*Bins+b] = −log2(hist + alpha) of bin b; far[j] is the term of the sparsest
	// bin (for values far outside) and base[j] of the densest (the zero of contributions).
	terms, far, base []float64
}

// NewHBOS checks cfg and returns an unfitted detector.
func NewHBOS(cfg HBOSConfig) (*HBOS, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &HBOS{cfg: cfg}, nil
}

func (c HBOSConfig) check() error {
	switch {
	case c.Bins < 2 || c.Bins > 10000:
		return fmt.Errorf("hbos: n_bins = %d must be in [2, 10000]", c.Bins)
	case !(c.Alpha > 0) || c.Alpha > 1:
		return fmt.Errorf("hbos: alpha = %v must be in (0, 1]", c.Alpha)
	case !(c.Tol >= 0) || math.IsInf(c.Tol, 0):
		return fmt.Errorf("hbos: tol = %v must be non-negative and finite", c.Tol)
	}
	return nil
}

// SetWorkers implements Parallel.
func (h *HBOS) SetWorkers(n int) { h.workers = n }

// Fit implements Batch: a histogram per feature over [min, max] of its column. A constant
// column gets the range [v−0.5, v+0.5], as numpy does (see dpHistRange).
func (h *HBOS) Fit(X Matrix) error {
	if err := dpCheckMatrix("hbos", X); err != nil {
		return err
	}
	nb, d := h.cfg.Bins, X.Cols
	allEdges, allHist := make([]float64, d*(nb+1)), make([]float64, d*nb)
	counts := make([]int, nb)
	for j := range d {
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range X.Rows {
			v := X.Data[i*d+j]
			lo, hi = min(lo, v), max(hi, v)
		}
		lo, hi, ok := dpHistRange(lo, hi, nb)
		if !ok {
			return fmt.Errorf("hbos: column %d spans more than a float64 can hold", j)
		}
		edges := allEdges[j*(nb+1) : (j+1)*(nb+1)]
		for b := range edges {
			edges[b] = lo + float64(b)*(hi-lo)/float64(nb)
		}
		edges[nb] = hi
		clear(counts)
		for i := range X.Rows {
			counts[hbosBin(edges, X.Data[i*d+j])]++
		}
		hist := allHist[j*nb : (j+1)*nb]
		for b := range hist {
			hist[b] = float64(counts[b]) / (float64(X.Rows) * (edges[b+1] - edges[b]))
		}
	}
	h.d, h.edges, h.hist = d, allEdges, allHist
	h.derive()
	return nil
}

// hbosBin is the bin of a value inside [edges[0], edges[nb]]: bins are half-open except
// the last, which holds its right edge (numpy.histogram's rule).
func hbosBin(edges []float64, v float64) int {
	nb := len(edges) - 1
	return min(upperBound(edges[1:nb], v), nb-1)
}

// derive computes the score tables from the histograms.
func (h *HBOS) derive() {
	nb := h.cfg.Bins
	h.terms = make([]float64, len(h.hist))
	h.far = make([]float64, h.d)
	h.base = make([]float64, h.d)
	for j := range h.d {
		far, base := math.Inf(-1), math.Inf(1)
		for b := range nb {
			t := -math.Log2(h.hist[j*nb+b] + h.cfg.Alpha)
			h.terms[j*nb+b] = t
			far, base = max(far, t), min(base, t)
		}
		h.far[j], h.base[j] = far, base
	}
}

// term is feature j's contribution to the score of value v: PyOD's digitize on the edges,
// with values just outside the range (within tol bin widths) taking the edge bin.
func (h *HBOS) term(j int, v float64) float64 {
	nb := h.cfg.Bins
	edges := h.edges[j*(nb+1) : (j+1)*(nb+1)]
	switch {
	case v < edges[0]:
		if edges[0]-v <= h.cfg.Tol*(edges[1]-edges[0]) {
			return h.terms[j*nb]
		}
		return h.far[j]
	case v >= edges[nb]:
		// The training maximum lands here too (digitize is right-open): distance 0.
		if v-edges[nb] <= h.cfg.Tol*(edges[nb]-edges[nb-1]) {
			return h.terms[j*nb+nb-1]
		}
		return h.far[j]
	}
	return h.terms[j*nb+hbosBin(edges, v)]
}

// Score implements Batch.
func (h *HBOS) Score(X Matrix, out []float64) error {
	if err := dpCheckScore("hbos", X, out, h.d); err != nil {
		return err
	}
	dpParallel(h.workers, X.Rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			s := 0.0
			for j, v := range X.Row(i) {
				s += h.term(j, v)
			}
			out[i] = s
		}
	})
	return nil
}

// Contributions implements Contributor: each feature's term above the term of its densest
// bin, so a feature sitting in its mode contributes nothing.
func (h *HBOS) Contributions(x, contrib []float64) error {
	if err := dpCheckRow("hbos", x, contrib, h.d); err != nil {
		return err
	}
	sum := 0.0
	for j, v := range x {
		c := h.term(j, v) - h.base[j]
		contrib[j] = c
		sum += c
	}
	normalizeShares(contrib, sum)
	return nil
}

const hbosFormatV1 = 1

// MarshalBinary implements Persistent: version, parameters, then each feature's edges and
// densities; the score tables are derived again on load.
func (h *HBOS) MarshalBinary() ([]byte, error) {
	if h.d == 0 {
		return nil, fmt.Errorf("hbos: not fitted")
	}
	w := dpWriter{b: make([]byte, 0, 32+8*(len(h.edges)+len(h.hist)))}
	w.u8(hbosFormatV1)
	w.u32(h.cfg.Bins)
	w.f64(h.cfg.Alpha)
	w.f64(h.cfg.Tol)
	w.u32(h.d)
	w.f64s(h.edges)
	w.f64s(h.hist)
	return w.b, nil
}

// UnmarshalBinary implements Persistent. The worker count is a runtime setting and is kept.
func (h *HBOS) UnmarshalBinary(data []byte) error {
	r := dpReader{name: "hbos", b: data}
	if err := r.version(hbosFormatV1); err != nil {
		return err
	}
	cfg := HBOSConfig{Bins: r.u32(), Alpha: r.f64(), Tol: r.f64()}
	d := r.u32()
	if r.err != nil {
		return r.err
	}
	if err := cfg.check(); err != nil {
		return fmt.Errorf("%w (in the model encoding)", err)
	}
	if d < 1 {
		return fmt.Errorf("hbos: model encoding has %d features", d)
	}
	edges := r.f64Matrix(d, cfg.Bins+1)
	hist := r.f64Matrix(d, cfg.Bins)
	if err := r.done(); err != nil {
		return err
	}
	for j := range d {
		e := edges[j*(cfg.Bins+1) : (j+1)*(cfg.Bins+1)]
		for b := 1; b < len(e); b++ {
			if !finite(e[b-1]) || !finite(e[b]) || !(e[b-1] < e[b]) {
				return fmt.Errorf("hbos: model encoding: feature %d has bin edges out of order", j)
			}
		}
	}
	for _, v := range hist {
		if !finite(v) || v < 0 {
			return fmt.Errorf("hbos: model encoding: density %v is not a finite non-negative number", v)
		}
	}
	h.cfg, h.d, h.edges, h.hist = cfg, d, edges, hist
	h.derive()
	return nil
}

// The helpers below are shared by the distribution- and projection-based batch detectors
// (hbos, ecod, copod, pca, mcd, loda); the dp prefix keeps them apart from other families.

// dpCheckMatrix reports an empty or malformed matrix or a non-finite value, naming where.
func dpCheckMatrix(name string, X Matrix) error {
	if err := X.Check(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for k, v := range X.Data {
		if !finite(v) {
			return fmt.Errorf("%s: row %d, column %d: %v is not a finite number", name, k/X.Cols, k%X.Cols, v)
		}
	}
	return nil
}

// dpCheckScore checks a Score call against a model fitted on d columns (0: not fitted).
func dpCheckScore(name string, X Matrix, out []float64, d int) error {
	if d == 0 {
		return fmt.Errorf("%s: not fitted", name)
	}
	if err := dpCheckMatrix(name, X); err != nil {
		return err
	}
	if X.Cols != d {
		return fmt.Errorf("%s: X has %d columns, the model was fitted on %d", name, X.Cols, d)
	}
	if len(out) != X.Rows {
		return fmt.Errorf("%s: out has %d values for %d rows", name, len(out), X.Rows)
	}
	return nil
}

// dpCheckRow checks a Contributions call against a model fitted on d columns.
func dpCheckRow(name string, x, contrib []float64, d int) error {
	switch {
	case d == 0:
		return fmt.Errorf("%s: not fitted", name)
	case len(x) != d:
		return fmt.Errorf("%s: x has %d features, the model was fitted on %d", name, len(x), d)
	case len(contrib) != d:
		return fmt.Errorf("%s: contrib has %d values for %d features", name, len(contrib), d)
	}
	for j, v := range x {
		if !finite(v) {
			return fmt.Errorf("%s: feature %d: %v is not a finite number", name, j, v)
		}
	}
	return nil
}

// dpHistRange is the range of an nb-bin histogram of values in [lo, hi]: numpy's
// [v−0.5, v+0.5] for a constant, widened where ±0.5 is lost to rounding or the bins would
// be too narrow to keep their edges apart (a step below 1e-13 of the values' magnitude,
// some 450 ulps); ok is false when the range overflows.
func dpHistRange(lo, hi float64, nb int) (float64, float64, bool) {
	if !finite(hi - lo) {
		return 0, 0, false
	}
	m := max(math.Abs(lo), math.Abs(hi))
	if step := (hi - lo) / float64(nb); step > 1e-13*m && finite(1/step) {
		return lo, hi, true
	}
	half := max(0.5, 1e-12*float64(nb)*m)
	lo, hi = lo-half, hi+half
	return lo, hi, finite(hi - lo)
}

// dpMinChunk is the fewest rows worth a goroutine: below it, start-up costs more than the
// scoring it spreads.
const dpMinChunk = 256

// dpParallel runs fn over [0, rows) in contiguous chunks on up to workers goroutines. fn
// must only write its own rows, which is why a parallel score equals a serial one bit for
// bit.
func dpParallel(workers, rows int, fn func(lo, hi int)) {
	workers = min(workers, rows/dpMinChunk)
	if workers <= 1 {
		fn(0, rows)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := rows*w/workers, rows*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// dpWriter appends a model encoding, little-endian.
type dpWriter struct{ b []byte }

func (w *dpWriter) u8(v byte)     { w.b = append(w.b, v) }
func (w *dpWriter) u32(v int)     { w.b = binary.LittleEndian.AppendUint32(w.b, uint32(v)) }
func (w *dpWriter) u64(v uint64)  { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *dpWriter) f64(v float64) { w.u64(math.Float64bits(v)) }
func (w *dpWriter) f64s(v []float64) {
	for _, x := range v {
		w.f64(x)
	}
}

// dpReader decodes a model encoding. The first error sticks and later reads return zeros,
// so a decoder reads all its fields and checks once; lengths are checked against the bytes
// left before anything is allocated, so a corrupt count cannot ask for gigabytes.
type dpReader struct {
	name string
	b    []byte
	off  int
	err  error
}

func (r *dpReader) version(want byte) error {
	if len(r.b) == 0 {
		return fmt.Errorf("%s: model encoding is empty", r.name)
	}
	if r.b[0] != want {
		return fmt.Errorf("%s: model encoding version %d is not supported (want %d)", r.name, r.b[0], want)
	}
	r.off = 1
	return nil
}

func (r *dpReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%s: model encoding is truncated at byte %d (%d more wanted, %d left)", r.name, r.off, n, len(r.b)-r.off)
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *dpReader) u8() byte {
	if s := r.take(1); s != nil {
		return s[0]
	}
	return 0
}

func (r *dpReader) u32() int {
	if s := r.take(4); s != nil {
		return int(binary.LittleEndian.Uint32(s))
	}
	return 0
}

func (r *dpReader) u64() uint64 {
	if s := r.take(8); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

func (r *dpReader) f64() float64 { return math.Float64frombits(r.u64()) }

// f64Matrix reads rows·cols floats.
func (r *dpReader) f64Matrix(rows, cols int) []float64 {
	if r.err != nil {
		return nil
	}
	left := (len(r.b) - r.off) / 8
	if rows < 0 || cols < 0 || (cols > 0 && rows > left/cols) {
		r.err = fmt.Errorf("%s: model encoding is truncated at byte %d (%d×%d values wanted, %d left)", r.name, r.off, rows, cols, left)
		return nil
	}
	s := r.take(8 * rows * cols)
	v := make([]float64, rows*cols)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(s[8*i:]))
	}
	return v
}

// done reports the first error, or bytes left over after the last field.
func (r *dpReader) done() error {
	if r.err != nil {
		return r.err
	}
	if r.off != len(r.b) {
		return fmt.Errorf("%s: model encoding has %d unexpected bytes after byte %d", r.name, len(r.b)-r.off, r.off)
	}
	return nil
}
