// Package eval measures detection quality on labelled data: the ODDS tabular datasets
// under PyOD's benchmark protocol, and the Numenta Anomaly Benchmark for streams.
package eval

import (
	"bufio"
	"cmp"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
)

// Dataset is a labelled matrix: Labels[i] is 1 for an outlier row.
type Dataset struct {
	Name   string
	X      detectors.Matrix
	Labels []int
}

// LoadODDS reads an ODDS CSV (plain or .gz): a header, then rows of numbers whose last
// column is the label (1 = outlier). Errors name the file, line and column.
func LoadODDS(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	name := strings.TrimSuffix(strings.TrimSuffix(baseName(path), ".gz"), ".csv")
	ds, err := readODDS(r, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ds, nil
}

// readODDS parses the CSV body of an ODDS file; errors name the line and column but not
// the file, which the caller adds.
func readODDS(r io.Reader, name string) (*Dataset, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	// Ragged rows are checked below rather than by encoding/csv, whose error names
	// neither the column nor what was expected.
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file: want a header ending in \"label\"")
	}
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	header = slices.Clone(header) // ReuseRecord would overwrite it
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	cols := len(header) - 1
	if last := strings.TrimSpace(header[cols]); cols < 1 || last != "label" {
		return nil, fmt.Errorf("line 1, column %d: the last column must be \"label\" after at least one feature, got %q", cols+1, last)
	}
	ds := &Dataset{Name: name, X: detectors.Matrix{Cols: cols}}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err // a csv.ParseError names the line and column
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			col, what := len(rec)+1, fmt.Sprintf("column %q is missing", header[min(len(rec), cols)])
			if len(rec) > len(header) {
				col, what = len(header)+1, "unexpected extra field"
			}
			return nil, fmt.Errorf("line %d, column %d: %s (%d fields, the header has %d)", line, col, what, len(rec), len(header))
		}
		for j := 0; j < cols; j++ {
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[j]), 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("line %d, column %d (%q): %q is not a finite number", line, j+1, header[j], rec[j])
			}
			ds.X.Data = append(ds.X.Data, v)
		}
		label, err := strconv.ParseFloat(strings.TrimSpace(rec[cols]), 64)
		if err != nil || (label != 0 && label != 1) {
			return nil, fmt.Errorf("line %d, column %d (\"label\"): %q is not 0 or 1", line, cols+1, rec[cols])
		}
		ds.Labels = append(ds.Labels, int(label))
		ds.X.Rows++
	}
	if ds.X.Rows == 0 {
		return nil, errors.New("no rows after the header")
	}
	return ds, nil
}

func baseName(path string) string {
	if i := strings.LastIndexAny(path, `/\`); i >= 0 {
		return path[i+1:]
	}
	return path
}

// Split returns a train/test split of n rows: a random permutation for the seed, the
// first trainFrac of it for training.
func Split(n int, trainFrac float64, seed uint64) (train, test []int) {
	perm := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Perm(n)
	cut := int(math.Round(trainFrac * float64(n)))
	train, test = perm[:cut], perm[cut:]
	slices.Sort(train)
	slices.Sort(test)
	return train, test
}

// Rows copies the given rows of X into a new matrix.
func Rows(X detectors.Matrix, idx []int) detectors.Matrix {
	out := detectors.NewMatrix(len(idx), X.Cols)
	for i, r := range idx {
		copy(out.Row(i), X.Row(r))
	}
	return out
}

// Standardize scales both matrices in place with the mean and standard deviation of the
// train matrix (a constant column is only centred), as PyOD's benchmark does.
func Standardize(train, test detectors.Matrix) {
	for j := 0; j < train.Cols; j++ {
		var sum, sq float64
		for i := 0; i < train.Rows; i++ {
			sum += train.Data[i*train.Cols+j]
		}
		mean := sum / float64(train.Rows)
		for i := 0; i < train.Rows; i++ {
			d := train.Data[i*train.Cols+j] - mean
			sq += d * d
		}
		n := float64(train.Rows)
		variance := sq / n
		// A constant column rarely has a variance of exactly 0: the mean carries a rounding
		// error, and dividing by its square root would blow that noise up to unit scale.
		// This bound is scikit-learn's (StandardScaler), which PyOD's benchmark uses.
		sd := math.Sqrt(variance)
		if eps := 0x1p-52; variance <= n*eps*variance+(n*mean*eps)*(n*mean*eps) {
			sd = 1
		}
		for _, m := range []detectors.Matrix{train, test} {
			for i := 0; i < m.Rows; i++ {
				m.Data[i*m.Cols+j] = (m.Data[i*m.Cols+j] - mean) / sd
			}
		}
	}
}

// PrecisionAtN is the share of outliers among the n highest scores, with n the number
// of outliers (PyOD's precision @ rank n). Scores tied across the cut share the remaining
// places evenly (the expectation over random tie-breaking), so the result does not depend
// on row order: some ODDS files (cardio) keep their outliers together at the end, and
// breaking ties by position would bias detectors that tie often, such as HBOS.
func PrecisionAtN(scores []float64, labels []int) float64 {
	n := 0
	for _, l := range labels {
		n += l
	}
	if n == 0 {
		return math.NaN()
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	cut := scores[idx[n-1]]
	var above, hitsAbove, tied, hitsTied int
	for _, i := range idx {
		switch {
		case scores[i] > cut:
			above++
			hitsAbove += labels[i]
		case scores[i] == cut:
			tied++
			hitsTied += labels[i]
		}
	}
	hits := float64(hitsAbove) + float64(n-above)*float64(hitsTied)/float64(tied)
	return hits / float64(n)
}

// Trial is one split's outcome.
type Trial struct {
	ROCAUC, PrecisionAtN float64
	FitSeconds           float64
	ScoreSeconds         float64
}

// NewBatchFunc builds a fresh detector for a trial's seed.
type NewBatchFunc func(seed uint64) (detectors.Batch, error)

// PyODTrial runs one split of PyOD's protocol: 60/40 split by seed, standardise on the
// train part, fit on train, score test.
func PyODTrial(ds *Dataset, newDet NewBatchFunc, seed uint64, clock func() float64) (Trial, error) {
	trainIdx, testIdx := Split(ds.X.Rows, 0.6, seed)
	train, test := Rows(ds.X, trainIdx), Rows(ds.X, testIdx)
	Standardize(train, test)
	labels := make([]int, len(testIdx))
	for i, r := range testIdx {
		labels[i] = ds.Labels[r]
	}
	det, err := newDet(seed)
	if err != nil {
		return Trial{}, err
	}
	t0 := clock()
	if err := det.Fit(train); err != nil {
		return Trial{}, fmt.Errorf("%s: fit: %w", ds.Name, err)
	}
	t1 := clock()
	scores := make([]float64, test.Rows)
	if err := det.Score(test, scores); err != nil {
		return Trial{}, fmt.Errorf("%s: score: %w", ds.Name, err)
	}
	t2 := clock()
	// A NaN has no rank, so it would make both metrics meaningless without any sign; an
	// infinity still ranks and is allowed.
	for i, v := range scores {
		if math.IsNaN(v) {
			return Trial{}, fmt.Errorf("%s: score: data row %d scored NaN", ds.Name, testIdx[i]+1)
		}
	}
	return Trial{ROCAUC: detectors.ROCAUC(scores, labels), PrecisionAtN: PrecisionAtN(scores, labels), FitSeconds: t1 - t0, ScoreSeconds: t2 - t1}, nil
}

// PyOD runs seeds trials (seeds 0..seeds-1) and returns their mean.
func PyOD(ds *Dataset, newDet NewBatchFunc, seeds int) (Trial, error) {
	start := time.Now()
	clock := func() float64 { return time.Since(start).Seconds() }
	var mean Trial
	for s := 0; s < seeds; s++ {
		t, err := PyODTrial(ds, newDet, uint64(s), clock)
		if err != nil {
			return Trial{}, err
		}
		mean.ROCAUC += t.ROCAUC / float64(seeds)
		mean.PrecisionAtN += t.PrecisionAtN / float64(seeds)
		mean.FitSeconds += t.FitSeconds / float64(seeds)
		mean.ScoreSeconds += t.ScoreSeconds / float64(seeds)
	}
	return mean, nil
}
