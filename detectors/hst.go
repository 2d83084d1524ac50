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
			"Score in [0,1], higher is more anomalous: 1 − log2(1+m)/(height+1), m being the " +
			"densities (mass × 2^depth / window) summed down the point's path to where it stops, " +
			"averaged over trees; the sum over the path, as River has it, ranks better than the " +
			"paper's last node alone. Returns 0 until the first window is complete.",
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

// hstNode is one node of a tree, 16 bytes so four share a cache line. Masses are counts up
// to Window, so uint32; float32 splits resolve a dimension to about 2^-22 of its work space,
// finer than any window's points can populate. epoch is the window whose latest mass l
// holds, which makes the window swap lazy: instead of copying l into r in every node every
// Window points (26 MB of memory traffic at the defaults), a node is brought up to date
// when a point next visits it.
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
	case cfg.Height < 1 || cfg.Height > 25:
		return nil, fmt.Errorf("hst: height = %d must be in [1, 25]", cfg.Height)
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
			len(f.locs)*4 + len(f.trail)*8 + len(f.best)*8
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
				return math.NaN() // a width we hold no forest for: no judgement
			}
			f = newHSTForest(h.cfg, len(x), h.seed)
			h.forests[len(x)] = f
		}
		h.last = f
	}
	return f.scoreLearn(x, contrib)
}

// hstForest is the forest for one feature count, with scratch so that scoring allocates
// nothing. All trees' nodes are in one flat array, level by level: level d holds 2^d nodes
// of each tree, tree after tree, so the node of tree t at position p of level d sits at
// trees·(2^d − 1) + t·2^d + p, and its children at position 2p and 2p+1 of level d+1. A
// descent then tracks one index per tree (q = t·2^d + p, child 2q or 2q+1) with no per-tree
// offset, and the upper levels of all trees, which every point visits, share cache lines.
type hstForest struct {
	d, trees, height int
	sizeLimit        uint32 // a node with reference mass below this ends the scoring path
	lo, hi           float64
	massNorm         float64 // 1 / (trees · window)
	logMax           float64 // height + 1 = log2(1 + 2^(height+1) − 1), the largest possible log2(1 + m)

	nodes  []hstNode
	window int
	count  int    // points in the current window
	epoch  uint16 // the current window's number, ≥ 1
	warm   bool   // a complete window exists, so reference masses mean something

	xs    []float32 // x clipped to the work space
	locs  []uint32  // per tree: its node's index within the current level
	trail []uint64  // [depth·trees + tree]: r<<16 | dim of the node x reached
	best  []int64   // per tree: the largest (parentR − 2r)<<16 | parentDim on the scoring path
	acc   []float64 // contribution per feature
}

// level returns the nodes of depth d, all trees.
func (f *hstForest) level(d int) []hstNode {
	return f.nodes[f.trees*(1<<d-1) : f.trees*(1<<(d+1)-1)]
}

func newHSTForest(cfg HSTConfig, d int, seed uint64) *hstForest {
	f := &hstForest{
		d: d, trees: cfg.Trees, height: cfg.Height,
		sizeLimit: uint32(math.Ceil(0.1 * float64(cfg.Window))), // 0.1·window as in the paper
		lo:        -cfg.Limit, hi: cfg.Limit,
		massNorm: 1 / (float64(cfg.Trees) * float64(cfg.Window)),
		logMax:   float64(cfg.Height + 1),
		nodes:    make([]hstNode, cfg.Trees*(1<<(cfg.Height+1)-1)),
		window:   cfg.Window,
		epoch:    1, // nodes start at epoch 0 = the (empty) previous window
		xs:       make([]float32, d),
		locs:     make([]uint32, cfg.Trees),
		trail:    make([]uint64, cfg.Trees*(cfg.Height+1)),
		best:     make([]int64, cfg.Trees),
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
		f.build(rng, 0, t, blo, bhi)
	}
	return f
}

// build gives the node at level index q of depth d its split, then its subtree's: a random
// dimension, cut at the middle of the node's range in it, so each child has half the
// volume and r·2^depth estimates density.
func (f *hstForest) build(rng *rand.Rand, d, q int, blo, bhi []float64) {
	if d == f.height {
		return
	}
	dim := rng.IntN(f.d)
	lo, hi := blo[dim], bhi[dim]
	mid := lo + (hi-lo)/2
	n := &f.level(d)[q]
	n.dim, n.split = uint16(dim), float32(mid)
	bhi[dim] = mid
	f.build(rng, d+1, 2*q, blo, bhi)
	bhi[dim], blo[dim] = hi, mid
	f.build(rng, d+1, 2*q+1, blo, bhi)
	blo[dim] = lo
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
		mass = f.score()
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
			for _, b := range f.best {
				if loss := float64(b >> 16); loss > 0 {
					f.acc[uint16(b)] += loss
					sum += loss
				}
			}
			copy(c, f.acc)
			normalizeShares(c, sum)
		}
	}
	if !warm {
		return math.NaN() // no complete reference window yet: no judgement
	}
	s := 1 - math.Log2(1+float64(mass)*f.massNorm)/f.logMax
	return min(max(s, 0), 1)
}

// learn counts x in the latest mass of every node on its path in every tree: every node,
// down to the leaf, because a node with little mass now may hold enough by the window's
// end to be scored. It leaves in trail each visited node's reference mass and split
// dimension, for score.
//
// Trees are walked level by level rather than one after the other: their nodes at one
// level are independent loads, so the cache misses of the deep levels overlap instead of
// queueing. The side of a split is computed without a branch: for the branch predictor
// it is a coin flip.
func (f *hstForest) learn() {
	epoch, prev := f.epoch, f.epoch-1
	xs, locs, trees := f.xs, f.locs, f.trees
	for t := range locs {
		locs[t] = uint32(t)
	}
	for depth := 0; depth <= f.height; depth++ {
		level := f.level(depth)
		trail := f.trail[depth*trees : (depth+1)*trees]
		locs := locs[:len(trail)]
		for t := range trail {
			q := locs[t]
			n := &level[q]
			if n.epoch != epoch { // first visit in this window: swap lazily
				r := n.l
				if n.epoch != prev {
					r = 0
				}
				n.r, n.l, n.epoch = r, 0, epoch
			}
			n.l++
			dim := n.dim
			trail[t] = uint64(n.r)<<16 | uint64(dim)
			locs[t] = 2*q + b2u(xs[dim] >= n.split)
		}
	}
}

// score returns, summed over the trees, Σ r·2^depth over the nodes of x's path from the
// root down to the first node below the size limit (or the leaf), in integers: the sum is
// under trees·window·2^(height+1), which HSTMaxForestBytes keeps below 2^59.
//
// The paper (Tan, Ting & Liu 2011) scores with the last of those nodes only; River sums
// the path, as here. The last node holds fewer than limit points, a noisy count; the
// denser nodes above it add steadier estimates of the density around x at coarser scales
// (NAB machine_temperature ROC-AUC 0.816 against 0.755 over 10 seeds; the mean over NAB's
// labelled series is the same either way).
//
// Reference masses never grow along a path (a point counted in a node was counted in its
// parent, in the same window), so a node is on the scoring path when its parent is dense:
// level by level over the trail for all trees at once, ending at the first level where no
// tree is dense, with no branch per tree. On the way it keeps in best, per tree, the edge
// of the scoring path that loses the most mass beyond halving (parentR − 2r, twice that
// loss) with the parent's split dimension.
func (f *hstForest) score() uint64 {
	trail, trees, h := f.trail, f.trees, f.height
	lim := uint64(f.sizeLimit) << 16 // compared with r<<16 | dim: dim < 2^16 cannot tip it
	best := f.best[:trees]
	clear(best)
	var mass uint64
	for _, r := range trail[:trees] { // the roots
		mass += r >> 16
	}
	for d := 1; d <= h; d++ {
		row := trail[d*trees : (d+1)*trees]
		prow := trail[(d-1)*trees : d*trees]
		dense, level := uint32(0), uint64(0)
		for t, r := range row {
			p := prow[t]
			on := b2u(p >= lim) // the edge into depth d is on the scoring path
			dense |= on
			level += r >> 16 & -uint64(on)
			loss := (int64(p>>16)-2*int64(r>>16))<<16 | int64(p&0xffff)
			best[t] = max(best[t], loss&-int64(on))
		}
		if dense == 0 {
			break
		}
		mass += level << d
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
