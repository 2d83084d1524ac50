package detectors

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// kdLeafSize is the most points a leaf holds (unless they all coincide): small enough
// that a query scans few points that are far, large enough that the tree stays shallow
// and a leaf's points fill a few cache lines.
const kdLeafSize = 16

// kdMaxRows is what the int32 point indices can address.
const kdMaxRows = math.MaxInt32

// KDTree is a k-d tree over the rows of a matrix for exact k-nearest-neighbour queries in
// Euclidean distance. It is built once and then read only, so any number of goroutines
// may query it at once, each with its own KDScratch.
//
// Nodes split at the median of their widest dimension (see kdUntie for ties), so the
// depth is O(log n) whatever the data; leaves hold up to 16 points. Everything is in flat
// arrays: the points are copied in leaf order, so a leaf's points are contiguous, and idx
// maps a position back to its row in the matrix the tree was built from. Every node
// keeps the tight bounding box of its points, not just its split: on clustered data
// (shuttle) most of a split cell is empty, and the box's distance prunes far more than
// the split plane's.
type KDTree struct {
	n, d  int
	pts   []float64 // n×d, in leaf order
	idx   []int32   // row of the point at each position
	nodes []kdNode
	boxes []float64 // per node: the lower corner of its points' bounding box, then the upper
}

// kdNode is a leaf when dim < 0. Otherwise its points with x[dim] ≤ split are in the
// left child (node left), those with x[dim] ≥ split in the right one (node left+1).
type kdNode struct {
	split      float64
	dim        int32
	left       int32
	start, end int32 // the node's positions in pts
}

// KDScratch is the working memory of a query. The zero value is ready; reused, it makes
// queries allocate nothing. One per goroutine.
type KDScratch struct {
	heapD []float64 // max-heap of the best squared distances so far, ordered by (distance, row)
	heapI []int32
}

// NewKDTree builds a tree over the rows of X, which it copies. X must be non-empty with
// finite values.
func NewKDTree(X Matrix) (*KDTree, error) {
	if err := X.Check(); err != nil {
		return nil, fmt.Errorf("kdtree: %w", err)
	}
	if X.Rows > kdMaxRows {
		return nil, fmt.Errorf("kdtree: %d rows is more than the %d a tree holds", X.Rows, kdMaxRows)
	}
	if r, c, ok := firstNonFinite(X); !ok {
		return nil, fmt.Errorf("kdtree: row %d, column %d is %v; values must be finite", r, c, X.Data[r*X.Cols+c])
	}
	n, d := X.Rows, X.Cols
	t := &KDTree{n: n, d: d, idx: make([]int32, n)}
	for i := range t.idx {
		t.idx[i] = int32(i)
	}
	// Room for a tree whose leaves are half full; append grows it if ties make more.
	t.nodes = make([]kdNode, 1, 4*n/kdLeafSize+1)
	t.boxes = make([]float64, 2*d, 2*d*cap(t.nodes))
	t.build(X, 0, 0, n)
	t.pts = make([]float64, n*d)
	for p, r := range t.idx {
		copy(t.pts[p*d:(p+1)*d], X.Row(int(r)))
	}
	return t, nil
}

// firstNonFinite returns the first non-finite cell of X, or ok.
func firstNonFinite(X Matrix) (row, col int, ok bool) {
	for i, v := range X.Data {
		if !finite(v) {
			return i / X.Cols, i % X.Cols, false
		}
	}
	return 0, 0, true
}

// Len is the number of points in the tree.
func (t *KDTree) Len() int { return t.n }

// Dims is the number of coordinates of every point.
func (t *KDTree) Dims() int { return t.d }

// box returns the bounding box of node id: lower corner, then upper.
func (t *KDTree) box(id int32) (lo, hi []float64) {
	b := t.boxes[int(id)*2*t.d : (int(id)+1)*2*t.d]
	return b[:t.d], b[t.d:]
}

// build makes node id the node for positions [start, end), and its subtree, reordering
// idx. A node's two children are appended together, so the right one is always left+1.
func (t *KDTree) build(X Matrix, id int32, start, end int) {
	t.nodes[id] = kdNode{dim: -1, start: int32(start), end: int32(end)}
	lo, hi := t.box(id)
	copy(lo, X.Row(int(t.idx[start])))
	copy(hi, lo)
	for _, r := range t.idx[start+1 : end] {
		for j, v := range X.Row(int(r)) {
			lo[j] = min(lo[j], v)
			hi[j] = max(hi[j], v)
		}
	}
	if end-start <= kdLeafSize {
		return
	}
	// The widest dimension by variance rather than range: a range is set by a node's
	// few most extreme points (shuttle's heavy tails), the variance by where most lie.
	dim, widest := -1, -1.0
	for j := range t.d {
		if hi[j] == lo[j] {
			continue
		}
		// Two passes: Σv² − (Σv)²/n cancels to nonsense for large values of small spread.
		var sum, sq float64
		for _, r := range t.idx[start:end] {
			sum += X.Data[int(r)*t.d+j]
		}
		mean := sum / float64(end-start)
		for _, r := range t.idx[start:end] {
			e := X.Data[int(r)*t.d+j] - mean
			sq += e * e
		}
		if sq > widest {
			dim, widest = j, sq
		}
	}
	if dim < 0 {
		return // all points coincide: no split separates them
	}
	mid := start + (end-start)/2
	key := func(r int32) float64 { return X.Data[int(r)*t.d+dim] }
	kdSelect(t.idx[start:end], mid-start, key)
	split := key(t.idx[mid])
	mid = kdUntie(t.idx, start, mid, end, key)
	left := int32(len(t.nodes))
	t.nodes = append(t.nodes, kdNode{}, kdNode{})
	t.boxes = append(t.boxes, make([]float64, 4*t.d)...)
	t.nodes[id].dim, t.nodes[id].split, t.nodes[id].left = int32(dim), split, left
	t.build(X, left, start, mid)
	t.build(X, left+1, mid, end)
}

// kdUntie moves the split from the median position mid to the nearer end of the run of
// keys equal to the median, gathering the run on one side, and returns the new split
// position. Then the children's boxes do not both reach the median's plane: on data with
// many equal values (shuttle's features are mostly one value) a query there would
// otherwise find itself inside both boxes at every level and prune nothing, which costs
// 4 times the leaf visits. If the run is so long that one side would keep less than an
// eighth of the points, the split stays at mid: depth stays O(log n).
func kdUntie(idx []int32, start, mid, end int, key func(int32) float64) int {
	v := key(idx[mid])
	a := mid
	for i := mid - 1; i >= start; i-- {
		if key(idx[i]) == v {
			a--
			idx[i], idx[a] = idx[a], idx[i]
		}
	}
	b := mid + 1
	for i := mid + 1; i < end; i++ {
		if key(idx[i]) == v {
			idx[i], idx[b] = idx[b], idx[i]
			b++
		}
	}
	pos := a
	if b-mid < mid-a || a == start {
		pos = b
	}
	if m := (end - start) / 8; pos-start < max(m, 1) || end-pos < max(m, 1) {
		return mid
	}
	return pos
}

// kdSelect reorders a so that a[m] holds the element of rank m by key, with no greater
// element before it and no smaller one after: Hoare's quickselect with median-of-three
// pivots, whose partition splits runs of equal keys evenly. Past 2·log2(n) rounds it
// sorts instead, which bounds the worst case at O(n log n).
func kdSelect(a []int32, m int, key func(int32) float64) {
	lo, hi := 0, len(a)-1
	for budget := 2 * bits.Len(uint(len(a))); hi > lo; budget-- {
		if budget == 0 {
			slices.SortFunc(a[lo:hi+1], func(x, y int32) int { return cmp.Compare(key(x), key(y)) })
			return
		}
		// Median of three to a[lo], so the pivot is not the range's extreme for sorted input.
		c := lo + (hi-lo)/2
		if key(a[c]) < key(a[lo]) {
			a[c], a[lo] = a[lo], a[c]
		}
		if key(a[hi]) < key(a[lo]) {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if key(a[hi]) < key(a[c]) {
			a[hi], a[c] = a[c], a[hi]
		}
		a[c], a[lo] = a[lo], a[c]
		pivot := key(a[lo])
		i, j := lo, hi+1
		for {
			for i++; i < hi && key(a[i]) < pivot; i++ {
			}
			for j--; key(a[j]) > pivot; j-- {
			}
			if i >= j {
				break
			}
			a[i], a[j] = a[j], a[i]
		}
		a[lo], a[j] = a[j], a[lo] // the pivot lands at j: a[lo:j] ≤ pivot ≤ a[j+1:hi+1]
		switch {
		case j == m:
			return
		case j < m:
			lo = j + 1
		default:
			hi = j - 1
		}
	}
}

// Nearest finds the len(dist) rows nearest to q, skipping row exclude (−1 skips none, a
// training row passes its own index to find its neighbours among the others). It writes
// their Euclidean distances in ascending order to dist and their rows to idx, ties going
// to the lower row, and returns how many it found: len(dist) unless the tree holds fewer
// rows. The result is the brute-force one exactly, whatever the tree's shape. q must be
// finite.
func (t *KDTree) Nearest(q []float64, exclude int, dist []float64, idx []int, s *KDScratch) (int, error) {
	k := len(dist)
	switch {
	case len(q) != t.d:
		return 0, fmt.Errorf("kdtree: query has %d coordinates, the tree %d", len(q), t.d)
	case len(idx) != k:
		return 0, fmt.Errorf("kdtree: %d distances but %d indices requested", k, len(idx))
	case k == 0:
		return 0, nil
	}
	for j, v := range q {
		if !finite(v) {
			return 0, fmt.Errorf("kdtree: query coordinate %d is %v; it must be finite", j, v)
		}
	}
	if cap(s.heapD) < k {
		s.heapD, s.heapI = make([]float64, 0, k), make([]int32, 0, k)
	}
	s.heapD, s.heapI = s.heapD[:0], s.heapI[:0]
	ex := int32(-1)
	if exclude >= 0 && exclude < t.n {
		ex = int32(exclude)
	}
	t.search(0, q, ex, k, s)

	// Pop the max-heap from the back: ascending order, in place.
	found := len(s.heapD)
	hd, hi := s.heapD, s.heapI
	for m := found - 1; m >= 0; m-- {
		dist[m], idx[m] = math.Sqrt(hd[0]), int(hi[0])
		hd[0], hi[0] = hd[m], hi[m]
		hd, hi = hd[:m], hi[:m]
		kdSiftDown(hd, hi, 0)
	}
	return found, nil
}

// search visits node id's subtree, the child whose box is nearer q first, skipping a
// box farther than the k-th nearest point found so far.
//
// No slack is needed against rounding: a box's distance sums, in the same order, terms
// that are each at most the corresponding term of any of its points' distances (the
// box's corners are its points' coordinates and rounding is monotone), so it never
// exceeds the computed distance of a point inside. The test is strict, so a box that may
// hold a point tied with the k-th one is visited and ties go to the lower row exactly as
// a brute force would have them.
func (t *KDTree) search(id int32, q []float64, ex int32, k int, s *KDScratch) {
	nd := &t.nodes[id]
	if nd.dim < 0 {
		t.scanLeaf(nd, q, ex, k, s)
		return
	}
	limit := math.Inf(1)
	if len(s.heapD) == k {
		limit = s.heapD[0]
	}
	first, second := nd.left, nd.left+1
	d1, d2 := t.boxDist(first, q, limit), t.boxDist(second, q, limit)
	if d2 < d1 {
		first, second, d1, d2 = second, first, d2, d1
	}
	if len(s.heapD) < k || d1 <= s.heapD[0] {
		t.search(first, q, ex, k, s)
	}
	if len(s.heapD) < k || d2 <= s.heapD[0] {
		t.search(second, q, ex, k, s)
	}
}

// boxDist is the squared distance from q to node id's bounding box, or a partial sum
// of it once that passes limit (the box is out of reach either way).
func (t *KDTree) boxDist(id int32, q []float64, limit float64) float64 {
	lo, hi := t.box(id)
	lo, hi = lo[:len(q)], hi[:len(q)]
	sum := 0.0
	for j, v := range q {
		e := max(lo[j]-v, v-hi[j], 0)
		sum += e * e
		if sum > limit {
			break
		}
	}
	return sum
}

// scanLeaf offers each of a leaf's points to the heap.
func (t *KDTree) scanLeaf(nd *kdNode, q []float64, ex int32, k int, s *KDScratch) {
	d := t.d
	pts := t.pts[int(nd.start)*d : int(nd.end)*d]
	ids := t.idx[nd.start:nd.end]
	for p, r := range ids {
		row := pts[p*d : p*d+d : p*d+d]
		var sum float64
		for j, v := range row[:len(q)] {
			e := v - q[j]
			sum += e * e
		}
		hd := s.heapD
		if len(hd) == k && (sum > hd[0] || sum == hd[0] && r > s.heapI[0]) || r == ex {
			continue
		}
		if len(hd) < k {
			s.heapD, s.heapI = append(hd, sum), append(s.heapI, r)
			kdSiftUp(s.heapD, s.heapI, len(hd))
			continue
		}
		hd[0], s.heapI[0] = sum, r
		kdSiftDown(hd, s.heapI, 0)
	}
}

// kdLess orders heap entries by distance, then row: a total order, so the k nearest are
// one well-defined set.
func kdLess(hd []float64, hi []int32, a, b int) bool {
	return hd[a] < hd[b] || hd[a] == hd[b] && hi[a] < hi[b]
}

func kdSiftUp(hd []float64, hi []int32, c int) {
	for c > 0 {
		p := (c - 1) / 2
		if !kdLess(hd, hi, p, c) {
			return
		}
		hd[p], hd[c] = hd[c], hd[p]
		hi[p], hi[c] = hi[c], hi[p]
		c = p
	}
}

func kdSiftDown(hd []float64, hi []int32, p int) {
	n := len(hd)
	for {
		c := 2*p + 1
		if c >= n {
			return
		}
		if c+1 < n && kdLess(hd, hi, c, c+1) {
			c++
		}
		if !kdLess(hd, hi, p, c) {
			return
		}
		hd[p], hd[c] = hd[c], hd[p]
		hi[p], hi[c] = hi[c], hi[p]
		p = c
	}
}
