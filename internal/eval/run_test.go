package eval

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

// distanceDetector scores a row by its squared distance from the training mean: enough
// to separate far outliers, and it needs no registry entry.
type distanceDetector struct{ mean []float64 }

func (d *distanceDetector) Fit(X detectors.Matrix) error {
	d.mean = make([]float64, X.Cols)
	for i := range X.Rows {
		for j, v := range X.Row(i) {
			d.mean[j] += v / float64(X.Rows)
		}
	}
	return nil
}

func (d *distanceDetector) Score(X detectors.Matrix, out []float64) error {
	for i := range X.Rows {
		var s float64
		for j, v := range X.Row(i) {
			s += (v - d.mean[j]) * (v - d.mean[j])
		}
		out[i] = s
	}
	return nil
}

// nanDetector is broken: it scores everything NaN.
type nanDetector struct{}

func (nanDetector) Fit(detectors.Matrix) error { return nil }
func (nanDetector) Score(_ detectors.Matrix, out []float64) error {
	for i := range out {
		out[i] = math.NaN()
	}
	return nil
}

func candidate(name string, d func() detectors.Batch) Candidate {
	return Candidate{Name: name, New: func(detectors.Params, uint64) (detectors.Batch, error) { return d(), nil }}
}

// syntheticDataset has Gaussian inliers and a few outliers far out in random directions.
func syntheticDataset(name string, inliers, outliers, cols int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	ds := &Dataset{Name: name, X: detectors.Matrix{Cols: cols}}
	for i := range inliers + outliers {
		far := i >= inliers
		dir := make([]float64, cols)
		var norm float64
		for j := range dir {
			dir[j] = rng.NormFloat64()
			norm += dir[j] * dir[j]
		}
		for j := range dir {
			v := dir[j]
			if far {
				v = dir[j] / math.Sqrt(norm) * (8 + 4*rng.Float64())
			}
			ds.X.Data = append(ds.X.Data, v)
		}
		ds.X.Rows++
		label := 0
		if far {
			label = 1
		}
		ds.Labels = append(ds.Labels, label)
	}
	return ds
}

func writeCSV(t *testing.T, path string, ds *Dataset) {
	t.Helper()
	var b bytes.Buffer
	for j := range ds.X.Cols {
		fmt.Fprintf(&b, "x%d,", j)
	}
	b.WriteString("label\n")
	for i := range ds.X.Rows {
		for _, v := range ds.X.Row(i) {
			fmt.Fprintf(&b, "%g,", v)
		}
		fmt.Fprintf(&b, "%d\n", ds.Labels[i])
	}
	data := b.Bytes()
	if strings.HasSuffix(path, ".gz") {
		var z bytes.Buffer
		gz := gzip.NewWriter(&z)
		gz.Write(data)
		gz.Close()
		data = z.Bytes()
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRunODDS(t *testing.T) {
	dir := t.TempDir()
	writeCSV(t, filepath.Join(dir, "b.csv.gz"), syntheticDataset("b", 300, 10, 3, 2))
	writeCSV(t, filepath.Join(dir, "a.csv"), syntheticDataset("a", 300, 10, 4, 1))
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("not a dataset"), 0o644)
	files, err := DatasetFiles(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "a" || files[1].Name != "b" {
		t.Fatalf("files %+v: want a then b", files)
	}
	var progress []Progress
	cfg := ODDSConfig{
		Detectors: []Candidate{
			candidate("distance", func() detectors.Batch { return &distanceDetector{} }),
			candidate("broken", func() detectors.Batch { return nanDetector{} }),
		},
		Seeds:    3,
		Progress: func(p Progress) { progress = append(progress, p) },
	}
	results, err := RunODDSFiles(context.Background(), cfg, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 4 || len(progress) != 4 || progress[3].Done != 4 || progress[3].Total != 4 {
		t.Fatalf("%d results, %d progress reports: want 4 of each", len(results), len(progress))
	}
	for i, want := range []struct{ ds, det string }{{"a", "distance"}, {"a", "broken"}, {"b", "distance"}, {"b", "broken"}} {
		r := results[i]
		if r.Dataset != want.ds || r.Detector != want.det || r.Seeds != 3 || r.Rows != 310 {
			t.Fatalf("result %d: %+v, want %s/%s, 3 seeds, 310 rows", i, r, want.ds, want.det)
		}
		if want.det == "distance" {
			if r.Error != "" || r.ROCAUC < 0.99 || r.PrecisionAtN < 0.9 || r.FitSeconds < 0 {
				t.Errorf("%s/distance: %+v: want a clean separation", r.Dataset, r)
			}
		} else if !strings.Contains(r.Error, "NaN") || !math.IsNaN(r.ROCAUC) {
			t.Errorf("%s/broken: %+v: want an error naming the NaN", r.Dataset, r)
		}
	}
	if got := []int{results[0].Cols, results[2].Cols}; !slices.Equal(got, []int{4, 3}) {
		t.Errorf("cols %v, want [4 3]", got)
	}
	if n := len(Failed(results)); n != 2 {
		t.Errorf("Failed: %d, want 2", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RunODDSFiles(ctx, cfg, files); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: %v", err)
	}
	oneClass := syntheticDataset("inliers", 50, 0, 2, 1)
	if _, err := RunODDS(context.Background(), cfg, []*Dataset{oneClass}); err == nil || !strings.Contains(err.Error(), "inliers") {
		t.Errorf("one class only: %v", err)
	}
}

// TestLoadODDSErrors: every bad file is reported with its path, line and column.
func TestLoadODDSErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"short.csv", "x0,x1,label\n1,2,0\n3,4\n", []string{"line 3", "column 3", `"label" is missing`}},
		{"long.csv", "x0,x1,label\n1,2,0\n3,4,0\n5,6,1,7\n", []string{"line 4", "column 4", "extra field"}},
		{"word.csv", "x0,x1,label\n1,2,0\n3,abc,0\n", []string{"line 3", "column 2", `"x1"`, `"abc"`}},
		{"nan.csv", "x0,x1,label\nNaN,2,0\n", []string{"line 2", "column 1", "finite"}},
		{"nolabel.csv", "x0,x1,x2\n1,2,3\n", []string{"line 1", "column 3", `"label"`, `"x2"`}},
		{"onlylabel.csv", "label\n1\n", []string{"line 1", `"label"`}},
		{"badlabel.csv", "x0,label\n1,0\n2,2\n", []string{"line 3", "column 2", "0 or 1"}},
		{"quote.csv", "x0,label\n1,0\n2\"x,1\n", []string{"line 3", "column 2"}},
		{"empty.csv", "", []string{"empty"}},
		{"header.csv", "x0,label\n", []string{"no rows"}},
	} {
		path := filepath.Join(t.TempDir(), tc.name)
		if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadODDS(path)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range append(tc.want, path) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
	}
	// Quoted fields spanning lines must not shift the line numbers reported after them.
	path := filepath.Join(t.TempDir(), "multiline.csv")
	os.WriteFile(path, []byte("x0,label\n\"1\n\",0\n2,x\n"), 0o644)
	if _, err := LoadODDS(path); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("multi-line field: %v, want line 4", err)
	}
}

func TestDatasetFiles(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"zeta.csv", "alpha.csv.gz", "notes.txt", "mid.csv"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "sub.csv"), 0o755)
	files, err := DatasetFiles(dir, []string{"zeta", "alpha", "zeta"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "alpha" || files[0].Path != filepath.Join(dir, "alpha.csv.gz") || files[1].Name != "zeta" {
		t.Fatalf("subset: %+v", files)
	}
	if _, err := DatasetFiles(dir, []string{"cardio"}); err == nil || !strings.Contains(err.Error(), "alpha, mid, zeta") {
		t.Errorf("unknown dataset: %v, want the ones present listed", err)
	}
	os.WriteFile(filepath.Join(dir, "mid.csv.gz"), nil, 0o644)
	if _, err := DatasetFiles(dir, nil); err == nil || !strings.Contains(err.Error(), "mid") {
		t.Errorf("mid.csv and mid.csv.gz: %v", err)
	}
	if _, err := DatasetFiles(t.TempDir(), nil); err == nil {
		t.Error("empty directory accepted")
	}
}

func TestParseOverrides(t *testing.T) {
	got, err := ParseOverrides([]string{"iforest.trees=200", "iforest.max_samples = 128", "knn.k=3"})
	if err != nil {
		t.Fatal(err)
	}
	if got["iforest"]["trees"] != 200 || got["iforest"]["max_samples"] != 128 || got["knn"]["k"] != 3 {
		t.Fatalf("%v", got)
	}
	for _, bad := range []string{"trees=200", "iforest.trees", "iforest.=1", ".k=1", "knn.k=three", "knn.k=1"} {
		specs := []string{bad}
		if bad == "knn.k=1" {
			specs = []string{bad, bad} // given twice
		}
		if _, err := ParseOverrides(specs); err == nil {
			t.Errorf("%q accepted", specs)
		}
	}
}

// TestBatchCandidates runs against whatever batch detectors are registered.
func TestBatchCandidates(t *testing.T) {
	known := BatchDetectorNames()
	if _, err := BatchCandidates([]string{"nosuch"}, nil); err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), listOrNone(known)) {
		t.Errorf("unknown detector: %v, want it named and the known ones listed", err)
	}
	if _, err := BatchCandidates([]string{"zscore"}, nil); err == nil || !strings.Contains(err.Error(), "unknown batch detector") {
		t.Errorf("a streaming detector: %v", err)
	}
	if len(known) == 0 {
		if _, err := BatchCandidates(nil, nil); err == nil {
			t.Error("no batch detectors registered, yet candidates were found")
		}
		t.Skip("no batch detectors registered yet")
	}
	all, err := BatchCandidates(nil, nil)
	if err != nil || len(all) != len(known) {
		t.Fatalf("defaults: %d candidates, %v; want %d", len(all), err, len(known))
	}
	name := known[0]
	if _, err := BatchCandidates([]string{name, name}, nil); err == nil {
		t.Error("a detector listed twice was accepted")
	}
	if _, err := BatchCandidates([]string{name}, map[string]detectors.Params{name: {"no_such_param": 1}}); err == nil || !strings.Contains(err.Error(), "no_such_param") {
		t.Errorf("unknown parameter: %v", err)
	}
	if _, err := BatchCandidates([]string{name}, map[string]detectors.Params{"hst": {"trees": 1}}); err == nil || !strings.Contains(err.Error(), "hst") {
		t.Errorf("override of a detector not evaluated: %v", err)
	}
	info, _ := detectors.Lookup(name)
	if len(info.Params) > 0 {
		p := info.Params[0]
		c, err := BatchCandidates([]string{name}, map[string]detectors.Params{name: {p.Name: p.Max}})
		if err != nil || c[0].Params[p.Name] != p.Max {
			t.Errorf("%s.%s=%v: %v %v", name, p.Name, p.Max, err, c)
		}
	}
}

// TestResultJSON: the field names are a contract with scripts; NaN becomes null.
func TestResultJSON(t *testing.T) {
	var b bytes.Buffer
	err := WriteJSON(&b, []Result{
		{Dataset: "cardio", Detector: "iforest", ROCAUC: 0.93, PrecisionAtN: 0.5, FitSeconds: 0.1, ScoreSeconds: 0.02, Rows: 1831, Cols: 21, Seeds: 10},
		{Dataset: "cardio", Detector: "broken", ROCAUC: math.NaN(), PrecisionAtN: math.NaN(), Rows: 1831, Cols: 21, Seeds: 10, Error: "seed 0: boom"},
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"results":[` +
		`{"dataset":"cardio","detector":"iforest","roc_auc":0.93,"precision_at_n":0.5,"fit_seconds":0.1,"score_seconds":0.02,"rows":1831,"cols":21,"seeds":10},` +
		`{"dataset":"cardio","detector":"broken","roc_auc":null,"precision_at_n":null,"fit_seconds":0,"score_seconds":0,"rows":1831,"cols":21,"seeds":10,"error":"seed 0: boom"}]}` + "\n"
	if b.String() != want {
		t.Errorf("JSON:\n got %s\nwant %s", b.String(), want)
	}
	b.Reset()
	WriteJSON(&b, nil)
	if b.String() != `{"results":[]}`+"\n" {
		t.Errorf("no results: %s", b.String())
	}
}

func TestPrecisionAtNTies(t *testing.T) {
	// Two outliers; the second place is a three-way tie holding one outlier, so it is
	// worth 1/3 whichever order the tied rows come in.
	for _, labels := range [][]int{{1, 1, 0, 0, 0}, {1, 0, 0, 1, 0}, {1, 0, 1, 0, 0}} {
		if got := PrecisionAtN([]float64{9, 5, 5, 5, 1}, labels); math.Abs(got-(1+1.0/3)/2) > 1e-12 {
			t.Errorf("labels %v: %v, want %v", labels, got, (1+1.0/3)/2)
		}
	}
	if got := PrecisionAtN([]float64{1, 1, 1, 1}, []int{0, 1, 0, 0}); got != 0.25 {
		t.Errorf("all tied: %v, want the base rate 0.25", got)
	}
}

func TestStandardizeNearConstantColumn(t *testing.T) {
	train := detectors.NewMatrix(1000, 2)
	test := detectors.NewMatrix(1, 2)
	for i := range train.Rows {
		train.Data[2*i], train.Data[2*i+1] = 0.1, float64(i%2)
	}
	test.Data[0], test.Data[1] = 0.1, 1
	Standardize(train, test)
	for i := range train.Rows {
		if v := train.Data[2*i]; math.Abs(v) > 1e-12 {
			t.Fatalf("row %d of a constant column: %v, want ~0 (rounding noise must not be scaled up)", i, v)
		}
	}
	if test.Data[1] != 1 {
		t.Errorf("0/1 column: test value %v, want 1", test.Data[1])
	}
}
