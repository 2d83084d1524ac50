package detectors

import (
	"fmt"
	"math"
	"math/rand/v2"
	"unsafe"
)

func init() {
	Register(Info{
		Name: "hst",
		Kind: KindStreaming,
		Doc: "Half-Space Trees (Tan, Ting & Liu 2011): a forest of random, data-independent " +
			"trees that halve the work space [-limit, limit]^d (values outside are clipped); each " +
			"node counts the points of the last complete window (reference mass) while the " +
			"current window is counted beside it, and the two swap every `window` points. A point " +
			"is normal where the reference mass is dense. One forest per partition and feature " +
			"count, shared by its series; multivariate, O(trees·height) per point, fixed memory. " +
			"Score in [0,1], higher is more anomalous: 1 − log2(1+m)/log2(1+2^height), m being " +
			"the density (mass × 2^depth / window, averaged over trees) where the point stops. " +
			"Returns 0 until the first window is complete.",
		Params: []Param{
			{Name: "trees", Doc: "trees in the forest", Default: 25, Min: 1, Max: 500, Integer: true},
			{Name: "height", Doc: "depth of every tree; memory is trees × 2^(height+1) × 16 bytes", Default: 15, Min: 2, Max: 25, Integer: true},
			{Name: "window", Doc: "points per mass window (the reference profile is the previous window)", Default: 250, Min: 10, Max: 1e6, Integer: true},
			{Name: "limit", Doc: "half-width of the work space per feature: [-limit, limit]; fits robust-scaled features", Default: 4, Min: 0.01, Max: 1e9},
		},
		NewStreaming: func(p Params, seed uint64) (Streaming, error) {
			return NewHalfSpaceTrees(HSTConfig{
				Trees: p.Int("trees"), Height: p.Int("height"), Window: p.Int("window"), Limit: p["limit"],
			}, seed)
		},
	})
}

// HSTConfig is the shape of a Half-Space Trees forest.
type HSTConfig struct {
	Trees  int     // trees in the forest
	Height int     // depth of the leaves; a tree has 2^(Height+1)−1 nodes
	Window int     // points per mass window
	Limit  float64 // the work space is [−Limit, Limit] in every dimension
}

const (
	// HSTMaxForestBytes caps one forest so that a spec cannot ask for trees=500, height=25
	// (half a terabyte) and take the process down when the first record arrives.
	HSTMaxForestBytes = 1 << 30
	// HSTMaxForests caps the feature counts a partition builds forests for: each costs
	// HSTForestBytes, and a topic whose records carry ever-new feature counts must not grow
	// memory without bound. Records of further widths score 0.
	HSTMaxForests = 8
	// hstMaxDims is what a node's uint16 split dimension can address.
	hstMaxDims = 1 << 16
	// hstSweepEpoch is where the uint16 window counter is renumbered (see advance).
	hstSweepEpoch = math.MaxUint16
)

// hstNode is one node of a tree, 16 bytes so four share a cache line. Masses are counts
// below Window ≤ 1e6, so uint32; split values need no more than float32 (2^-25 of the work
// space at height 25). epoch is the window whose latest mass l holds, which makes the
// window swap lazy: instead of copying l into r in every node every Window points (26 MB of
// memory traffic at the defaults), a node is brought up to date when a point next visits it.
type hstNode struct {
	split float32 // points with x[dim] < split go left; unused at the leaves
	r, l  uint32  // reference mass (last complete window), latest mass (current window)
	dim   uint16
	epoch uint16
}

// b2u is 1 for true: the compiler turns it into a flag read, not a branch.
func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// HalfSpaceTrees is the hst detector: one forest per feature count, built on first use.
// Series with the same feature count share their partition's forest, as the pipeline's
// robust-scaled features make series comparable; the series name is not used.
type HalfSpaceTrees struct {
	cfg     HSTConfig
	seed    uint64
	forests map[int]*hstForest
	last    *hstForest // the forest of the previous call: widths rarely change
}

// NewHalfSpaceTrees checks cfg and returns an empty detector; forests are allocated (and
// their memory, HSTForestBytes each, taken) when the first record of a width arrives.
func NewHalfSpaceTrees(cfg HSTConfig, seed uint64) (*HalfSpaceTrees, error) {
	switch {
	case cfg.Trees < 1:
		return nil, fmt.Errorf("hst: trees = %d must be at least 1", cfg.Trees)
	case cfg.Height < 1 || cfg.Height > 30:
		return nil, fmt.Errorf("hst: height = %d must be in [1, 30]", cfg.Height)
	case cfg.Window < 1 || cfg.Window > math.MaxUint32:
		return nil, fmt.Errorf("hst: window = %d must be in [1, %d]", cfg.Window, uint32(math.MaxUint32))
	case !(cfg.Limit > 0) || math.IsInf(cfg.Limit, 0):
		return nil, fmt.Errorf("hst: limit = %v must be positive and finite", cfg.Limit)
	}
	if b := HSTForestBytes(cfg); b > HSTMaxForestBytes {
		return nil, fmt.Errorf("hst: trees = %d and height = %d need %d MiB per forest, over the %d MiB limit; lower height or trees",
			cfg.Trees, cfg.Height, b>>20, HSTMaxForestBytes>>20)
	}
	return &HalfSpaceTrees{cfg: cfg, seed: seed, forests: make(map[int]*hstForest)}, nil
}

// HSTForestBytes is the memory of one forest with cfg, whatever its feature count (scratch
// space per feature is negligible): trees × (2^(height+1) − 1) nodes × 16 bytes.
func HSTForestBytes(cfg HSTConfig) int {
	return cfg.Trees * (1<<(cfg.Height+1) - 1) * int(unsafe.Sizeof(hstNode{}))
}

// SizeBytes is the memory held by the forests built so far.
func (h *HalfSpaceTrees) SizeBytes() int {
	n := 0
	for _, f := range h.forests {
		n += len(f.nodes)*int(unsafe.Sizeof(hstNode{})) + len(f.xs)*4 + len(f.acc)*8 +
			len(f.locs)*4 + len(f.path)*4 + len(f.best)*4 + len(f.bestDim)*2
	}
	return n
}

// ScoreLearn implements Streaming. NaN features are taken as 0 (the centre of the work
// space). Contributions credit, in each tree, the split dimension at which x's path loses
// the most reference mass beyond the half a uniform density would keep, weighted by that
// loss: the feature that took x out of dense space.
func (h *HalfSpaceTrees) ScoreLearn(_ string, x, contrib []float64) float64 {
	f := h.last
	if f == nil || f.d != len(x) {
		f = h.forests[len(x)]
		if f == nil {
			if len(x) == 0 || len(x) > hstMaxDims || len(h.forests) >= HSTMaxForests {
				if contrib != nil {
					clear(contrib[:len(x)])
				}
				return 0
			}
			f = newHSTForest(h.cfg, len(x), h.seed)
			h.forests[len(x)] = f
		}
		h.last = f
	}
	return f.scoreLearn(x, contrib)
}

// hstForest is the forest for one feature count: all trees' nodes in one flat array, each
// tree a complete binary tree in breadth-first order, plus scratch so that scoring
// allocates nothing.
type hstForest struct {
	d, trees, height int
	nodesPerTree     int
	sizeLimit        uint32 // a node with reference mass below this ends the scoring path
	lo, hi           float64
	massNorm         float64 // 1 / (trees · window)
	logMax           float64 // log2(1 + 2^height), the largest possible log2(1 + m)

	nodes  []hstNode
	window int
	count  int    // points in the current window
	epoch  uint16 // the current window's number, ≥ 1
	warm   bool   // a complete window exists, so reference masses mean something

	xs      []float32 // x clipped to the work space
	locs    []int32   // per tree: the node reached, within the tree (children of i: 2i+1, 2i+2)
	path    []int32   // [depth·trees + tree]: index in nodes of the node x reached
	best    []int32   // per tree: twice the largest mass loss on the scoring path
	bestDim []uint16
	acc     []float64 // contribution per feature
}

func newHSTForest(cfg HSTConfig, d int, seed uint64) *hstForest {
	per := 1<<(cfg.Height+1) - 1
	f := &hstForest{
		d: d, trees: cfg.Trees, height: cfg.Height, nodesPerTree: per,
		sizeLimit: uint32(math.Ceil(0.1 * float64(cfg.Window))), // 0.1·window as in the paper
		lo:        -cfg.Limit, hi: cfg.Limit,
		massNorm: 1 / (float64(cfg.Trees) * float64(cfg.Window)),
		logMax:   math.Log2(1 + math.Ldexp(1, cfg.Height)),
		nodes:    make([]hstNode, cfg.Trees*per),
		window:   cfg.Window,
		epoch:    1, // nodes start at epoch 0 = the (empty) previous window
		xs:       make([]float32, d),
		locs:     make([]int32, cfg.Trees),
		path:     make([]int32, cfg.Trees*(cfg.Height+1)),
		best:     make([]int32, cfg.Trees),
		bestDim:  make([]uint16, cfg.Trees),
		acc:      make([]float64, d),
	}
	// The stream seed with the width, so a forest does not depend on which widths came first.
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	blo, bhi := make([]float64, d), make([]float64, d)
	width := f.hi - f.lo
	for t := range f.trees {
		// The paper's random perturbation of the work space, milder: each dimension's space
		// is twice [lo, hi] and contains it, shifted by a random amount, so the first cut
		// falls anywhere in [lo, hi] and trees do not share a grid of cuts.
		for q := range d {
			s := rng.Float64() * width
			blo[q], bhi[q] = f.lo-s, f.hi+width-s
		}
		f.build(rng, f.nodes[t*per:(t+1)*per], 0, 0, blo, bhi)
	}
	return f
}

// build gives node i at depth its split: a random dimension, cut at the middle of the
// node's range in it, so each child has half the volume and r·2^depth estimates density.
func (f *hstForest) build(rng *rand.Rand, tree []hstNode, i, depth int, blo, bhi []float64) {
	if depth == f.height {
		return
	}
	q := rng.IntN(f.d)
	lo, hi := blo[q], bhi[q]
	mid := lo + (hi-lo)/2
	tree[i].dim, tree[i].split = uint16(q), float32(mid)
	bhi[q] = mid
	f.build(rng, tree, 2*i+1, depth+1, blo, bhi)
	bhi[q], blo[q] = hi, mid
	f.build(rng, tree, 2*i+2, depth+1, blo, bhi)
	blo[q] = lo
}

func (f *hstForest) scoreLearn(x, contrib []float64) float64 {
	for q, v := range x {
		if v != v {
			v = 0
		}
		f.xs[q] = float32(min(max(v, f.lo), f.hi))
	}
	warm := f.warm
	f.learn()
	var mass uint64
	if warm {
		mass = f.score(contrib != nil)
	}
	if f.count++; f.count == f.window {
		f.advance()
	}

	if contrib != nil {
		c := contrib[:len(x)]
		if !warm {
			clear(c)
		} else {
			clear(f.acc)
			sum := 0.0
			for t, b := range f.best {
				if b > 0 {
					f.acc[f.bestDim[t]] += float64(b)
					sum += float64(b)
				}
			}
			copy(c, f.acc)
			normalizeShares(c, sum)
		}
	}
	if !warm {
		return 0
	}
	s := 1 - math.Log2(1+float64(mass)*f.massNorm)/f.logMax
	return min(max(s, 0), 1)
}

// learn counts x in the latest mass of every node on its path in every tree, and records
// the paths for score. Learning comes first because it does not change reference masses,
// and this way the nodes are in cache when score reads them.
//
// Trees are walked level by level rather than one after the other: their nodes at one
// level are independent loads, so the cache misses of the deep levels overlap instead of
// queueing. The side of a split is computed without a branch: for the branch predictor
// it is a coin flip.
func (f *hstForest) learn() {
	epoch, prev := f.epoch, f.epoch-1
	nodes, xs, locs := f.nodes, f.xs, f.locs
	per := f.nodesPerTree
	clear(locs)
	for depth := 0; depth <= f.height; depth++ {
		row := f.path[depth*f.trees : (depth+1)*f.trees]
		for t := range row {
			g := t*per + int(locs[t])
			row[t] = int32(g)
			n := &nodes[g]
			if n.epoch != epoch { // first visit in this window: swap lazily
				r := n.l
				if n.epoch != prev {
					r = 0
				}
				n.r, n.l, n.epoch = r, 0, epoch
			}
			n.l++
			locs[t] = 2*locs[t] + 1 + int32(b2u(xs[n.dim] >= n.split))
		}
	}
}

// score walks the recorded paths down to the first node whose reference mass r is below
// the size limit (or to the leaf) and returns Σ r·2^depth there over the trees, exact in
// integers (r < 2^32, depth ≤ 30, trees ≤ 500). With attrib it keeps, per tree, the edge
// losing the most mass beyond halving (parentR − 2r, twice that loss) and its split
// dimension.
func (f *hstForest) score(attrib bool) uint64 {
	nodes, path, limit, h, trees := f.nodes, f.path, f.sizeLimit, f.height, f.trees
	var mass uint64
	for t := range trees {
		var parentR uint32
		var parentDim, bestDim uint16
		best := int32(0)
		for depth := 0; ; depth++ {
			n := &nodes[path[depth*trees+t]]
			r := n.r
			if attrib {
				if loss := int32(parentR) - 2*int32(r); loss > best {
					best, bestDim = loss, parentDim
				}
			}
			if r < limit || depth == h {
				mass += uint64(r) << depth
				break
			}
			parentR, parentDim = r, n.dim
		}
		f.best[t], f.bestDim[t] = best, bestDim
	}
	return mass
}

// advance closes the current window: its latest masses become the reference. Nodes catch
// up lazily (see hstNode), except every 65534 windows, when the uint16 window number is
// about to wrap and one full pass brings every node up to date and renumbers it to 1.
func (f *hstForest) advance() {
	f.count, f.warm = 0, true
	f.epoch++
	if f.epoch < hstSweepEpoch {
		return
	}
	prev := f.epoch - 1
	for i := range f.nodes {
		n := &f.nodes[i]
		if n.epoch == prev {
			n.r = n.l
		} else {
			n.r = 0
		}
		n.l, n.epoch = 0, 1
	}
	f.epoch = 1
}
