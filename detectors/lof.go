package detectors

import (
	"encoding/binary"
	"fmt"
)

func init() {
	Register(Info{
		Name: "lof",
		Kind: KindBatch,
		Doc: "Local Outlier Factor (Breunig et al. 2000), with sklearn's novelty semantics as in " +
			"PyOD's LOF: Fit keeps the training rows, standardised by their mean and standard " +
			"deviation, in a KD-tree and computes each one's k-distance and local reachability " +
			"density (lrd) among the others; a new row's score is the mean lrd of its k nearest " +
			"training rows over its own lrd, reachability distances taking the training rows' " +
			"k-distances. About 1 inside a cluster, higher where a row is sparser than its " +
			"neighbours. Duplicates are handled as sklearn does: lrd = 1 / (mean reach-distance " +
			"+ 1e-10). With fewer than k+1 training rows, k is lowered to rows − 1.",
		Params: []Param{
			{Name: "n_neighbors", Doc: "k, the neighbours defining a row's locality (lowered to training rows − 1 when there are fewer)", Default: 20, Min: 1, Max: knnMaxNeighbors, Integer: true},
			{Name: "standardize", Doc: "1 = scale each feature by the training rows' mean and standard deviation before measuring distances (a constant feature is only centred); 0 = raw Euclidean distance", Default: 1, Min: 0, Max: 1, Integer: true},
		},
		NewBatch: func(p Params, _ uint64) (Batch, error) {
			return NewLOF(LOFConfig{Neighbors: p.Int("n_neighbors"), Standardize: p["standardize"] == 1})
		},
	})
}

// lofDensityEps is sklearn's guard against a zero mean reachability distance (k or more
// duplicates): it caps an lrd at 1e10 instead of letting it be infinite.
const lofDensityEps = 1e-10

// LOFConfig is the shape of a lof detector.
type LOFConfig struct {
	Neighbors   int  // k
	Standardize bool // scale features by the training mean and standard deviation
}

// LOF is the lof detector. Fit and Score are not safe for concurrent use; both run their
// neighbour queries on up to SetWorkers goroutines.
type LOF struct {
	k  int // as configured
	nn neighborModel
	// Per training row, in its original order: the distance to its k-th nearest other row
	// and its local reachability density.
	kdist, lrd []float64
}

// NewLOF checks cfg and returns an unfitted detector.
func NewLOF(cfg LOFConfig) (*LOF, error) {
	if cfg.Neighbors < 1 || cfg.Neighbors > knnMaxNeighbors {
		return nil, fmt.Errorf("lof: n_neighbors = %d must be in [1, %d]", cfg.Neighbors, knnMaxNeighbors)
	}
	return &LOF{k: cfg.Neighbors, nn: neighborModel{name: "lof", standardize: cfg.Standardize}}, nil
}

// SetWorkers implements Parallel.
func (m *LOF) SetWorkers(n int) { m.nn.workers = n }

// neighbors is the k in use: the configured one, or rows − 1 when the training rows are
// fewer (sklearn's rule), since a training row's neighbours exclude itself.
func (m *LOF) neighbors() int { return min(m.k, m.nn.tree.Len()-1) }

// Fit implements Batch: it needs at least two rows.
func (m *LOF) Fit(X Matrix) error {
	if err := X.Check(); err != nil {
		return fmt.Errorf("lof: fit: %w", err)
	}
	if X.Rows < 2 {
		return fmt.Errorf("lof: fit: needs at least 2 training rows, got %d", X.Rows)
	}
	nn := neighborModel{name: "lof", standardize: m.nn.standardize, workers: m.nn.workers}
	Z, err := nn.fit(X)
	if err != nil {
		return err
	}
	k, n := min(m.k, X.Rows-1), X.Rows
	// Every row's neighbours among the others first: an lrd needs its neighbours' k-distances.
	ndist, nidx := make([]float64, n*k), make([]int32, n*k)
	kdist := make([]float64, n)
	err = nn.forRows(n, func() func(lo, hi int) error {
		var s KDScratch
		idx := make([]int, k)
		return func(lo, hi int) error {
			for i := lo; i < hi; i++ {
				dist := ndist[i*k : (i+1)*k]
				if _, err := nn.tree.Nearest(Z.Row(i), i, dist, idx, &s); err != nil {
					return fmt.Errorf("lof: fit: row %d: %w", i, err) // unreachable: Z is the tree's own
				}
				for j, r := range idx {
					nidx[i*k+j] = int32(r)
				}
				kdist[i] = dist[k-1] // n > k, so k were found
			}
			return nil
		}
	})
	if err != nil {
		return err
	}
	lrd := make([]float64, n)
	for i := range lrd {
		reach := lofMeanReach(ndist[i*k:(i+1)*k], nidx[i*k:(i+1)*k], kdist)
		if !finite(reach) {
			// Distances past 1e154 overflow when squared; densities of 0 would then make
			// scores NaN.
			return fmt.Errorf("lof: fit: row %d: distances to its neighbours overflow; rescale the features or standardize", i)
		}
		lrd[i] = 1 / (reach + lofDensityEps)
	}
	m.nn, m.kdist, m.lrd = nn, kdist, lrd
	return nil
}

// lofMeanReach is the mean reachability distance from a row to its neighbours:
// reach-dist(x, o) = max(d(x, o), k-distance(o)).
func lofMeanReach[I int | int32](dist []float64, idx []I, kdist []float64) float64 {
	sum := 0.0
	for j, d := range dist {
		sum += max(d, kdist[idx[j]])
	}
	return sum / float64(len(dist))
}

// Score implements Batch: mean lrd of the row's neighbours / the row's lrd, computed as
// mean lrd × (mean reach-distance + 1e-10) to spare a division.
func (m *LOF) Score(X Matrix, out []float64) error {
	if err := m.nn.checkScore(X, out); err != nil {
		return err
	}
	k, nn := m.neighbors(), &m.nn
	return nn.forRows(X.Rows, func() func(lo, hi int) error {
		var s KDScratch
		z, dist, idx := make([]float64, X.Cols), make([]float64, k), make([]int, k)
		return func(lo, hi int) error {
			for i := lo; i < hi; i++ {
				if err := nn.nearest(X, i, z, dist, idx, &s); err != nil {
					return err
				}
				sumLRD := 0.0
				for _, r := range idx {
					sumLRD += m.lrd[r]
				}
				out[i] = sumLRD / float64(k) * (lofMeanReach(dist, idx, m.kdist) + lofDensityEps)
			}
			return nil
		}
	})
}

const (
	lofFormatVersion = 1
	lofFormatTag     = 'L' // tells a lof checkpoint from another detector's
)

// MarshalBinary implements Persistent: version, tag, k, the shared neighbour model (see
// neighborModel.appendBinary), then each training row's k-distance and lrd as float64s,
// so that a restore does not repeat Fit's queries.
func (m *LOF) MarshalBinary() ([]byte, error) {
	b := []byte{lofFormatVersion, lofFormatTag}
	b = binary.LittleEndian.AppendUint32(b, uint32(m.k))
	b = m.nn.appendBinary(b)
	b = appendFloats(b, m.kdist)
	return appendFloats(b, m.lrd), nil
}

// UnmarshalBinary implements Persistent; it replaces the configuration and the model
// and keeps the worker count.
func (m *LOF) UnmarshalBinary(data []byte) error {
	d := nbDecoder{name: "lof", b: data}
	d.header(lofFormatVersion, lofFormatTag)
	k := int(d.u32())
	if d.err != nil {
		return d.err
	}
	if k < 1 || k > knnMaxNeighbors {
		return fmt.Errorf("lof: checkpoint: n_neighbors = %d must be in [1, %d]", k, knnMaxNeighbors)
	}
	nn := neighborModel{name: "lof", workers: m.nn.workers}
	if err := nn.decode(&d); err != nil {
		return err
	}
	var kdist, lrd []float64
	if nn.tree != nil {
		if nn.tree.Len() < 2 {
			return fmt.Errorf("lof: checkpoint: %d training rows, at least 2 needed", nn.tree.Len())
		}
		kdist, lrd = d.floats(nn.tree.Len()), d.floats(nn.tree.Len())
	}
	if err := d.end(); err != nil {
		return err
	}
	for i := range kdist {
		if !(kdist[i] >= 0) || !finite(kdist[i]) || !(lrd[i] > 0) || !finite(lrd[i]) {
			return fmt.Errorf("lof: checkpoint: training row %d has k-distance %v and lrd %v", i, kdist[i], lrd[i])
		}
	}
	m.k, m.nn, m.kdist, m.lrd = k, nn, kdist, lrd
	return nil
}
