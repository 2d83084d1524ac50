package perf

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Percentile is the q-quantile (0 ≤ q ≤ 1) of sorted values by linear interpolation
// between closest ranks (numpy's default), so that p50 of an even count is the mean of
// the middle two; NaN for no values.
func Percentile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	pos := q * float64(n-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, n-1)
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[hi]-sorted[lo])
}

// Dist summarises a latency sample, in milliseconds.
type Dist struct {
	N                        int
	Mean, P50, P90, P99, Max float64
}

// Summarize sorts values (in place) and summarises them.
func Summarize(values []float64) Dist {
	if len(values) == 0 {
		return Dist{}
	}
	slices.Sort(values)
	sum := 0.0
	for _, v := range values {
		sum += v
	}
	return Dist{
		N: len(values), Mean: sum / float64(len(values)),
		P50: Percentile(values, 0.50), P90: Percentile(values, 0.90), P99: Percentile(values, 0.99),
		Max: values[len(values)-1],
	}
}

// LogBins counts values into n logarithmically spaced bins between the smallest and
// largest positive value: latencies span orders of magnitude, and equal-width bins
// would put nearly everything in the first. It returns the n+1 edges and the counts;
// values ≤ 0 count in the first bin.
func LogBins(values []float64, n int) (edges []float64, counts []int) {
	if len(values) == 0 || n < 1 {
		return nil, nil
	}
	lo, hi := math.Inf(1), 0.0
	for _, v := range values {
		if v > 0 {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 1) { // nothing positive
		lo, hi = 1e-3, 1
	}
	if hi <= lo {
		hi = lo * 1.01
	}
	edges = make([]float64, n+1)
	step := (math.Log(hi) - math.Log(lo)) / float64(n)
	for i := range edges {
		edges[i] = math.Exp(math.Log(lo) + step*float64(i))
	}
	edges[n] = hi // exact, despite rounding
	counts = make([]int, n)
	for _, v := range values {
		i := 0
		if v > lo {
			i = min(int((math.Log(v)-math.Log(lo))/step), n-1)
		}
		counts[i]++
	}
	return edges, counts
}

// shortFunc drops the module path of a function name (gonomaly's and the usual hosts')
// and a generic's type arguments, so tables stay readable.
func shortFunc(name string) string {
	// A generic function's shape arguments can run to hundreds of characters.
	if i := strings.Index(name, "[go.shape."); i >= 0 {
		if j := strings.LastIndex(name, "]"); j > i {
			name = name[:i] + "[…]" + name[j+1:]
		}
	}
	for _, prefix := range []string{"github.com/gonomaly/gonomaly/", "github.com/twmb/franz-go/pkg/", "github.com/", "golang.org/x/", "gonum.org/v1/"} {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			return rest
		}
	}
	return name
}

func joinOr(parts []string, sep, none string) string {
	if len(parts) == 0 {
		return none
	}
	return strings.Join(parts, sep)
}

// plural is "1 worker", "2 workers".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// usText formats microseconds.
func usText(us float64) string {
	switch {
	case us != us:
		return "-"
	case us >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us >= 10:
		return fmt.Sprintf("%.0f µs", us)
	}
	return fmt.Sprintf("%.1f µs", us)
}
