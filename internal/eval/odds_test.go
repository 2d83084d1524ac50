package eval

import (
	"path/filepath"
	"testing"
)

func TestPrecisionAtN(t *testing.T) {
	if got := PrecisionAtN([]float64{0.9, 0.1, 0.8, 0.7}, []int{1, 0, 0, 1}); got != 0.5 {
		t.Errorf("precision@n = %v, want 0.5", got)
	}
}

func TestLoadODDSAndSplit(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "data", "odds", "thyroid.csv")
	ds, err := LoadODDS(path)
	if err != nil {
		t.Skipf("dataset not available: %v", err)
	}
	if ds.X.Rows != 3772 || ds.X.Cols != 6 || ds.Name != "thyroid" {
		t.Fatalf("thyroid: %d×%d %q", ds.X.Rows, ds.X.Cols, ds.Name)
	}
	train, test := Split(ds.X.Rows, 0.6, 1)
	if len(train) != 2263 || len(train)+len(test) != ds.X.Rows {
		t.Fatalf("split %d/%d", len(train), len(test))
	}
	a, _ := Split(100, 0.6, 7)
	b, _ := Split(100, 0.6, 7)
	c, _ := Split(100, 0.6, 8)
	if !equal(a, b) || equal(a, c) {
		t.Fatal("splits must depend on the seed only")
	}
	if _, err := LoadODDS(filepath.Join("..", "..", "..", "shared", "data", "odds", "cover.csv.gz")); err != nil {
		t.Fatalf("gzip: %v", err)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
