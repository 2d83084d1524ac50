package eval

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

var reportResults = []Result{
	{Dataset: "cardio", Detector: "iforest", ROCAUC: 0.9312, PrecisionAtN: 0.5, FitSeconds: 0.12, ScoreSeconds: 0.034, Rows: 1831, Cols: 21, Seeds: 10},
	{Dataset: "cardio", Detector: "ecod", ROCAUC: 0.9, PrecisionAtN: 0.55, FitSeconds: 0.001, ScoreSeconds: 0.002, Rows: 1831, Cols: 21, Seeds: 10},
	{Dataset: "cardio", Detector: "eif", ROCAUC: math.NaN(), PrecisionAtN: math.NaN(), Rows: 1831, Cols: 21, Seeds: 10, Error: "seed 3: boom"},
	{Dataset: "shuttle", Detector: "hbos", ROCAUC: 0.98599, PrecisionAtN: 0.9554, FitSeconds: 0.003, ScoreSeconds: 0.003, Rows: 49097, Cols: 9, Seeds: 10},
	{Dataset: "thyroid", Detector: "iforest", ROCAUC: 0.98, PrecisionAtN: 0.6, FitSeconds: 0.1, ScoreSeconds: 0.02, Rows: 3772, Cols: 6, Seeds: 10},
}

func TestMarkdownTable(t *testing.T) {
	const want = `| dataset | detector | ROC-AUC | PyOD ROC-AUC | delta | precision@n | PyOD precision@n | delta | fit s | score s |
|---|---|--:|--:|--:|--:|--:|--:|--:|--:|
| cardio | iforest | 0.931 | 0.921 | +0.010 | 0.500 | 0.504 | -0.004 | 0.120 | 0.034 |
| cardio | ecod | 0.900 | 0.936† | -0.036 | 0.550 | 0.546† | +0.004 | 0.001 | 0.002 |
| cardio | eif | error | - | - | - | - | - | - | - |
| shuttle | hbos | 0.986 | 0.986 | 0.000 | 0.955 | 0.955 | 0.000 | 0.003 | 0.003 |
| thyroid | iforest | 0.980 | - | - | 0.600 | - | - | 0.100 | 0.020 |

† PyOD's published number for ECOD, COPOD and LODA is from a single split (its 2024 notebook run), not a mean of 10.
`
	if got := MarkdownTable(reportResults); got != want {
		t.Errorf("markdown:\n%s\nwant:\n%s", got, want)
	}
	if got := MarkdownTable(reportResults[:1]); strings.Contains(got, "†") {
		t.Errorf("footnote without a single-split reference:\n%s", got)
	}
}

func TestWriteTable(t *testing.T) {
	const want = `ROC-AUC (mean of 10 random 60/40 splits)
DATASET  ROWS   COLS  iforest  ecod   eif    hbos
cardio   1831   21    0.931    0.900  error  -
shuttle  49097  9     -        -      -      0.986
thyroid  3772   6     0.980    -      -      -

PRECISION@N (n = outliers in the test part)
DATASET  ROWS   COLS  iforest  ecod   eif    hbos
cardio   1831   21    0.500    0.550  error  -
shuttle  49097  9     -        -      -      0.955
thyroid  3772   6     0.600    -      -      -

SECONDS PER SEED (fit + score)
DATASET  ROWS   COLS  iforest  ecod   eif    hbos
cardio   1831   21    0.154    0.003  error  -
shuttle  49097  9     -        -      -      0.006
thyroid  3772   6     0.120    -      -      -

ERRORS
cardio  eif  seed 3: boom
`
	var b bytes.Buffer
	if err := WriteTable(&b, reportResults); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestPyODReference(t *testing.T) {
	r, ok := PublishedPyOD("shuttle", "iforest")
	if !ok || r.ROCAUC != .997 || r.PrecisionAtN != .955 || r.Splits != 10 {
		t.Errorf("shuttle/iforest: %+v %v", r, ok)
	}
	r, ok = PublishedPyOD("pendigits", "loda")
	if !ok || r.ROCAUC != .947 || !math.IsNaN(r.PrecisionAtN) || r.Splits != 1 {
		t.Errorf("pendigits/loda: %+v %v", r, ok)
	}
	if _, ok := PublishedPyOD("thyroid", "iforest"); ok {
		t.Error("thyroid has no published PyOD benchmark number")
	}
	if len(PyODReference) != 4*9 {
		t.Errorf("%d references, want 36", len(PyODReference))
	}
}
