package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

func init() {
	Register(Info{
		Name: "knn",
		Kind: KindBatch,
		Doc: "k-nearest-neighbour distance (Ramaswamy et al. 2000; PyOD's KNN): Fit keeps the " +
			"training rows, standardised by their mean and standard deviation, in a KD-tree; a row's " +
			"score is its Euclidean distance to its k-th nearest training row (method 0, PyOD's " +
			"'largest'), or the mean (1) or median (2) of the distances to its k nearest. Higher is " +
			"more anomalous, in standard deviations when standardising. Exact neighbours, O(log n) per row in low " +
			"dimensions; the model holds every training row.",
		Params: []Param{
			{Name: "n_neighbors", Doc: "k, the neighbours a row is compared with; at most the training rows", Default: 5, Min: 1, Max: knnMaxNeighbors, Integer: true},
			{Name: "method", Doc: "how the k distances make the score: 0 = the largest (distance to the k-th neighbour, PyOD's default 'largest'), 1 = their mean, 2 = their median", Default: 0, Min: 0, Max: 2, Integer: true},
			{Name: "standardize", Doc: "1 = scale each feature by the training rows' mean and standard deviation before measuring distances (a constant feature is only centred); 0 = raw Euclidean distance", Default: 1, Min: 0, Max: 1, Integer: true},
		},
		NewBatch: func(p Params, _ uint64) (Batch, error) {
			return NewKNN(KNNConfig{Neighbors: p.Int("n_neighbors"), Method: KNNMethod(p.Int("method")), Standardize: p["standardize"] == 1})
		},
	})
}

// knnMaxNeighbors bounds k for knn and lof: beyond it a neighbourhood is no longer local,
// and a checkpoint cannot make scoring allocate an arbitrary heap.
const knnMaxNeighbors = 1000

// KNNMethod is how knn turns a row's k neighbour distances into its score.
type KNNMethod uint8

const (
	// KNNLargest scores by the distance to the k-th nearest neighbour (PyOD's default).
	KNNLargest KNNMethod = iota
	// KNNMean scores by the mean distance to the k nearest neighbours.
	KNNMean
	// KNNMedian scores by the median distance to the k nearest neighbours.
	KNNMedian
)

// KNNConfig is the shape of a knn detector.
type KNNConfig struct {
	Neighbors   int       // k
	Method      KNNMethod // how the k distances combine
	Standardize bool      // scale features by the training mean and standard deviation
}

// KNN is the knn detector. Fit and Score are not safe for concurrent use; Score itself
// runs on up to SetWorkers goroutines.
type KNN struct {
	cfg KNNConfig
	nn  neighborModel
}

// NewKNN checks cfg and returns an unfitted detector.
func NewKNN(cfg KNNConfig) (*KNN, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("knn: %w", err)
	}
	return &KNN{cfg: cfg, nn: neighborModel{name: "knn", standardize: cfg.Standardize}}, nil
}

func (cfg KNNConfig) check() error {
	if cfg.Neighbors < 1 || cfg.Neighbors > knnMaxNeighbors {
		return fmt.Errorf("n_neighbors = %d must be in [1, %d]", cfg.Neighbors, knnMaxNeighbors)
	}
	if cfg.Method > KNNMedian {
		return fmt.Errorf("method = %d must be 0 (largest), 1 (mean) or 2 (median)", cfg.Method)
	}
	return nil
}

// SetWorkers implements Parallel.
func (m *KNN) SetWorkers(n int) { m.nn.workers = n }

// Fit implements Batch: it needs at least n_neighbors rows.
func (m *KNN) Fit(X Matrix) error {
	if err := X.Check(); err != nil {
		return fmt.Errorf("knn: fit: %w", err)
	}
	if X.Rows < m.cfg.Neighbors {
		return fmt.Errorf("knn: n_neighbors = %d needs at least as many training rows, got %d", m.cfg.Neighbors, X.Rows)
	}
	_, err := m.nn.fit(X)
	return err
}

// Score implements Batch.
func (m *KNN) Score(X Matrix, out []float64) error {
	if err := m.nn.checkScore(X, out); err != nil {
		return err
	}
	k, method, nn := m.cfg.Neighbors, m.cfg.Method, &m.nn
	return nn.forRows(X.Rows, func() func(lo, hi int) error {
		var s KDScratch
		z, dist, idx := make([]float64, X.Cols), make([]float64, k), make([]int, k)
		return func(lo, hi int) error {
			for i := lo; i < hi; i++ {
				if err := nn.nearest(X, i, z, dist, idx, &s); err != nil {
					return err
				}
				out[i] = knnCombine(dist, method)
			}
			return nil
		}
	})
}

// knnCombine turns ascending neighbour distances into a score, as PyOD's KNN does.
func knnCombine(dist []float64, method KNNMethod) float64 {
	k := len(dist)
	switch method {
	case KNNMean:
		sum := 0.0
		for _, v := range dist {
			sum += v
		}
		return sum / float64(k)
	case KNNMedian:
		if k%2 == 1 {
			return dist[k/2]
		}
		return (dist[k/2-1] + dist[k/2]) / 2
	}
	return dist[k-1]
}

const (
	knnFormatVersion = 1
	knnFormatTag     = 'K' // tells a knn checkpoint from another detector's
)

// MarshalBinary implements Persistent: version, tag, k, method, then the shared
// neighbour model (see neighborModel.appendBinary).
func (m *KNN) MarshalBinary() ([]byte, error) {
	b := []byte{knnFormatVersion, knnFormatTag}
	b = binary.LittleEndian.AppendUint32(b, uint32(m.cfg.Neighbors))
	b = append(b, byte(m.cfg.Method))
	return m.nn.appendBinary(b), nil
}

// UnmarshalBinary implements Persistent; it replaces the configuration and the model
// and keeps the worker count.
func (m *KNN) UnmarshalBinary(data []byte) error {
	d := nbDecoder{name: "knn", b: data}
	d.header(knnFormatVersion, knnFormatTag)
	k := int(d.u32())
	method := KNNMethod(d.u8())
	if d.err != nil {
		return d.err
	}
	cfg := KNNConfig{Neighbors: k, Method: method}
	if err := cfg.check(); err != nil {
		return fmt.Errorf("knn: checkpoint: %w", err)
	}
	nn := neighborModel{name: "knn", workers: m.nn.workers}
	if err := nn.decode(&d); err != nil {
		return err
	}
	if err := d.end(); err != nil {
		return err
	}
	if nn.tree != nil && nn.tree.Len() < k {
		return fmt.Errorf("knn: checkpoint: n_neighbors = %d but only %d training rows", k, nn.tree.Len())
	}
	cfg.Standardize = nn.standardize
	m.cfg, m.nn = cfg, nn
	return nil
}

// neighborModel is what knn and lof share: the scaling fitted on the training rows, the
// KD-tree of the scaled rows, and scoring spread over workers.
type neighborModel struct {
	name        string // the detector, for errors
	standardize bool
	workers     int
	mean, scale []float64 // a row is scaled to (x − mean) / scale; nil before Fit
	tree        *KDTree
}

// fit scales X and builds the tree; it returns the scaled rows. On error the model is
// left as it was.
func (nn *neighborModel) fit(X Matrix) (Matrix, error) {
	if r, c, ok := firstNonFinite(X); !ok {
		return Matrix{}, fmt.Errorf("%s: fit: row %d, column %d is %v; values must be finite", nn.name, r, c, X.Data[r*X.Cols+c])
	}
	mean, scale := make([]float64, X.Cols), make([]float64, X.Cols)
	for j := range scale {
		scale[j] = 1
	}
	if nn.standardize {
		// The same arithmetic as eval.Standardize, so data standardised by the PyOD
		// protocol passes through (nearly) unchanged.
		for j := range X.Cols {
			var sum, sq float64
			for i := range X.Rows {
				sum += X.Data[i*X.Cols+j]
			}
			mu := sum / float64(X.Rows)
			for i := range X.Rows {
				e := X.Data[i*X.Cols+j] - mu
				sq += e * e
			}
			sd := math.Sqrt(sq / float64(X.Rows))
			if sd == 0 {
				sd = 1
			}
			if !finite(mu) || !finite(sd) {
				return Matrix{}, fmt.Errorf("%s: fit: column %d is too large to standardise (mean %v, sd %v)", nn.name, j, mu, sd)
			}
			mean[j], scale[j] = mu, sd
		}
	}
	Z := NewMatrix(X.Rows, X.Cols)
	for i := range X.Rows {
		scaleRow(Z.Row(i), X.Row(i), mean, scale)
	}
	tree, err := NewKDTree(Z)
	if err != nil {
		return Matrix{}, fmt.Errorf("%s: fit: %w", nn.name, err)
	}
	nn.mean, nn.scale, nn.tree = mean, scale, tree
	return Z, nil
}

func scaleRow(dst, src, mean, scale []float64) {
	for j, v := range src[:len(dst)] {
		dst[j] = (v - mean[j]) / scale[j]
	}
}

// nearest finds the neighbours of row i of X among the training rows, z being scratch
// for the scaled row.
func (nn *neighborModel) nearest(X Matrix, i int, z, dist []float64, idx []int, s *KDScratch) error {
	scaleRow(z, X.Row(i), nn.mean, nn.scale)
	if _, err := nn.tree.Nearest(z, -1, dist, idx, s); err != nil {
		// Only a value so large that scaling overflows gets here: checkScore did the rest.
		return fmt.Errorf("%s: score: row %d: %w", nn.name, i, err)
	}
	return nil
}

// checkScore reports why X and out cannot be scored, naming the shape or cell at fault.
func (nn *neighborModel) checkScore(X Matrix, out []float64) error {
	if nn.tree == nil {
		return fmt.Errorf("%s: score before fit", nn.name)
	}
	if err := X.Check(); err != nil {
		return fmt.Errorf("%s: score: %w", nn.name, err)
	}
	if X.Cols != nn.tree.Dims() {
		return fmt.Errorf("%s: score: %d columns, the model was fitted on %d", nn.name, X.Cols, nn.tree.Dims())
	}
	if len(out) != X.Rows {
		return fmt.Errorf("%s: score: out has %d elements for %d rows", nn.name, len(out), X.Rows)
	}
	if r, c, ok := firstNonFinite(X); !ok {
		return fmt.Errorf("%s: score: row %d, column %d is %v; values must be finite", nn.name, r, c, X.Data[r*X.Cols+c])
	}
	return nil
}

// nbChunk is the rows a worker takes at a time: small enough to balance workers when
// some rows (the outliers) cost more, large enough that taking one costs nothing.
const nbChunk = 256

// forRows runs every row range of [0, n) through a function made by newWorker, on up to
// nn.workers goroutines, each with its own function (and so its own scratch). Rows are
// independent, so results do not depend on the worker count; nor does the error, the
// one of the first failing range.
func (nn *neighborModel) forRows(n int, newWorker func() func(lo, hi int) error) error {
	chunks := (n + nbChunk - 1) / nbChunk
	w := min(max(nn.workers, 1), chunks)
	if w <= 1 {
		return newWorker()(0, n)
	}
	errs := make([]error, chunks)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			run := newWorker()
			for c := int(next.Add(1)) - 1; c < chunks; c = int(next.Add(1)) - 1 {
				errs[c] = run(c*nbChunk, min((c+1)*nbChunk, n))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// appendBinary encodes the model after a detector's header: standardize (u8), columns
// and rows (u32 each, both 0 before Fit), then float64s: mean and scale per column and
// the scaled training rows in their original order, from which decode rebuilds the same
// tree.
func (nn *neighborModel) appendBinary(b []byte) []byte {
	b = append(b, byte(b2u(nn.standardize)))
	if nn.tree == nil {
		b = binary.LittleEndian.AppendUint32(b, 0)
		return binary.LittleEndian.AppendUint32(b, 0)
	}
	t := nn.tree
	b = binary.LittleEndian.AppendUint32(b, uint32(t.d))
	b = binary.LittleEndian.AppendUint32(b, uint32(t.n))
	b = appendFloats(b, nn.mean)
	b = appendFloats(b, nn.scale)
	start := len(b)
	b = append(b, make([]byte, 8*t.n*t.d)...)
	for p, r := range t.idx {
		at := start + 8*int(r)*t.d
		for j, v := range t.pts[p*t.d : (p+1)*t.d] {
			binary.LittleEndian.PutUint64(b[at+8*j:], math.Float64bits(v))
		}
	}
	return b
}

func appendFloats(b []byte, v []float64) []byte {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

// decode reads what appendBinary wrote into nn, checking every value so that a corrupt
// checkpoint fails here rather than scoring nonsense.
func (nn *neighborModel) decode(d *nbDecoder) error {
	std := d.u8()
	cols, rows := int(d.u32()), int(d.u32())
	if d.err != nil {
		return d.err
	}
	if std > 1 {
		return fmt.Errorf("%s: checkpoint: standardize = %d must be 0 or 1", nn.name, std)
	}
	nn.standardize = std == 1
	if rows == 0 || cols == 0 {
		if rows != cols {
			return fmt.Errorf("%s: checkpoint: %d rows of %d columns", nn.name, rows, cols)
		}
		return nil // unfitted
	}
	// Bound the sizes by the bytes present before multiplying or allocating.
	if avail := len(d.b) / 8; cols > avail || rows > avail/cols || (rows+2)*cols > avail {
		return fmt.Errorf("%s: checkpoint truncated: %d rows of %d columns need more than the %d bytes left", nn.name, rows, cols, len(d.b))
	}
	mean, scale := d.floats(cols), d.floats(cols)
	Z := Matrix{Rows: rows, Cols: cols, Data: d.floats(rows * cols)}
	if d.err != nil {
		return d.err
	}
	for j := range cols {
		if !finite(mean[j]) || !(scale[j] > 0) || !finite(scale[j]) {
			return fmt.Errorf("%s: checkpoint: column %d has mean %v and scale %v", nn.name, j, mean[j], scale[j])
		}
	}
	tree, err := NewKDTree(Z)
	if err != nil {
		return fmt.Errorf("%s: checkpoint: %w", nn.name, err)
	}
	nn.mean, nn.scale, nn.tree = mean, scale, tree
	return nil
}

// nbDecoder reads little-endian values, keeping the first error (a truncation) so that a
// decode can read a whole header and check once.
type nbDecoder struct {
	name string
	b    []byte
	err  error
}

func (d *nbDecoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%s: checkpoint truncated: want %d more bytes, have %d", d.name, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// header checks the format version (the first byte) and the detector tag.
func (d *nbDecoder) header(version, tag byte) {
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%s: checkpoint is empty", d.name)
		return
	}
	if v := d.b[0]; v != version {
		d.err = fmt.Errorf("%s: checkpoint format version %d is not supported (want %d)", d.name, v, version)
		return
	}
	if b := d.take(2); b != nil && b[1] != tag {
		d.err = fmt.Errorf("%s: checkpoint is not a %s model (tag %q, want %q)", d.name, d.name, b[1], tag)
	}
}

func (d *nbDecoder) u8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *nbDecoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *nbDecoder) floats(n int) []float64 {
	b := d.take(8 * n)
	if b == nil {
		return nil
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v
}

// end reports bytes left over: a checkpoint of another shape or version.
func (d *nbDecoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		return fmt.Errorf("%s: checkpoint has %d unexpected trailing bytes", d.name, len(d.b))
	}
	return d.err
}
