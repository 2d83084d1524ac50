package detectors

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"unsafe"
)

func init() {
	Register(Info{
		Name: "rrcf",
		Kind: KindStreaming,
		Doc: "Robust Random Cut Forest (Guha, Mishra, Roy & Schrijvers 2016, as AWS and the rrcf " +
			"package implement it): every tree is a random cut tree over the partition's last " +
			"`tree_size` points (FIFO: the oldest leaves as a new one arrives, which is what AWS's " +
			"time decay approximates). The score is the collusive displacement (CoDisp) of the new " +
			"point, averaged over the trees: how many points its insertion displaces, relative to the " +
			"points it colludes with. One forest per partition and shingled width, shared by its " +
			"series; with `shingle` s a point is the series' last s observations concatenated. " +
			"Score ≥ 0 (up to tree_size − 1), higher is more anomalous; NaN until the forest holds " +
			"tree_size/4 points (AWS's default output-after) and a series has s observations.",
		Params: []Param{
			{Name: "trees", Doc: "trees in the forest; cost is linear in it", Default: 100, Min: 1, Max: 1000, Integer: true},
			{Name: "tree_size", Doc: "points each tree holds: the partition's last tree_size (shingled) points", Default: 256, Min: 16, Max: 100000, Integer: true},
			{Name: "shingle", Doc: "observations per point: the series' last `shingle` records concatenated", Default: 1, Min: 1, Max: 64, Integer: true},
		},
		NewStreaming: func(p Params, seed uint64) (Streaming, error) {
			return NewRandomCutForest(RRCFConfig{Trees: p.Int("trees"), TreeSize: p.Int("tree_size"), Shingle: p.Int("shingle")}, seed)
		},
	})
}

// RRCFConfig is the shape of a Robust Random Cut Forest.
type RRCFConfig struct {
	Trees    int // trees in the forest
	TreeSize int // points each tree holds (the last TreeSize of the partition)
	Shingle  int // observations of a series concatenated into one point
}

const (
	// RRCFMaxForestBytes caps one forest, as HSTMaxForestBytes does: trees=1000,
	// tree_size=100000 over a wide shingle would otherwise take the process down.
	RRCFMaxForestBytes = 1 << 30
	// RRCFMaxForests caps the widths a partition builds forests for; records of further
	// widths get NaN (no judgement).
	RRCFMaxForests = 8
	// rrcfClip bounds the coordinates: spans of ±MaxFloat64 overflow to Inf, and sums of
	// spans over 64·d dimensions must stay finite.
	rrcfClip = 1e100
	// rrcfNone marks an empty child or root: ^rrcfNone is no valid leaf index.
	rrcfNone = math.MinInt32
)

// rrcfBranch is an internal node. Children are refs: ≥ 0 a branch, < 0 the leaf ^ref.
type rrcfBranch struct {
	cut    float64 // points with x[dim] <= cut go left (child 0), the others right
	child  [2]int32
	parent int32 // branch index, −1 at the root; next free branch while free
	n      int32 // points below, duplicates included
	dim    int32
}

// rrcfLeaf is a distinct point of a tree; duplicates share it and count in n.
type rrcfLeaf struct {
	parent int32 // branch index, −1 at the root; next free leaf while free
	n      int32
	slot   int32 // the point's slot in the forest's store (the newest of its duplicates)
}

// rrcfTree views one tree's share of the forest's flat arrays, indexed locally, so a tree
// is four allocations for all trees and steady-state updates allocate nothing.
type rrcfTree struct {
	br     []rrcfBranch // TreeSize−1 branches (a tree of TreeSize distinct points needs no more)
	box    [][2]float64 // per branch and dimension: its bounding box's low and high
	lf     []rrcfLeaf   // TreeSize leaves
	leafOf []int32      // per store slot: the leaf holding that point
	root   int32
	freeB  int32
	freeL  int32
}

// RandomCutForest is the rrcf detector: one forest per shingled width, built on first use
// and shared by the partition's series (their shingles interleave in one FIFO), plus a
// shingle ring per series when Shingle > 1.
type RandomCutForest struct {
	cfg     RRCFConfig
	seed    uint64
	forests map[int]*rrcfForest
	last    *rrcfForest
	series  map[string]*rrcfShingle
}

// rrcfShingle holds a series' last Shingle observations, oldest first from head.
type rrcfShingle struct {
	d    int
	vals []float64 // Shingle rows of d values, a ring
	head int       // the row written next: the oldest once full
	n    int       // rows held
}

// NewRandomCutForest checks cfg and returns an empty detector; forests take their memory
// (RRCFForestBytes) when the first record of a width arrives.
func NewRandomCutForest(cfg RRCFConfig, seed uint64) (*RandomCutForest, error) {
	switch {
	case cfg.Trees < 1 || cfg.Trees > 1000:
		return nil, fmt.Errorf("rrcf: trees = %d must be in [1, 1000]", cfg.Trees)
	case cfg.TreeSize < 2 || cfg.TreeSize > 1<<24:
		return nil, fmt.Errorf("rrcf: tree_size = %d must be in [2, %d]", cfg.TreeSize, 1<<24)
	case cfg.Shingle < 1 || cfg.Shingle > 1<<10:
		return nil, fmt.Errorf("rrcf: shingle = %d must be in [1, %d]", cfg.Shingle, 1<<10)
	}
	if b := RRCFForestBytes(cfg, 1); b > RRCFMaxForestBytes {
		return nil, fmt.Errorf("rrcf: trees = %d, tree_size = %d and shingle = %d need %d MiB per forest, over the %d MiB limit",
			cfg.Trees, cfg.TreeSize, cfg.Shingle, b>>20, RRCFMaxForestBytes>>20)
	}
	return &RandomCutForest{cfg: cfg, seed: seed, forests: make(map[int]*rrcfForest), series: make(map[string]*rrcfShingle)}, nil
}

// RRCFForestBytes is the memory of one forest with cfg for records of d features: per tree,
// TreeSize leaves and TreeSize−1 branches with a bounding box of 2·Shingle·d float64s each.
func RRCFForestBytes(cfg RRCFConfig, d int) int {
	dim := cfg.Shingle * d
	perTree := (cfg.TreeSize-1)*(int(unsafe.Sizeof(rrcfBranch{}))+16*dim) +
		cfg.TreeSize*(int(unsafe.Sizeof(rrcfLeaf{}))+4)
	return cfg.Trees*perTree + cfg.TreeSize*dim*8
}

// SizeBytes is the memory held by the forests and shingle rings.
func (r *RandomCutForest) SizeBytes() int {
	n := 0
	for d := range r.forests {
		n += RRCFForestBytes(r.cfg, d/r.cfg.Shingle)
	}
	for _, s := range r.series {
		n += len(s.vals) * 8
	}
	return n
}

// Len is the number of series whose shingles are held (0 when Shingle is 1).
func (r *RandomCutForest) Len() int { return len(r.series) }

// Forget drops a series' shingle, for callers that evict idle series.
func (r *RandomCutForest) Forget(series string) { delete(r.series, series) }

// ScoreLearn implements Streaming. NaN features are taken as 0 and coordinates are clipped
// to ±1e100. Contributions credit, in each tree, the cut dimension of the ancestor where
// the new point's displacement peaks (the cut that isolates it from the most points),
// weighted by that tree's CoDisp; shingle positions fold onto their feature.
func (r *RandomCutForest) ScoreLearn(series string, x, contrib []float64) float64 {
	d := len(x)
	if contrib != nil {
		clear(contrib[:d])
	}
	if d == 0 {
		return math.NaN()
	}
	f := r.forest(d * r.cfg.Shingle)
	if f == nil {
		return math.NaN() // a width we hold no forest for: no judgement
	}
	if r.cfg.Shingle == 1 {
		for j, v := range x {
			f.pt[j] = rrcfCoord(v)
		}
	} else {
		st := r.series[series]
		if st == nil || st.d != d {
			st = &rrcfShingle{d: d, vals: make([]float64, r.cfg.Shingle*d)}
			r.series[strings.Clone(series)] = st // clone: do not pin the caller's message buffer
		}
		row := st.vals[st.head*d : st.head*d+d]
		for j, v := range x {
			row[j] = rrcfCoord(v)
		}
		if st.head++; st.head == r.cfg.Shingle {
			st.head = 0
		}
		if st.n < r.cfg.Shingle {
			if st.n++; st.n < r.cfg.Shingle {
				return math.NaN() // not a whole shingle yet
			}
		}
		k := copy(f.pt, st.vals[st.head*d:])
		copy(f.pt[k:], st.vals[:st.head*d])
	}
	withContrib := contrib != nil
	s := f.scoreLearn(withContrib)
	if math.IsNaN(s) {
		return s
	}
	if withContrib {
		sum := 0.0
		c := contrib[:d]
		for j, v := range f.acc {
			c[j%d] += v
			sum += v
		}
		normalizeShares(c, sum)
	}
	return s
}

// forest returns the forest for shingled width dim, building it on first use, or nil
// when the width is over the caps.
func (r *RandomCutForest) forest(dim int) *rrcfForest {
	if f := r.last; f != nil && f.dim == dim {
		return f
	}
	f := r.forests[dim]
	if f == nil {
		if len(r.forests) >= RRCFMaxForests || RRCFForestBytes(r.cfg, dim/r.cfg.Shingle) > RRCFMaxForestBytes {
			return nil
		}
		f = newRRCFForest(r.cfg, dim, r.seed)
		r.forests[dim] = f
	}
	r.last = f
	return f
}

// rrcfCoord maps a feature to a coordinate: NaN to 0 (the centre of robust-scaled
// features, as hst does), ±Inf and huge values to ±1e100, and −0 to +0 so that a bounding
// box never depends on which zero arrived first.
func rrcfCoord(v float64) float64 {
	if v != v {
		return 0
	}
	return min(max(v, -rrcfClip), rrcfClip) + 0
}

// rrcfForest is the forest for one shingled width. All trees hold the same points (the
// last TreeSize), each in its own random cut tree; the points are stored once, in a ring
// of slots, and leaves refer to slots.
type rrcfForest struct {
	dim, size, warmup int
	points            []float64 // size slots of dim coordinates
	head              int       // the slot written next: the oldest once full
	n                 int       // points held
	seen              uint64    // points ever inserted

	trees []rrcfTree
	pcg   *rand.PCG

	pt   []float64 // the point being scored
	acc  []float64 // contributions per dimension
	path []uint64  // insert's scratch: points and cut dimension of the nodes it enters
}

func newRRCFForest(cfg RRCFConfig, dim int, seed uint64) *rrcfForest {
	size := cfg.TreeSize
	f := &rrcfForest{
		dim: dim, size: size, warmup: max(1, size/4),
		points: make([]float64, size*dim),
		trees:  make([]rrcfTree, cfg.Trees),
		pt:     make([]float64, dim),
		acc:    make([]float64, dim),
		path:   make([]uint64, 0, 64),
	}
	// The stream seed with the width, so a forest does not depend on which widths came first.
	f.pcg = rand.NewPCG(seed, uint64(dim))
	nb := size - 1
	br := make([]rrcfBranch, cfg.Trees*nb)
	box := make([][2]float64, cfg.Trees*nb*dim)
	lf := make([]rrcfLeaf, cfg.Trees*size)
	leafOf := make([]int32, cfg.Trees*size)
	for t := range f.trees {
		tr := &f.trees[t]
		tr.br = br[t*nb : (t+1)*nb : (t+1)*nb]
		tr.box = box[t*nb*dim : (t+1)*nb*dim : (t+1)*nb*dim]
		tr.lf = lf[t*size : (t+1)*size : (t+1)*size]
		tr.leafOf = leafOf[t*size : (t+1)*size : (t+1)*size]
		tr.reset()
	}
	return f
}

// reset empties a tree: every branch and leaf free.
func (tr *rrcfTree) reset() {
	tr.root = rrcfNone
	for i := range tr.br {
		tr.br[i] = rrcfBranch{parent: int32(i + 1)}
	}
	tr.freeB = -1
	if len(tr.br) > 0 {
		tr.br[len(tr.br)-1].parent = -1
		tr.freeB = 0
	}
	for i := range tr.lf {
		tr.lf[i] = rrcfLeaf{parent: int32(i + 1)}
	}
	tr.lf[len(tr.lf)-1].parent = -1
	tr.freeL = 0
}

func (tr *rrcfTree) allocBranch() int32 {
	b := tr.freeB
	tr.freeB = tr.br[b].parent
	return b
}

func (tr *rrcfTree) allocLeaf() int32 {
	l := tr.freeL
	tr.freeL = tr.lf[l].parent
	return l
}

// bounds returns branch b's bounding box: the low and high of each dimension, side by
// side, so one slice expression reaches both.
func (tr *rrcfTree) bounds(b int32, dim int) [][2]float64 {
	o := int(b) * dim
	return tr.box[o : o+dim : o+dim]
}

// side is the low and high in dimension j of a child ref's box: a branch's, or its point
// for a leaf.
func (f *rrcfForest) side(tr *rrcfTree, ref int32, j int) (lo, hi float64) {
	if ref < 0 {
		v := f.point(tr.lf[^ref].slot)[j]
		return v, v
	}
	b := tr.box[int(ref)*f.dim+j]
	return b[0], b[1]
}

// uniform is rand.Float64 on the forest's PCG, called directly: through rand.Rand it
// would be an interface call per node where a cut is drawn.
func (f *rrcfForest) uniform() float64 {
	return float64(f.pcg.Uint64()<<11>>11) / (1 << 53)
}

func (f *rrcfForest) point(slot int32) []float64 {
	return f.points[int(slot)*f.dim : int(slot+1)*f.dim : int(slot+1)*f.dim]
}

// scoreLearn inserts f.pt, evicting the oldest point once the trees are full, and returns
// the mean CoDisp of the new point over the trees, or NaN while warming up. The evicted
// point's coordinates stay in its slot until every tree is done with them.
func (f *rrcfForest) scoreLearn(withContrib bool) float64 {
	slot := int32(f.head)
	held := f.n
	full := f.n == f.size
	if withContrib {
		clear(f.acc)
	}
	total := 0.0
	q := f.point(slot) // the evicted point, when full
	// Evictions run a tree ahead of insertions: the next tree's, independent of this
	// one's, overlaps its cache misses with the descent here. Each leaves the counts of
	// its upper chain (from pend up) to the insertion into its tree.
	pend, next := int32(-1), int32(-1)
	if full {
		next = f.unlink(&f.trees[0], slot)
	}
	for t := range f.trees {
		tr := &f.trees[t]
		pend = next
		if full && t+1 < len(f.trees) {
			next = f.unlink(&f.trees[t+1], slot)
		}
		cd, dim := f.insert(tr, slot, q, pend)
		total += cd
		if withContrib && dim >= 0 {
			f.acc[dim] += cd
		}
	}
	copy(f.point(slot), f.pt)
	if !full {
		f.n++
	}
	if f.head++; f.head == f.size {
		f.head = 0
	}
	f.seen++
	if held < f.warmup {
		return math.NaN() // too few points for displacement to mean anything
	}
	return total / float64(len(f.trees))
}

// insert adds f.pt, in slot s, to tree tr as the RRCF insertion does: at each node, a cut
// drawn on the bounding box of the node's points and the new one (a dimension in
// proportion to its span, then a uniform position) either falls outside the node's box,
// and then separates the new point from the whole subtree there, or the point descends to
// the child on its side of the node's own cut. Only the part of the span that the new
// point adds can separate, so a point inside a box needs no draw.
//
// It returns the new point's CoDisp as the rrcf package defines it, the max over its
// ancestors of (points in the sibling) / (points on its side), with the cut dimension
// where the max is reached (−1 for a lone root). The descent records each node's points
// and cut dimension (f.path); an ancestor entered with nA points whose child on the path
// had nC ends with nA − nC in the sibling and nC + 1 on the point's side. The ratios are
// compared afterwards, as integer cross products, so a tree costs one division.
//
// pend is the lowest ancestor of an evicted point q whose count, like all its ancestors',
// still includes q (−1: none). Where the descent follows q's path down to pend, q's −1
// and the new point's +1 cancel and the counts are left alone; where the paths part, or
// the new point is cut off there, the rest of q's chain is lowered then. So the eviction
// and the insertion share the walk over their common upper path.
func (f *rrcfForest) insert(tr *rrcfTree, s int32, q []float64, pend int32) (float64, int) {
	p, dim := f.pt, f.dim
	if tr.root == rrcfNone {
		l := tr.allocLeaf()
		tr.lf[l] = rrcfLeaf{parent: -1, n: 1, slot: s}
		tr.leafOf[s] = l
		tr.root = ^l
		return 0, -1
	}
	// path holds, per node entered, its points before the insertion (high half) and its
	// cut dimension (low half); the ratios are taken from it once the descent is done.
	path := f.path[:0]
	br := tr.br
	node, parent := tr.root, int32(-1)
	var sepDim int
	var cut float64
	var below bool // the new point goes left of the new cut
	for node >= 0 {
		b := &br[node]
		box := tr.bounds(node, dim)[:len(p)]
		ext := 0.0
		for j, v := range p {
			if lo := box[j][0]; v < lo {
				ext += lo - v
			} else if hi := box[j][1]; v > hi {
				ext += v - hi
			}
		}
		n := b.n
		onChain := pend >= 0 // node is on q's chain: its count still includes q
		if onChain {
			n--
		}
		path = append(path, uint64(n)<<32|uint64(uint32(b.dim)))
		if ext > 0 { // the span matters only when the point is outside the box
			span := 0.0
			for j := range p {
				span += box[j][1] - box[j][0]
			}
			if r := f.uniform() * (span + ext); r < ext {
				sepDim, cut, below = rrcfSeparateBox(r, p, box)
				if onChain { // q leaves node and the chain below it; p does not enter
					for a := pend; ; a = br[a].parent {
						br[a].n--
						if a == node {
							break
						}
					}
				}
				break
			}
			for j, v := range p { // plain compares: coordinates are never NaN or −0
				if v < box[j][0] {
					box[j][0] = v
				} else if v > box[j][1] {
					box[j][1] = v
				}
			}
		}
		parent = node
		next := b.child[b2u(p[b.dim] > b.cut)] // no branch: the side is a coin flip
		if !onChain {
			b.n++
		} else if node == pend {
			pend = -1 // the chain ends here: below, the counts are settled
		} else if b.child[b2u(q[b.dim] > b.cut)] != next {
			// The paths part: q's chain below node loses q, p does not enter it.
			for a := pend; a != node; a = br[a].parent {
				br[a].n--
			}
			pend = -1
		}
		node = next
	}
	if node < 0 { // a leaf: the new point duplicates it or is separated from it
		leaf := &tr.lf[^node]
		path = append(path, uint64(leaf.n)<<32)
		qq := f.point(leaf.slot)[:len(p)]
		ext := 0.0
		for j, v := range p {
			ext += math.Abs(v - qq[j])
		}
		if ext == 0 {
			leaf.n++
			leaf.slot = s // the newest duplicate: FIFO evicts the others first
			tr.leafOf[s] = ^node
			f.path = path
			bn, bd, best := rrcfPathCoDisp(path)
			return float64(bn) / float64(bd), best
		}
		sepDim, cut, below = rrcfSeparate(f.uniform()*ext, p, qq)
	}
	f.path = path
	// The new leaf's sibling is node, with all its points.
	nodeN := int64(path[len(path)-1] >> 32)
	bn, bd, best := rrcfPathCoDisp(path)
	if nodeN*bd >= bn {
		bn, bd, best = nodeN, 1, sepDim
	}

	// A new branch nb takes node's place, with node and the new leaf as children.
	nb := tr.allocBranch()
	nl := tr.allocLeaf()
	tr.lf[nl] = rrcfLeaf{parent: nb, n: 1, slot: s}
	tr.leafOf[s] = nl
	b := &br[nb]
	b.cut, b.dim, b.parent, b.n = cut, int32(sepDim), parent, int32(nodeN)+1
	if below {
		b.child = [2]int32{^nl, node}
	} else {
		b.child = [2]int32{node, ^nl}
	}
	nbox := tr.bounds(nb, dim)[:len(p)]
	if node < 0 {
		tr.lf[^node].parent = nb
		qq := f.point(tr.lf[^node].slot)[:len(p)]
		for j, v := range p {
			nbox[j] = [2]float64{min(qq[j], v), max(qq[j], v)}
		}
	} else {
		br[node].parent = nb
		cbox := tr.bounds(node, dim)[:len(p)]
		for j, v := range p {
			nbox[j] = [2]float64{min(cbox[j][0], v), max(cbox[j][1], v)}
		}
	}
	if parent < 0 {
		tr.root = nb
	} else {
		pb := &br[parent]
		pb.child[b2u(pb.child[1] == node)] = nb
	}
	return float64(bn) / float64(bd), best
}

// rrcfPathCoDisp is the max over the path's consecutive pairs, an ancestor with nA points
// and its child on the path with nC, of (nA − nC) / (nC + 1), as a fraction, with the
// ancestor's cut dimension (0/1 and −1 for a path of one node). Ties go to the deeper.
func rrcfPathCoDisp(path []uint64) (bn, bd int64, best int) {
	bn, bd, best = 0, 1, -1
	if len(path) == 0 {
		return
	}
	an, adim := int64(path[0]>>32), int(int32(uint32(path[0])))
	for _, e := range path[1:] {
		nc := int64(e >> 32)
		if sib, side := an-nc, nc+1; sib*bd >= bn*side {
			bn, bd, best = sib, side, adim
		}
		an, adim = nc, int(int32(uint32(e)))
	}
	return
}

// rrcfSeparate picks, for r uniform in [0, ext) with ext = Σ_j |p_j − q_j|, the dimension
// and position of a cut between points p and q.
func rrcfSeparate(r float64, p, q []float64) (int, float64, bool) {
	q = q[:len(p)]
	last := -1
	for j, v := range p {
		if v == q[j] {
			continue
		}
		last = j
		if e := math.Abs(v - q[j]); r < e {
			return rrcfCut(j, r, v, q[j], q[j])
		} else {
			r -= e
		}
	}
	// Rounding left r past the last gap: cut at its edge.
	return rrcfCut(last, 0, p[last], q[last], q[last])
}

// rrcfSeparateBox is rrcfSeparate for a point outside a box, ext being the sum over the
// dimensions of its distance from the box.
func rrcfSeparateBox(r float64, p []float64, box [][2]float64) (int, float64, bool) {
	box = box[:len(p)]
	last := -1
	for j, v := range p {
		lo, hi := box[j][0], box[j][1]
		var e float64
		switch {
		case v < lo:
			e = lo - v
		case v > hi:
			e = v - hi
		default:
			continue
		}
		last = j
		if r < e {
			return rrcfCut(j, r, v, lo, hi)
		}
		r -= e
	}
	return rrcfCut(last, 0, p[last], box[last][0], box[last][1])
}

// rrcfCut places the cut r into the gap between v and [lo, hi] in dimension j so that
// v and the box end up on different sides (x <= cut goes left), and says whether v is
// below it.
func rrcfCut(j int, r, v, lo, hi float64) (int, float64, bool) {
	if v < lo {
		cut := v + r
		if !(cut < lo) {
			cut = v
		}
		return j, cut, true
	}
	cut := hi + r
	if !(cut < v) {
		cut = hi
	}
	return j, cut, false
}

// unlink evicts the point in slot s from tree tr: a duplicate only lowers its count; a
// distinct point takes its leaf and parent branch out, its sibling moves up, and the
// boxes above shrink as far as the point was on their boundary. It returns the lowest
// ancestor whose count is still to be lowered, as are all above it (−1: none); insert
// settles those on its way down.
func (f *rrcfForest) unlink(tr *rrcfTree, s int32) int32 {
	li := tr.leafOf[s]
	leaf := &tr.lf[li]
	if leaf.n > 1 {
		leaf.n-- // the duplicates keep the point in every box
		return leaf.parent
	}
	pb := leaf.parent
	leaf.parent, tr.freeL = tr.freeL, li
	if pb < 0 {
		tr.root = rrcfNone
		return -1
	}
	b := &tr.br[pb]
	sib := b.child[b2u(b.child[0] == ^li)]
	g := b.parent
	if sib < 0 {
		tr.lf[^sib].parent = g
	} else {
		tr.br[sib].parent = g
	}
	if g < 0 {
		tr.root = sib
	} else {
		gb := &tr.br[g]
		gb.child[b2u(gb.child[1] == pb)] = sib
	}
	b.parent, tr.freeB = tr.freeB, pb

	q := f.point(s)
	for a := g; a >= 0; a = tr.br[a].parent {
		tr.br[a].n--
		if !f.shrink(tr, a, q) {
			return tr.br[a].parent
		}
	}
	return -1
}

// shrink recomputes branch a's box from its children when point q, which has left a's
// subtree, was on its boundary, and reports whether the box moved: if not, no box above
// can. The box is the union of the children's, taken whole and without branches: which
// side moves, and which child holds it, are coin flips that a branch per side mispredicts.
func (f *rrcfForest) shrink(tr *rrcfTree, a int32, q []float64) bool {
	box := tr.bounds(a, f.dim)[:len(q)]
	on := uint32(0)
	for j, v := range q {
		// Bits compare as the coordinates do: they are never NaN or −0.
		qb := math.Float64bits(v)
		on |= b2u(qb == math.Float64bits(box[j][0])) | b2u(qb == math.Float64bits(box[j][1]))
	}
	if on == 0 {
		return false // q was inside: the others hold every side
	}
	c := tr.br[a].child
	l0, h0, st0 := f.sides(tr, c[0])
	l1, h1, st1 := f.sides(tr, c[1])
	moved := uint32(0)
	for j := range box {
		o0, o1 := uintptr(j)*st0, uintptr(j)*st1
		// min and max compile to MINSD and MAXSD; coordinates are never NaN or −0.
		lo := min(*(*float64)(unsafe.Add(l0, o0)), *(*float64)(unsafe.Add(l1, o1)))
		hi := max(*(*float64)(unsafe.Add(h0, o0)), *(*float64)(unsafe.Add(h1, o1)))
		moved |= b2u(math.Float64bits(lo) != math.Float64bits(box[j][0])) |
			b2u(math.Float64bits(hi) != math.Float64bits(box[j][1]))
		box[j] = [2]float64{lo, hi}
	}
	return moved != 0
}

// sides locates a child ref's box: its low and high in dimension j at lo and hi plus
// j·step bytes, a branch's box, or its point, low and high at once, for a leaf.
func (f *rrcfForest) sides(tr *rrcfTree, ref int32) (lo, hi unsafe.Pointer, step uintptr) {
	if ref < 0 {
		p := unsafe.Pointer(&f.point(tr.lf[^ref].slot)[0])
		return p, p, 8
	}
	b := &tr.box[int(ref)*f.dim]
	return unsafe.Pointer(&b[0]), unsafe.Pointer(&b[1]), 16
}

// MarshalBinary implements Persistent: the configuration and seed, every series' shingle
// (sorted by name), then per forest (by width) its FIFO position, random generator state,
// the points held and each tree in preorder: a branch as its cut dimension and value, a
// leaf as its point's slot and duplicate count. Bounding boxes, subtree counts and the
// slot-to-leaf map follow from those and are rebuilt (and checked) on restore, which
// keeps a forest at the defaults to about 3.3 KiB a tree.
func (r *RandomCutForest) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapRRCF, 64)
	w.int(r.cfg.Trees)
	w.int(r.cfg.TreeSize)
	w.int(r.cfg.Shingle)
	w.u64(r.seed)
	w.int(len(r.series))
	for _, name := range sortedKeys(r.series) {
		st := r.series[name]
		w.str(name)
		w.int(st.d)
		w.int(st.n)
		w.int(st.head)
		w.floats(st.vals)
	}
	w.int(len(r.forests))
	for _, dim := range sortedInts(r.forests) {
		f := r.forests[dim]
		w.int(dim)
		w.int(f.n)
		w.int(f.head)
		w.uvar(f.seen)
		state, err := f.pcg.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("rrcf: %w", err)
		}
		w.raw(state)
		w.floats(f.points[:f.n*dim])
		for t := range f.trees {
			tr := &f.trees[t]
			if tr.root == rrcfNone {
				w.u8(0)
				continue
			}
			tr.appendNode(w, tr.root)
		}
	}
	return w.b, nil
}

// appendNode writes the subtree at ref in preorder.
func (tr *rrcfTree) appendNode(w *snapWriter, ref int32) {
	for ref >= 0 { // a branch, then its left subtree; its right one by iteration
		b := &tr.br[ref]
		w.u8(2)
		w.int(int(b.dim))
		w.f64(b.cut)
		tr.appendNode(w, b.child[0])
		ref = b.child[1]
	}
	l := &tr.lf[^ref]
	w.u8(1)
	w.int(int(l.slot))
	w.int(int(l.n))
}

// UnmarshalBinary implements Persistent; it replaces r's configuration and state. Every
// tree is checked as it is rebuilt: cuts must separate their subtrees, every point held
// must reach a leaf with its coordinates, and duplicate counts must match.
func (r *RandomCutForest) UnmarshalBinary(data []byte) error {
	sr, err := newSnapReader(data, snapRRCF, "rrcf")
	if err != nil {
		return err
	}
	cfg := RRCFConfig{
		Trees:    sr.intIn(1, 1000, "trees"),
		TreeSize: sr.intIn(2, 1<<24, "tree_size"),
		Shingle:  sr.intIn(1, 1<<10, "shingle"),
	}
	seed := sr.u64("seed")
	if sr.err != nil {
		return sr.err
	}
	out, err := NewRandomCutForest(cfg, seed)
	if err != nil {
		return fmt.Errorf("rrcf snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	ns := sr.count(4, "series")
	for range ns {
		name := sr.str("series name")
		d := sr.count(8*cfg.Shingle, "series width")
		n := sr.intIn(0, cfg.Shingle, "shingle count")
		head := sr.intIn(0, cfg.Shingle-1, "shingle head")
		if sr.err == nil && (d == 0 || n < cfg.Shingle && head != n) {
			sr.fail("shingle of width %d holding %d at %d", d, n, head)
		}
		if _, dup := out.series[name]; dup && sr.err == nil {
			sr.fail("series %q twice", name)
		}
		if !sr.alloc(8*cfg.Shingle*d, "shingle") {
			break
		}
		st := &rrcfShingle{d: d, vals: make([]float64, cfg.Shingle*d), head: head, n: n}
		readCoords(sr, st.vals, "shingle values")
		out.series[name] = st
	}
	nf := sr.intIn(0, RRCFMaxForests, "forests")
	for range nf {
		dim := sr.intIn(cfg.Shingle, 1<<30, "width")
		if sr.err == nil && dim%cfg.Shingle != 0 {
			sr.fail("width %d is not a multiple of the shingle %d", dim, cfg.Shingle)
		}
		if _, dup := out.forests[dim]; dup && sr.err == nil {
			sr.fail("two forests of width %d", dim)
		}
		if b := RRCFForestBytes(cfg, dim/cfg.Shingle); sr.err == nil && b > RRCFMaxForestBytes {
			sr.fail("a forest of width %d needs %d MiB", dim, b>>20)
		}
		if !sr.alloc(RRCFForestBytes(cfg, dim/cfg.Shingle), "forest") {
			break
		}
		f := newRRCFForest(cfg, dim, seed)
		f.readState(sr)
		out.forests[dim] = f
	}
	if err := sr.done(); err != nil {
		return err
	}
	*r = *out
	return nil
}

// readCoords reads coordinates, which rrcfCoord made finite, within ±1e100 and never −0.
func readCoords(sr *snapReader, v []float64, field string) {
	sr.floats(v, field)
	for _, c := range v {
		if sr.err == nil && !(c >= -rrcfClip && c <= rrcfClip && (c != 0 || !math.Signbit(c))) {
			sr.fail("%s: %v is not a coordinate", field, c)
		}
	}
}

// readState restores a forest written by MarshalBinary into a fresh one.
func (f *rrcfForest) readState(sr *snapReader) {
	f.n = sr.intIn(0, f.size, "points held")
	f.head = sr.intIn(0, f.size-1, "head")
	f.seen = sr.uvar("points seen")
	if sr.err == nil && (f.n < f.size && f.head != f.n || f.seen < uint64(f.n)) {
		sr.fail("FIFO at %d holding %d of %d after %d points", f.head, f.n, f.size, f.seen)
	}
	if state := sr.raw("generator state"); sr.err == nil {
		if err := f.pcg.UnmarshalBinary(state); err != nil {
			sr.fail("generator state: %v", err)
		}
	}
	if sr.err != nil {
		return
	}
	readCoords(sr, f.points[:f.n*f.dim], "points")
	for t := range f.trees {
		if sr.err != nil {
			return
		}
		f.readTree(sr, &f.trees[t])
	}
}

// readTree rebuilds one tree from its preorder and checks it.
func (f *rrcfForest) readTree(sr *snapReader, tr *rrcfTree) {
	for i := range tr.leafOf {
		tr.leafOf[i] = -1
	}
	if sr.left() > 0 && sr.b[sr.off] == 0 { // an empty tree
		sr.off++
		if f.n != 0 {
			sr.fail("an empty tree in a forest holding %d points", f.n)
		}
		return
	}
	ref, _ := f.readNode(sr, tr, -1)
	if sr.err != nil {
		return
	}
	tr.root = ref
	// Every point held must reach, by the cuts, a leaf holding its coordinates; a leaf
	// names the newest of its duplicates, which FIFO evicts last.
	counts := make(map[int32]int32)
	for s := range int32(f.n) {
		p := f.point(s)
		node := tr.root
		for node >= 0 {
			b := &tr.br[node]
			node = b.child[b2u(p[b.dim] > b.cut)]
		}
		l := ^node
		if q := f.point(tr.lf[l].slot); !slices.Equal(p, q) {
			sr.fail("point in slot %d reaches a leaf holding another point", s)
			return
		}
		if tr.leafOf[s] != l {
			if tr.leafOf[s] != -1 || f.age(s) >= f.age(tr.lf[l].slot) {
				sr.fail("slot %d is not the newest duplicate of its leaf", s)
				return
			}
			tr.leafOf[s] = l
		}
		counts[l]++
	}
	for l, c := range counts {
		if c != tr.lf[l].n {
			sr.fail("leaf holds %d duplicates, %d points reach it", tr.lf[l].n, c)
			return
		}
	}
	if len(counts) != len(tr.lf)-tr.freeCount() {
		sr.fail("a leaf no point reaches")
	}
}

// age ranks slots from the oldest point held (0) to the newest.
func (f *rrcfForest) age(s int32) int { return (int(s) - f.head + f.size) % f.size }

func (tr *rrcfTree) freeCount() int {
	n := 0
	for l := tr.freeL; l >= 0; l = tr.lf[l].parent {
		n++
	}
	return n
}

// readNode rebuilds the subtree whose preorder starts here under parent, returning its
// ref and point count.
func (f *rrcfForest) readNode(sr *snapReader, tr *rrcfTree, parent int32) (int32, int32) {
	switch sr.u8("node") {
	case 1:
		slot := sr.intIn(0, max(f.n-1, 0), "leaf slot")
		n := sr.intIn(1, f.n, "leaf count")
		if sr.err != nil {
			return 0, 0
		}
		if f.n == 0 || tr.leafOf[slot] != -1 || tr.freeL < 0 {
			sr.fail("leaf for slot %d: no such point, a second leaf, or too many leaves", slot)
			return 0, 0
		}
		l := tr.allocLeaf()
		tr.lf[l] = rrcfLeaf{parent: parent, n: int32(n), slot: int32(slot)}
		tr.leafOf[slot] = l
		return ^l, int32(n)
	case 2:
		dim := sr.intIn(0, f.dim-1, "cut dimension")
		cut := sr.f64("cut")
		if sr.err != nil {
			return 0, 0
		}
		if tr.freeB < 0 {
			sr.fail("more branches than a tree of %d points has", f.size)
			return 0, 0
		}
		b := tr.allocBranch()
		left, ln := f.readNode(sr, tr, b)
		right, rn := f.readNode(sr, tr, b)
		if sr.err != nil {
			return 0, 0
		}
		_, lhi := f.side(tr, left, dim)
		rlo, _ := f.side(tr, right, dim)
		if !(lhi <= cut && cut < rlo) || int64(ln)+int64(rn) > int64(f.n) {
			sr.fail("cut %v in dimension %d does not separate its subtrees", cut, dim)
			return 0, 0
		}
		tr.br[b] = rrcfBranch{cut: cut, child: [2]int32{left, right}, parent: parent, n: ln + rn, dim: int32(dim)}
		box := tr.bounds(b, f.dim)
		for j := range box {
			llo, lhi := f.side(tr, left, j)
			rlo, rhi := f.side(tr, right, j)
			box[j] = [2]float64{min(llo, rlo), max(lhi, rhi)}
		}
		return b, ln + rn
	}
	sr.fail("unknown node tag")
	return 0, 0
}
