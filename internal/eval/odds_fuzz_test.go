package eval

import (
	"math"
	"strings"
	"testing"
)

// FuzzReadODDS: any input either parses into a consistent dataset or fails with an
// error; it never panics.
func FuzzReadODDS(f *testing.F) {
	for _, seed := range []string{
		"x0,x1,label\n1,2,0\n3,4,1\n",
		"x0,label\n1,0\n2\n",
		"x0,label\n\"1\n\",0\n",
		"\ufeffx0,label\n1e308,1\n-0,0\n",
		"label\n1\n",
		"x0,x1,label\n1,2,0,3\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ds, err := readODDS(strings.NewReader(body), "fuzz")
		if err != nil {
			return
		}
		if ds.X.Check() != nil || len(ds.Labels) != ds.X.Rows {
			t.Fatalf("inconsistent dataset: %d×%d with %d values and %d labels", ds.X.Rows, ds.X.Cols, len(ds.X.Data), len(ds.Labels))
		}
		for _, v := range ds.X.Data {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("non-finite value %v accepted", v)
			}
		}
		for _, l := range ds.Labels {
			if l != 0 && l != 1 {
				t.Fatalf("label %d accepted", l)
			}
		}
	})
}
