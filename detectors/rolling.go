package detectors

import "math"

// MADScale turns a median absolute deviation into a consistent estimate of the standard
// deviation of normal data, so robust z-scores read like ordinary ones.
const MADScale = 1.4826

// madFloorRel keeps robust scales positive when more than half a window is one value (a
// flag, a stuck sensor): the MAD is then 0 and would turn any change into ±Inf. The floor is
// relative to the level, so it is negligible for real spreads at any unit.
const madFloorRel = 1e-9

// RollingRobust keeps the median and the median absolute deviation (MAD) of the last W
// values of one scalar stream. It holds the window twice, in arrival order (a ring, to know
// which value leaves) and sorted (to read order statistics directly), in one 2·W float64
// buffer. Add costs a binary search and one memmove of at most W values; Median is O(1);
// MAD is O(log W) (see MAD). Nothing allocates after construction, which matters because
// the preprocess stage and the zscore detector keep one per series and feature.
//
// The zero value is not usable; build one with NewRollingRobust. Not safe for concurrent
// use: like the detectors, one belongs to one partition goroutine.
type RollingRobust struct {
	ring   []float64 // len W; ring[head] is the next slot to write, the oldest value once full
	sorted []float64 // the held values ascending; len is the count, cap W
	head   int
}

// NewRollingRobust returns an empty window of the given size. It panics if window < 1:
// sizes come from validated parameters, so a bad one is a programming error.
func NewRollingRobust(window int) *RollingRobust {
	r := new(RollingRobust)
	r.init(make([]float64, 2*window), window)
	return r
}

// init lets callers that keep many windows (one per series and feature) carve them out of
// one allocation instead of two per window.
func (r *RollingRobust) init(buf []float64, window int) {
	if window < 1 {
		panic("detectors: RollingRobust window must be at least 1")
	}
	r.ring = buf[:window:window]
	r.sorted = buf[window : window : 2*window]
	r.head = 0
}

// Len is the number of values held, at most the window size.
func (r *RollingRobust) Len() int { return len(r.sorted) }

// Window is the window size.
func (r *RollingRobust) Window() int { return len(r.ring) }

// Reset empties the window, keeping its memory.
func (r *RollingRobust) Reset() {
	r.sorted = r.sorted[:0]
	r.head = 0
}

// Add puts x into the window, evicting the oldest value once the window is full. NaN and
// ±Inf are ignored: one of them would poison every order statistic until it left.
func (r *RollingRobust) Add(x float64) {
	if x-x != 0 { // NaN or ±Inf
		return
	}
	w, n := len(r.ring), len(r.sorted)
	old := r.ring[r.head]
	r.ring[r.head] = x
	if r.head++; r.head == w {
		r.head = 0
	}
	if n < w {
		i := lowerBound(r.sorted, x)
		r.sorted = r.sorted[:n+1]
		copy(r.sorted[i+1:], r.sorted[i:n])
		r.sorted[i] = x
		return
	}
	// Full: replace old by x with a single shift of the values between their positions,
	// rather than a delete and an insert that would each move up to W values.
	s := r.sorted
	i := lowerBound(s, old) // old is present: it was added and is finite
	switch {
	case x > old:
		p := i + 1 + lowerBound(s[i+1:], x) // s[i+1:p] < x
		copy(s[i:p-1], s[i+1:p])
		s[p-1] = x
	case x < old:
		p := lowerBound(s[:i], x) // s[p:i] >= x
		copy(s[p+1:i+1], s[p:i])
		s[p] = x
	}
}

// Median is the median of the window (the mean of the two middle values when the count is
// even), or 0 when the window is empty.
func (r *RollingRobust) Median() float64 {
	s := r.sorted
	n := len(s)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return s[n/2]
	default:
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// MAD is the median of |v − median| over the window, or 0 when it is empty.
//
// The deviations of the values below the median, read from the middle outwards, are
// ascending, and so are those above it; the MAD is the middle of the two runs merged. A
// binary search for the split of that merge finds it in O(log W) without building either run.
func (r *RollingRobust) MAD() float64 {
	_, mad := r.MedianMAD()
	return mad
}

// MedianMAD returns Median and MAD together, sharing the median.
func (r *RollingRobust) MedianMAD() (median, mad float64) {
	s := r.sorted
	n := len(s)
	if n == 0 {
		return 0, 0
	}
	m := r.Median()
	h := n / 2
	lo, hi := s[:h], s[h:]
	// A(i) = m − lo[h−1−i] and B(j) = hi[j] − m are both ascending.
	a, b := len(lo), len(hi)
	k := (n - 1) / 2 // 0-based rank of the (lower) middle deviation
	// Take i deviations from A and k+1−i from B: the smallest i in [first, last] with
	// B(k−i) ≤ A(i) makes them the k+1 smallest. The binary search for it is branch-free:
	// which half wins is a coin flip for the branch predictor, and it runs for every value
	// scored.
	first, last := max(0, k+1-b), min(a, k+1)
	i := first
	if span := last - first; span > 0 {
		for ; span > 1; span -= span >> 1 {
			j := i + span>>1
			i += span >> 1 & -int(b2u(hi[k-j]-m > m-lo[h-1-j]))
		}
		i += int(b2u(hi[k-i]-m > m-lo[h-1-i]))
	}
	j := k + 1 - i
	kth := math.Inf(-1)
	if i > 0 {
		kth = m - lo[h-i]
	}
	if j > 0 {
		kth = max(kth, hi[j-1]-m)
	}
	if n%2 == 1 {
		return m, kth
	}
	next := math.Inf(1) // the deviation of rank k+1
	if i < a {
		next = m - lo[h-1-i]
	}
	if j < b {
		next = min(next, hi[j]-m)
	}
	return m, (kth + next) / 2
}

// RobustZ is (x − median) / (1.4826·MAD) of the window before x is added: a z-score that a
// few outliers in the window cannot inflate. The MAD is floored at 1e-9·(|median|+1) so a
// window that is mostly one value yields a large finite score for a change; the result is
// clamped to ±MaxFloat64, so it is never ±Inf, and never NaN for a finite x. It returns 0
// for an empty window.
func (r *RollingRobust) RobustZ(x float64) float64 {
	if len(r.sorted) == 0 {
		return 0
	}
	m, mad := r.MedianMAD()
	z := (x - m) / (MADScale * max(mad, madFloorRel*(math.Abs(m)+1)))
	return max(-math.MaxFloat64, min(math.MaxFloat64, z))
}

// lowerBound is the number of values of s (ascending) below x: sort.SearchFloat64s
// without the closure, and with plain < (slices.BinarySearch orders NaNs, which never get
// here, at a cost that showed up in profiles).
func lowerBound(s []float64, x float64) int {
	n := len(s)
	if n == 0 {
		return 0
	}
	base := 0
	for n > 1 {
		half := n >> 1
		if s[base+half] < x {
			base += half
		}
		n -= half
	}
	if s[base] < x {
		base++
	}
	return base
}

// upperBound is the number of values of s (ascending) at or below x.
func upperBound(s []float64, x float64) int {
	n := len(s)
	if n == 0 {
		return 0
	}
	base := 0
	for n > 1 {
		half := n >> 1
		if s[base+half] <= x {
			base += half
		}
		n -= half
	}
	if s[base] <= x {
		base++
	}
	return base
}
