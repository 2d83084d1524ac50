package detectors

import "fmt"

// Matrix is a dense row-major matrix of observations: row i is Data[i*Cols:(i+1)*Cols].
// Batch detectors take it instead of [][]float64 so that a dataset is one allocation and
// rows are contiguous in memory.
type Matrix struct {
	Rows, Cols int
	Data       []float64
}

// NewMatrix returns a zeroed rows×cols matrix.
func NewMatrix(rows, cols int) Matrix {
	return Matrix{Rows: rows, Cols: cols, Data: make([]float64, rows*cols)}
}

// Row returns row i, sharing memory with the matrix.
func (m Matrix) Row(i int) []float64 { return m.Data[i*m.Cols : (i+1)*m.Cols : (i+1)*m.Cols] }

// Check reports a matrix whose shape and data disagree, or that is empty.
func (m Matrix) Check() error {
	if m.Rows <= 0 || m.Cols <= 0 {
		return fmt.Errorf("matrix is empty (%d×%d)", m.Rows, m.Cols)
	}
	if len(m.Data) != m.Rows*m.Cols {
		return fmt.Errorf("matrix %d×%d holds %d values", m.Rows, m.Cols, len(m.Data))
	}
	return nil
}

// Batch is a detector fitted on a matrix that then scores rows. Higher scores are more
// anomalous; the scale is the detector's own.
type Batch interface {
	// Fit learns from X; a later Fit starts over.
	Fit(X Matrix) error
	// Score writes the score of each row of X to out (len(out) == X.Rows). X must have
	// the columns the model was fitted on.
	Score(X Matrix, out []float64) error
}

// Contributor is a detector that can attribute a row's score to its features.
type Contributor interface {
	// Contributions writes each feature's share of x's score to contrib (summing to 1,
	// or all zeros when nothing stands out).
	Contributions(x []float64, contrib []float64) error
}

// Parallel is a batch detector whose scoring can use several goroutines.
type Parallel interface {
	// SetWorkers sets how many goroutines Score may use (≤ 1: the caller's only).
	SetWorkers(n int)
}

// Persistent is a model or streaming state that can be checkpointed and restored: the
// encoding starts with a format version so that old checkpoints are recognised, and a
// restored model scores exactly as the original would have.
type Persistent interface {
	MarshalBinary() ([]byte, error)
	UnmarshalBinary(data []byte) error
}
