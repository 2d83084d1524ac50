package detectors

import (
	"fmt"
	"math"
	"math/rand/v2"
)

func init() {
	Register(Info{
		Name: "eif",
		Kind: KindBatch,
		Doc: "Extended Isolation Forest (Hariri, Carrasco Kind & Brunner 2019): an Isolation " +
			"Forest whose cuts are random hyperplanes, not axis-parallel lines: at each node a " +
			"slope with extension_level+1 standard normal components (the others zero) and an " +
			"intercept drawn uniformly in the node's bounding box. This removes the axis-aligned " +
			"bands of low score that iforest draws around clusters. Trees grow on max_samples " +
			"rows drawn without replacement, to height ceil(log2 ψ); score 2^(−E[h(x)]/c(ψ)) in " +
			"(0, 1], higher is more anomalous. Score O(trees·log ψ·(extension_level+1)) per row.",
		Params: []Param{
			{Name: "trees", Doc: "trees in the forest", Default: 100, Min: 1, Max: 10000, Integer: true},
			{Name: "max_samples", Doc: "rows drawn without replacement to grow each tree; min(max_samples, rows) are used",
				Default: 256, Min: 2, Max: isoMaxSamples, Integer: true},
			{Name: "extension_level", Doc: "non-zero slope components minus one: 0 cuts along one random axis, " +
				"columns−1 (or −1, the default) is fully extended; at most columns−1",
				Default: -1, Min: -1, Max: 1000, Integer: true},
		},
		NewBatch: func(p Params, seed uint64) (Batch, error) {
			return NewExtendedIsolationForest(EIFConfig{
				Trees: p.Int("trees"), MaxSamples: p.Int("max_samples"), ExtensionLevel: p.Int("extension_level"),
			}, seed)
		},
	})
}

// EIFConfig is the shape of an Extended Isolation Forest.
type EIFConfig struct {
	Trees          int // trees in the forest
	MaxSamples     int // rows per tree, capped at the rows fitted on
	ExtensionLevel int // non-zero slope components − 1; −1: all of them (columns − 1)
}

func (c EIFConfig) validate() error {
	switch {
	case c.Trees < 1 || c.Trees > 10000:
		return fmt.Errorf("eif: trees = %d must be in [1, 10000]", c.Trees)
	case c.MaxSamples < 2 || c.MaxSamples > isoMaxSamples:
		return fmt.Errorf("eif: max_samples = %d must be in [2, %d]", c.MaxSamples, isoMaxSamples)
	case c.ExtensionLevel < -1 || c.ExtensionLevel > 1000:
		return fmt.Errorf("eif: extension_level = %d must be in [-1, 1000]", c.ExtensionLevel)
	}
	// Nodes with the smallest slope (one component); Fit checks again with the real one.
	if b := eifBytes(c.Trees, c.MaxSamples, 1, 1); b > isoMaxBytes {
		return fmt.Errorf("eif: trees = %d and max_samples = %d need over %d MiB, over the %d MiB limit; lower one of them",
			c.Trees, c.MaxSamples, b>>20, isoMaxBytes>>20)
	}
	return nil
}

// eifBytes bounds a forest's memory. Hyperplane cuts may leave one side empty, so a tree
// is not bounded by 2ψ−1 nodes but by the full tree of its height, under 4ψ nodes.
func eifBytes(trees, psi, k, d int) int {
	per := 16 + 8 + 4 + 8*k
	if k < d {
		per += 4 * k
	}
	return trees * (4*psi - 1) * per
}

// eifNode is one node. As in iforest, a leaf points at itself, with b = +Inf and the
// all-zero slope that starts every tree's coefficients: slope·x (0, or NaN for an
// infinite x) is never above b, so a descent that has reached a leaf stays there.
type eifNode struct {
	b    float64 // rows with slope·x > b go right; b = slope·p for the drawn intercept p
	off  uint32  // the node's slope is coef[off : off+k] (on features feat[off : off+k])
	left uint32  // index of the left child within the tree; the right child is left+1
}

// ExtendedIsolationForest is the eif detector. Trees are flat like iforest's: tree t is
// nodes[base[t]:base[t+1]], and its slopes coef[cbase[t]:cbase[t+1]], k per inner node.
// Score does not modify it, so a fitted forest may score from several goroutines.
type ExtendedIsolationForest struct {
	cfg     EIFConfig
	seed    uint64
	workers int

	d, psi, k int       // columns, samples per tree, slope components; d == 0: not fitted
	nodes     []eifNode // all trees
	pathLen   []float64 // per node: at a leaf, its depth + c(size), the h(x) of rows ending there
	size      []uint32  // per node: the training rows that reached it
	coef      []float64 // per tree: k zeros (the leaves' slope), then k per inner node
	feat      []uint32  // their features, likewise; nil when k == d (every feature, in order)
	base      []uint32  // tree t is nodes[base[t]:base[t+1]]
	cbase     []uint32  // tree t's slopes start at coef[cbase[t]]
	steps     []uint8   // per tree: the depth of its deepest leaf, the steps of a descent
	inv       float64   // 1 / (trees · c(ψ)), or 0 when c(ψ) = 0
}

// NewExtendedIsolationForest checks cfg and returns an unfitted forest. Whether
// extension_level fits the data is known, and checked, at Fit.
func NewExtendedIsolationForest(cfg EIFConfig, seed uint64) (*ExtendedIsolationForest, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &ExtendedIsolationForest{cfg: cfg, seed: seed, workers: 1}, nil
}

// SetWorkers implements Parallel: Fit grows trees and Score scores rows on n goroutines.
func (f *ExtendedIsolationForest) SetWorkers(n int) { f.workers = max(n, 1) }

// Fit implements Batch; values must be finite and extension_level at most columns − 1.
func (f *ExtendedIsolationForest) Fit(X Matrix) error {
	if err := isoCheckFit("eif", X); err != nil {
		return err
	}
	d := X.Cols
	k := d
	if e := f.cfg.ExtensionLevel; e >= 0 {
		if e > d-1 {
			return fmt.Errorf("eif: extension_level = %d must be at most columns − 1 = %d (or −1 for fully extended)", e, d-1)
		}
		k = e + 1
	}
	psi := min(f.cfg.MaxSamples, X.Rows)
	if b := eifBytes(f.cfg.Trees, psi, k, d) + psi*d*8*f.workers; b > isoMaxBytes {
		return fmt.Errorf("eif: trees = %d, max_samples = %d and %d columns need %d MiB, over the %d MiB limit",
			f.cfg.Trees, psi, d, b>>20, isoMaxBytes>>20)
	}
	trees := make([]eifTree, f.cfg.Trees)
	isoForEach(f.cfg.Trees, f.workers, 1, func(lo, hi int) {
		b := newEIFBuilder(X, psi, k)
		for t := lo; t < hi; t++ {
			trees[t] = b.grow(rand.New(rand.NewPCG(f.seed, uint64(t))))
		}
	})
	g := ExtendedIsolationForest{cfg: f.cfg, seed: f.seed, workers: f.workers, d: d, psi: psi, k: k,
		base: []uint32{0}, cbase: []uint32{0}}
	for _, t := range trees {
		g.nodes = append(g.nodes, t.nodes...)
		g.pathLen = append(g.pathLen, t.pathLen...)
		g.steps = append(g.steps, t.steps)
		g.size = append(g.size, t.size...)
		g.coef = append(g.coef, t.coef...)
		if k < d {
			g.feat = append(g.feat, t.feat...)
		}
		g.base = append(g.base, uint32(len(g.nodes)))
		g.cbase = append(g.cbase, uint32(len(g.coef)))
	}
	g.inv = isoScoreNorm(g.psi, len(g.steps))
	*f = g
	return nil
}

// eifTree is one grown tree before the forest packs it.
type eifTree struct {
	nodes   []eifNode
	pathLen []float64
	size    []uint32
	coef    []float64
	feat    []uint32
	steps   uint8
}

type eifBuilder struct {
	X        Matrix
	psi, k   int
	h        int
	sample   []float64 // the tree's rows, copied so that cuts scan contiguous memory
	rows     []int32   // indices into sample, partitioned in place node by node
	perm     []uint32  // scratch for drawing a node's features
	lo, hi   []float64 // a node's bounding box on its slope's features
	picked   map[int]struct{}
	rng      *rand.Rand
	tree     eifTree
	allFeats []uint32 // 0..d−1, the features of a fully extended slope
}

func newEIFBuilder(X Matrix, psi, k int) *eifBuilder {
	d := X.Cols
	b := &eifBuilder{X: X, psi: psi, k: k, h: isoHeight(psi),
		sample: make([]float64, psi*d), rows: make([]int32, psi), perm: make([]uint32, d),
		lo: make([]float64, k), hi: make([]float64, k), picked: make(map[int]struct{}, psi),
		allFeats: make([]uint32, d)}
	for j := range b.allFeats {
		b.allFeats[j] = uint32(j)
	}
	return b
}

func (b *eifBuilder) grow(rng *rand.Rand) eifTree {
	b.rng = rng
	d := b.X.Cols
	isoSample(rng, b.X.Rows, b.psi, b.picked, func(i, r int) {
		copy(b.sample[i*d:(i+1)*d], b.X.Row(r))
		b.rows[i] = int32(i)
	})
	b.tree = eifTree{nodes: make([]eifNode, 1, 2*b.psi), size: make([]uint32, 1, 2*b.psi),
		pathLen: make([]float64, 1, 2*b.psi), coef: make([]float64, b.k)}
	if b.k < d {
		b.tree.feat = make([]uint32, b.k)
	}
	b.split(0, b.rows, 0)
	return b.tree
}

// split makes node i, reached by rows at depth, a leaf or cuts it as the paper does: k
// features (all when fully extended), a standard normal slope on them, an intercept
// uniform in the rows' bounding box. Rows with slope·x > slope·p go right; either side
// may be empty, as in the reference implementation.
func (b *eifBuilder) split(i int, rows []int32, depth int) {
	b.tree.size[i] = uint32(len(rows))
	if depth >= b.h || len(rows) <= 1 {
		b.tree.nodes[i] = eifNode{b: math.Inf(1), left: uint32(i)}
		b.tree.pathLen[i] = float64(depth) + isoAvgPath(len(rows))
		b.tree.steps = max(b.tree.steps, uint8(depth))
		return
	}
	d, k := b.X.Cols, b.k
	feats := b.allFeats
	if k < d { // k distinct features: the first k of a partial shuffle
		for j := range b.perm {
			b.perm[j] = uint32(j)
		}
		for j := range k {
			q := j + b.rng.IntN(d-j)
			b.perm[j], b.perm[q] = b.perm[q], b.perm[j]
		}
		feats = b.perm[:k]
	}
	off := len(b.tree.coef)
	for range feats {
		b.tree.coef = append(b.tree.coef, b.rng.NormFloat64())
	}
	if k < d {
		b.tree.feat = append(b.tree.feat, feats...)
	}
	coef := b.tree.coef[off:]
	for q := range k {
		b.lo[q], b.hi[q] = math.Inf(1), math.Inf(-1)
	}
	for _, r := range rows {
		x := b.sample[int(r)*d : int(r+1)*d]
		for q, j := range feats {
			b.lo[q], b.hi[q] = min(b.lo[q], x[j]), max(b.hi[q], x[j])
		}
	}
	thr := 0.0
	for q := range k {
		p := b.lo[q]
		if b.lo[q] < b.hi[q] {
			p = isoUniform(b.rng, b.lo[q], b.hi[q])
		}
		thr += float64(coef[q] * p)
	}
	m := 0
	for q, r := range rows {
		if !(eifDot(coef, b.featsOf(off), b.sample[int(r)*d:int(r+1)*d]) > thr) {
			rows[m], rows[q] = rows[q], rows[m]
			m++
		}
	}
	left := len(b.tree.nodes)
	b.tree.nodes = append(b.tree.nodes, eifNode{}, eifNode{})
	b.tree.size = append(b.tree.size, 0, 0)
	b.tree.pathLen = append(b.tree.pathLen, 0, 0)
	b.tree.nodes[i] = eifNode{b: thr, off: uint32(off), left: uint32(left)}
	b.split(left, rows[:m], depth+1)
	b.split(left+1, rows[m:], depth+1)
}

func (b *eifBuilder) featsOf(off int) []uint32 {
	if b.k == b.X.Cols {
		return nil
	}
	return b.tree.feat[off : off+b.k]
}

// eifDot is slope·x over the slope's features (feat nil: all, in order). Fit and Score
// share it so that a training row lands in the leaf it was counted in; each product is
// rounded before the sum (float64(…)) so that no platform fuses it differently.
func eifDot(coef []float64, feat []uint32, x []float64) float64 {
	s := 0.0
	if feat == nil {
		x = x[:len(coef)]
		for j, c := range coef {
			s += float64(c * x[j])
		}
		return s
	}
	feat = feat[:len(coef)]
	for j, c := range coef {
		s += float64(c * x[feat[j]])
	}
	return s
}

// Score implements Batch. Like iforest, rows go through the forest in blocks, each tree
// descending a whole block level by level: the slope·x sums of different rows are
// independent, so the CPU overlaps them instead of waiting on one chain of additions.
func (f *ExtendedIsolationForest) Score(X Matrix, out []float64) error {
	if err := isoCheckScore("eif", f.d, X, out); err != nil {
		return err
	}
	if f.workers <= 1 { // no closure: scoring a batch allocates nothing
		f.scoreRows(X, out, 0, X.Rows)
		return nil
	}
	isoForEach(X.Rows, f.workers, 256, func(lo, hi int) { f.scoreRows(X, out, lo, hi) })
	return nil
}

func (f *ExtendedIsolationForest) scoreRows(X Matrix, out []float64, lo, hi int) {
	var q [ifBlock]uint32
	var acc [ifBlock]float64
	d, k := f.d, uint32(f.k)
	block := min(max(2048/d, 16), ifBlock)
	for r0 := lo; r0 < hi; r0 += block {
		nb := min(block, hi-r0)
		acc := acc[:nb]
		clear(acc)
		for t, steps := range f.steps {
			nodes := f.nodes[f.base[t]:f.base[t+1]]
			coef := f.coef[f.cbase[t]:f.cbase[t+1]]
			var feat []uint32
			if f.feat != nil {
				feat = f.feat[f.cbase[t]:f.cbase[t+1]]
			}
			qs := q[:nb]
			clear(qs)
			for range steps {
				for r, i := range qs {
					n := nodes[i]
					var fs []uint32
					if feat != nil {
						fs = feat[n.off : n.off+k]
					}
					x := X.Data[(r0+r)*d : (r0+r+1)*d]
					qs[r] = n.left + b2u(eifDot(coef[n.off:n.off+k], fs, x) > n.b)
				}
			}
			pl := f.pathLen[f.base[t]:f.base[t+1]]
			for r, i := range qs {
				acc[r] += pl[i]
			}
		}
		for r, h := range acc {
			out[r0+r] = isoScore(h, f.inv)
		}
	}
}

// eifVersion is the first byte of the encoding.
const eifVersion = 1

// MarshalBinary implements Persistent: configuration and seed, then, if fitted, per tree
// its nodes: left child (itself at a leaf) and size, and for inner nodes the threshold
// and slope. Leaf path lengths are recomputed on restore by the same code, so they are
// bit for bit the same.
func (f *ExtendedIsolationForest) MarshalBinary() ([]byte, error) {
	w := isoWriter{b: make([]byte, 0, 64+len(f.nodes)*16+len(f.coef)*8+len(f.feat)*4)}
	w.u8(eifVersion)
	w.u64(f.seed)
	w.u32(uint32(f.cfg.Trees))
	w.u32(uint32(f.cfg.MaxSamples))
	w.u32(uint32(int32(f.cfg.ExtensionLevel)))
	w.u32(uint32(f.d))
	if f.d == 0 {
		return w.b, nil
	}
	w.u32(uint32(f.psi))
	w.u32(uint32(f.k))
	for t := range f.steps {
		nodes, size := f.nodes[f.base[t]:f.base[t+1]], f.size[f.base[t]:f.base[t+1]]
		coef := f.coef[f.cbase[t]:f.cbase[t+1]]
		w.u32(uint32(len(nodes)))
		for i, n := range nodes {
			w.u32(n.left)
			w.u32(size[i])
			if int(n.left) == i {
				continue
			}
			w.f64(n.b)
			for _, c := range coef[n.off:][:f.k] {
				w.f64(c)
			}
			if f.feat != nil {
				for _, j := range f.feat[f.cbase[t]:][n.off:][:f.k] {
					w.u32(j)
				}
			}
		}
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent, checking the trees as iforest's decoder does
// (every node reached once, children after parents, sizes adding up, depth within the
// height limit, features in range). On error f is unchanged.
func (f *ExtendedIsolationForest) UnmarshalBinary(data []byte) error {
	r := isoReader{name: "eif", b: data}
	if v := r.u8(); r.err == nil && v != eifVersion {
		return fmt.Errorf("eif: unknown encoding version %d (this build reads %d)", v, eifVersion)
	}
	seed := r.u64()
	cfg := EIFConfig{Trees: int(r.u32()), MaxSamples: int(r.u32()), ExtensionLevel: int(int32(r.u32()))}
	d := int(r.u32())
	if r.err != nil {
		return r.err
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	g := ExtendedIsolationForest{cfg: cfg, seed: seed, workers: max(f.workers, 1), d: d}
	if d == 0 {
		if len(r.b) != 0 {
			return fmt.Errorf("eif: %d bytes after an unfitted model", len(r.b))
		}
		*f = g
		return nil
	}
	g.psi, g.k = int(r.u32()), int(r.u32())
	if r.err != nil {
		return r.err
	}
	wantK := d
	if cfg.ExtensionLevel >= 0 {
		wantK = cfg.ExtensionLevel + 1
	}
	switch {
	case g.psi < 1 || g.psi > cfg.MaxSamples:
		return fmt.Errorf("eif: decoding: %d samples per tree, max_samples is %d", g.psi, cfg.MaxSamples)
	case g.k != wantK || g.k > d:
		return fmt.Errorf("eif: decoding: slopes of %d components for extension_level %d and %d columns", g.k, cfg.ExtensionLevel, d)
	}
	height := isoHeight(g.psi)
	maxNodes := 1<<(height+1) - 1
	inner := 16 + 8*g.k // bytes of an inner node's record
	if g.k < d {
		inner += 4 * g.k
	}
	g.base, g.cbase = make([]uint32, 1, cfg.Trees+1), make([]uint32, 1, cfg.Trees+1)
	g.steps = make([]uint8, cfg.Trees)
	var seen []uint8 // per node of the tree being read: its depth + 1 once reached, else 0
	for t := range cfg.Trees {
		count := int(r.u32())
		if r.err != nil {
			return r.err
		}
		if count < 1 || count > maxNodes {
			return fmt.Errorf("eif: decoding tree %d: %d nodes, at most %d for %d samples", t, count, maxNodes, g.psi)
		}
		if !r.need(count * 8) {
			return r.err
		}
		seen = append(seen[:0], make([]uint8, count)...)
		seen[0] = 1
		at, cat := len(g.nodes), len(g.coef)
		g.coef = append(g.coef, make([]float64, g.k)...) // the leaves' zero slope
		if g.k < d {
			g.feat = append(g.feat, make([]uint32, g.k)...)
		}
		for i := range count {
			left, size := r.u32(), r.u32()
			if r.err != nil {
				return r.err
			}
			g.size = append(g.size, size)
			if seen[i] == 0 {
				return fmt.Errorf("eif: decoding tree %d: node %d is not reached from the root", t, i)
			}
			dep := int(seen[i]) - 1
			if int(left) == i {
				g.nodes = append(g.nodes, eifNode{b: math.Inf(1), left: left})
				g.pathLen = append(g.pathLen, float64(dep)+isoAvgPath(int(size)))
				g.steps[t] = max(g.steps[t], uint8(dep))
				continue
			}
			l := int(left)
			switch {
			case l <= i || l+1 >= count || seen[l] != 0 || seen[l+1] != 0:
				return fmt.Errorf("eif: decoding tree %d: node %d has children %d and %d", t, i, l, l+1)
			case dep+1 > height:
				return fmt.Errorf("eif: decoding tree %d: node %d is deeper than the height limit %d", t, l, height)
			case !r.need(inner - 8):
				return r.err
			}
			seen[l], seen[l+1] = uint8(dep+2), uint8(dep+2)
			n := eifNode{b: r.f64(), off: uint32(len(g.coef) - cat), left: left}
			for range g.k {
				g.coef = append(g.coef, r.f64())
			}
			if g.k < d {
				for range g.k {
					j := r.u32()
					if int(j) >= d {
						return fmt.Errorf("eif: decoding tree %d: node %d cuts on feature %d of %d", t, i, j, d)
					}
					g.feat = append(g.feat, j)
				}
			}
			g.nodes = append(g.nodes, n)
			g.pathLen = append(g.pathLen, 0)
		}
		// Sizes: the root holds ψ rows and children split their parent's rows.
		nodes, size := g.nodes[at:], g.size[at:]
		if size[0] != uint32(g.psi) {
			return fmt.Errorf("eif: decoding tree %d: the root holds %d rows, not %d", t, size[0], g.psi)
		}
		for i, n := range nodes {
			if l := n.left; int(l) != i && uint64(size[l])+uint64(size[l+1]) != uint64(size[i]) {
				return fmt.Errorf("eif: decoding tree %d: node %d of %d rows has children of %d and %d", t, i, size[i], size[l], size[l+1])
			}
		}
		g.base = append(g.base, uint32(len(g.nodes)))
		g.cbase = append(g.cbase, uint32(len(g.coef)))
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("eif: %d bytes after the last tree", len(r.b))
	}
	g.inv = isoScoreNorm(g.psi, len(g.steps))
	*f = g
	return nil
}
