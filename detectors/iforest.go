package detectors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
)

func init() {
	Register(Info{
		Name: "iforest",
		Kind: KindBatch,
		Doc: "Isolation Forest (Liu, Ting & Zhou 2008) with scikit-learn/PyOD semantics: each tree " +
			"grows on max_samples rows drawn without replacement, splitting on a random feature at a " +
			"uniform random threshold within the node's range, down to height ceil(log2 ψ) with " +
			"ψ = min(max_samples, rows). Anomalies are isolated in few splits. Score " +
			"2^(−E[h(x)]/c(ψ)) in (0, 1], higher is more anomalous (about 0.5 and below is normal); " +
			"h counts the splits to x's leaf plus c(leaf size). Score O(trees·log ψ) per row. " +
			"Contributions credit the features split on along the row's paths, each split by the " +
			"bits of the row's neighbourhood it removes, log2(parent size / child size).",
		Params: []Param{
			{Name: "trees", Doc: "trees in the forest", Default: 100, Min: 1, Max: 10000, Integer: true},
			{Name: "max_samples", Doc: "rows drawn without replacement to grow each tree; min(max_samples, rows) are used",
				Default: 256, Min: 2, Max: isoMaxSamples, Integer: true},
			{Name: "max_features", Doc: "fraction of the features each tree may split on, drawn per tree (at least one)",
				Default: 1, Min: 0.01, Max: 1},
		},
		NewBatch: func(p Params, seed uint64) (Batch, error) {
			return NewIsolationForest(IForestConfig{
				Trees: p.Int("trees"), MaxSamples: p.Int("max_samples"), MaxFeatures: p["max_features"],
			}, seed)
		},
	})
}

const (
	// isoMaxSamples bounds max_samples so that node indices and sizes fit in uint32 and a
	// tree's height in a byte, with room to spare.
	isoMaxSamples = 1 << 20
	// isoMaxBytes caps a forest and its fitting buffers, so that a spec asking for 10000
	// trees of 2^20 samples fails when it is built rather than taking the process down.
	isoMaxBytes = 1 << 30
	// eulerGamma is the Euler–Mascheroni constant of the harmonic-number approximation in c(n).
	eulerGamma = 0.5772156649015329
)

// IForestConfig is the shape of an Isolation Forest.
type IForestConfig struct {
	Trees       int     // trees in the forest
	MaxSamples  int     // rows per tree, capped at the rows fitted on
	MaxFeatures float64 // fraction of the features each tree may split on, in (0, 1]
}

func (c IForestConfig) validate() error {
	switch {
	case c.Trees < 1 || c.Trees > 10000:
		return fmt.Errorf("iforest: trees = %d must be in [1, 10000]", c.Trees)
	case c.MaxSamples < 2 || c.MaxSamples > isoMaxSamples:
		return fmt.Errorf("iforest: max_samples = %d must be in [2, %d]", c.MaxSamples, isoMaxSamples)
	case !(c.MaxFeatures > 0 && c.MaxFeatures <= 1):
		return fmt.Errorf("iforest: max_features = %v must be in (0, 1]", c.MaxFeatures)
	}
	// A tree of ψ samples has at most 2ψ−1 nodes: every split leaves rows on both sides.
	// Short trees (ψ ≤ 256, whatever max_samples, when rows are few) get a heap copy too.
	if b := c.Trees * ((2*c.MaxSamples-1)*ifNodeBytes + ifHeapBytes); b > isoMaxBytes {
		return fmt.Errorf("iforest: trees = %d and max_samples = %d need up to %d MiB, over the %d MiB limit; lower one of them",
			c.Trees, c.MaxSamples, b>>20, isoMaxBytes>>20)
	}
	return nil
}

// ifNode is one node of a tree, 16 bytes so that four share a cache line and a descent
// step loads one line, not one per field as separate feature/split/child slices would.
// A leaf points at itself with split +Inf: a descent that has reached it stays there, so
// every row takes the same number of steps and the loop needs no leaf test.
type ifNode struct {
	split float64 // rows with x[feat] > split go right (scikit-learn: ≤ goes left)
	feat  uint32
	left  uint32 // index of the left child within the tree; the right child is left+1
}

// ifNodeBytes is the memory of one node: the node, its leaf path length and its size.
const ifNodeBytes = 16 + 8 + 4

// IsolationForest is the iforest detector. Fitted trees are stored flat and contiguous:
// tree t is nodes[base[t]:base[t+1]], root first, with per-node leaf path lengths and
// training sizes in parallel slices. Score and Contributions do not modify it, so a
// fitted forest may score from several goroutines.
type IsolationForest struct {
	cfg     IForestConfig
	seed    uint64
	workers int

	d, psi  int       // columns and samples per tree of the fitted model; d == 0: not fitted
	nodes   []ifNode  // all trees
	pathLen []float64 // per node: at a leaf, its depth + c(size), the h(x) of rows ending there
	size    []uint32  // per node: the training rows that reached it
	base    []uint32  // tree t is nodes[base[t]:base[t+1]]
	steps   []uint8   // per tree: the depth of its deepest leaf, the steps of a descent
	inv     float64   // 1 / (trees · c(ψ)), or 0 when c(ψ) = 0

	heap   []ifHeap // the trees again, in heap order, when they are short and d is small; else nil
	levels int      // the steps of a descent in heap: the deepest leaf of the forest
}

// NewIsolationForest checks cfg and returns an unfitted forest; the seed fixes every
// random draw, tree by tree, so a fit does not depend on the number of workers.
func NewIsolationForest(cfg IForestConfig, seed uint64) (*IsolationForest, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &IsolationForest{cfg: cfg, seed: seed, workers: 1}, nil
}

// SetWorkers implements Parallel: Fit grows trees and Score scores rows on n goroutines.
func (f *IsolationForest) SetWorkers(n int) { f.workers = max(n, 1) }

// Fit implements Batch. Values must be finite: a NaN or infinite feature has no place
// between a node's minimum and maximum.
func (f *IsolationForest) Fit(X Matrix) error {
	if err := isoCheckFit("iforest", X); err != nil {
		return err
	}
	psi := min(f.cfg.MaxSamples, X.Rows)
	if b := psi * X.Cols * 8 * max(f.workers, 1); b > isoMaxBytes {
		return fmt.Errorf("iforest: max_samples = %d rows of %d columns on %d workers need %d MiB to fit, over the %d MiB limit",
			psi, X.Cols, max(f.workers, 1), b>>20, isoMaxBytes>>20)
	}
	nf := max(1, int(f.cfg.MaxFeatures*float64(X.Cols))) // as scikit-learn: a fraction, floored
	height := isoHeight(psi)
	trees := make([]ifTree, f.cfg.Trees)
	isoForEach(f.cfg.Trees, f.workers, 1, func(lo, hi int) {
		b := newIFBuilder(X, psi, nf, height)
		for t := lo; t < hi; t++ {
			trees[t] = b.grow(rand.New(rand.NewPCG(f.seed, uint64(t))))
		}
	})

	total := 0
	for _, t := range trees {
		total += len(t.nodes)
	}
	g := IsolationForest{cfg: f.cfg, seed: f.seed, workers: f.workers, d: X.Cols, psi: psi,
		nodes: make([]ifNode, 0, total), pathLen: make([]float64, 0, total), size: make([]uint32, 0, total),
		base: make([]uint32, 1, len(trees)+1), steps: make([]uint8, len(trees))}
	for i, t := range trees {
		g.nodes = append(g.nodes, t.nodes...)
		g.pathLen = append(g.pathLen, t.pathLen...)
		g.size = append(g.size, t.size...)
		g.base = append(g.base, uint32(len(g.nodes)))
		g.steps[i] = t.steps
	}
	g.inv = isoScoreNorm(g.psi, len(g.steps))
	g.buildHeap()
	*f = g
	return nil
}

// ifTree is one grown tree before the forest packs it.
type ifTree struct {
	nodes   []ifNode
	pathLen []float64
	size    []uint32
	steps   uint8
}

// ifBuilder grows trees with scratch reused from tree to tree.
type ifBuilder struct {
	X          Matrix
	psi, nf, h int
	sample     []float64 // the tree's rows, copied so that splits scan contiguous memory
	rows       []int32   // indices into sample, partitioned in place node by node
	feats      []int     // the features the tree may split on
	cand       []int     // a node's candidate features, the constant ones dropped as found
	picked     map[int]struct{}
	rng        *rand.Rand
	tree       ifTree
}

func newIFBuilder(X Matrix, psi, nf, h int) *ifBuilder {
	return &ifBuilder{X: X, psi: psi, nf: nf, h: h,
		sample: make([]float64, psi*X.Cols), rows: make([]int32, psi),
		feats: make([]int, X.Cols), cand: make([]int, 0, X.Cols), picked: make(map[int]struct{}, psi)}
}

// grow draws the tree's sample (and features) and grows it from the root.
func (b *ifBuilder) grow(rng *rand.Rand) ifTree {
	b.rng = rng
	d := b.X.Cols
	isoSample(rng, b.X.Rows, b.psi, b.picked, func(i, r int) {
		copy(b.sample[i*d:(i+1)*d], b.X.Row(r))
		b.rows[i] = int32(i)
	})
	for j := range b.feats {
		b.feats[j] = j
	}
	if b.nf < d { // a random subset: the first nf of a partial shuffle
		for j := range b.nf {
			k := j + rng.IntN(d-j)
			b.feats[j], b.feats[k] = b.feats[k], b.feats[j]
		}
	}
	b.tree = ifTree{nodes: make([]ifNode, 1, 2*b.psi-1), size: make([]uint32, 1, 2*b.psi-1)}
	b.split(0, b.rows, 0)
	b.tree.pathLen = make([]float64, len(b.tree.nodes))
	b.leaves(0, 0)
	return b.tree
}

// split makes node i, reached by rows at depth, a leaf or splits it as scikit-learn's
// random splitter does: a feature drawn uniformly among those not constant in the node,
// a threshold uniform in [min, max) of it; rows at or below the threshold go left.
func (b *ifBuilder) split(i int, rows []int32, depth int) {
	b.tree.size[i] = uint32(len(rows))
	b.tree.nodes[i] = ifNode{split: math.Inf(1), left: uint32(i)}
	if depth >= b.h || len(rows) <= 1 {
		return
	}
	d := b.X.Cols
	cand := append(b.cand[:0], b.feats[:b.nf]...)
	for len(cand) > 0 {
		k := b.rng.IntN(len(cand))
		j := cand[k]
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range rows {
			v := b.sample[int(r)*d+j]
			lo, hi = min(lo, v), max(hi, v)
		}
		if !(lo < hi) {
			cand[k] = cand[len(cand)-1]
			cand = cand[:len(cand)-1]
			continue
		}
		s := isoUniform(b.rng, lo, hi)
		// Partition: rows ≤ s first. Both sides are non-empty as lo ≤ s < hi.
		m := 0
		for q, r := range rows {
			if b.sample[int(r)*d+j] <= s {
				rows[m], rows[q] = rows[q], rows[m]
				m++
			}
		}
		left := len(b.tree.nodes)
		b.tree.nodes = append(b.tree.nodes, ifNode{}, ifNode{})
		b.tree.size = append(b.tree.size, 0, 0)
		b.tree.nodes[i] = ifNode{split: s, feat: uint32(j), left: uint32(left)}
		b.split(left, rows[:m], depth+1)
		b.split(left+1, rows[m:], depth+1)
		return
	}
	// Every feature is constant here: the rows cannot be told apart, so this is a leaf.
}

// leaves fills the leaf path lengths below node i at depth and the tree's step count.
func (b *ifBuilder) leaves(i, depth int) {
	n := b.tree.nodes[i]
	if int(n.left) == i {
		b.tree.pathLen[i] = float64(depth) + isoAvgPath(int(b.tree.size[i]))
		b.tree.steps = max(b.tree.steps, uint8(depth))
		return
	}
	b.leaves(int(n.left), depth+1)
	b.leaves(int(n.left)+1, depth+1)
}

// Score implements Batch. Rows go through the forest in blocks, each tree (a few KiB)
// scoring the whole block before the next, so that the tree stays in L1 and the descents
// of different rows are independent work the CPU overlaps, instead of one chain of
// dependent loads per row.
func (f *IsolationForest) Score(X Matrix, out []float64) error {
	if err := isoCheckScore("iforest", f.d, X, out); err != nil {
		return err
	}
	if f.workers <= 1 { // no closure: scoring a batch allocates nothing
		f.scoreRange(X, out, 0, X.Rows)
		return nil
	}
	isoForEach(X.Rows, f.workers, 1024, func(lo, hi int) { f.scoreRange(X, out, lo, hi) })
	return nil
}

func (f *IsolationForest) scoreRange(X Matrix, out []float64, lo, hi int) {
	if f.heap != nil {
		f.scoreHeap(X, out, lo, hi)
	} else {
		f.scoreRows(X, out, lo, hi)
	}
}

const (
	// ifHeapLevels is the deepest tree kept in heap order: the default ψ = 256 grows trees
	// of height 8. Deeper trees (ψ > 256) are scored from the nodes by scoreRows.
	ifHeapLevels = 8
	ifHeapSize   = 2 << ifHeapLevels // heap indices 1 … 2^(levels+1) − 1
	ifHeapMask   = ifHeapSize - 1    // k & ifHeapMask == k; it spares the bounds checks
	// ifGroup rows descend a tree together, one register each: eight independent chains
	// of loads keep the CPU busy while each waits for its own.
	ifGroup = 8
	// ifHeapMaxCols bounds the columns: the feature offset f·ifGroup of a transposed group
	// fits a byte, and a group spans at most ifGroupSpan values.
	ifHeapMaxCols = 256 / ifGroup
	ifGroupSpan   = 256 + ifGroup
	// ifHeapCells is the feature values in a block, about 16 KiB, as in scoreRows.
	ifHeapCells = 2048
	ifHeapBytes = ifHeapSize * (1 + 8 + 8)
)

// ifHeap is one tree as a complete binary tree of ifHeapLevels levels in heap order: the
// children of node k are 2k and 2k+1, the root is 1, so a descent needs no child
// pointers. A leaf above the last level becomes a chain of left turns (split +Inf, which
// no value exceeds) down to the last level, where pl holds its path length. Splits are
// kept as isoKeys, compared with the keys of the values.
type ifHeap struct {
	fo    [ifHeapSize]uint8   // split feature × ifGroup: its offset in a transposed group
	split [ifHeapSize]uint64  // isoKey(split): rows with isoKey(x[feature]) > split go right
	pl    [ifHeapSize]float64 // on the last level: the h(x) of the leaf a row ends in
}

// buildHeap fills f.heap from the nodes when every tree and the columns fit it; the
// scores are the same either way, bit for bit: the same comparisons, the same path
// lengths summed in the same order.
func (f *IsolationForest) buildHeap() {
	f.heap, f.levels = nil, 0
	levels := int(slices.Max(f.steps))
	if levels > ifHeapLevels || f.d > ifHeapMaxCols {
		return
	}
	f.heap, f.levels = make([]ifHeap, len(f.steps)), max(levels, 1)
	for t := range f.steps {
		nodes, pl := f.nodes[f.base[t]:f.base[t+1]], f.pathLen[f.base[t]:f.base[t+1]]
		h := &f.heap[t]
		var fill func(i, k, depth int)
		fill = func(i, k, depth int) {
			n := nodes[i]
			if int(n.left) != i {
				h.fo[k], h.split[k] = uint8(n.feat*ifGroup), isoKey(n.split)
				fill(int(n.left), 2*k, depth+1)
				fill(int(n.left)+1, 2*k+1, depth+1)
				return
			}
			for ; depth < f.levels; depth++ {
				h.split[k] = isoKey(math.Inf(1))
				k *= 2
			}
			h.pl[k] = pl[i]
		}
		fill(0, 1, 0)
	}
}

// scoreHeap scores rows [lo, hi) on f.heap. A block's rows are copied feature-major in
// groups of ifGroup (value j of row g·ifGroup+i at xt[g·ifGroup·d + j·ifGroup + i]), so
// that the eight rows of a group find feature j at fixed offsets from one base; the last
// group is padded, and the padding's scores dropped. Values are copied as isoKeys: the
// integer loads and compares shorten each step's chain of latencies (by 12 % measured).
func (f *IsolationForest) scoreHeap(X Matrix, out []float64, lo, hi int) {
	var xt [ifHeapCells + ifGroupSpan]uint64
	var acc [256]float64
	d := f.d
	block := min(ifHeapCells/d, len(acc)) &^ (ifGroup - 1)
	for r0 := lo; r0 < hi; r0 += block {
		nb := min(block, hi-r0)
		ng := (nb + ifGroup - 1) / ifGroup
		for r := range ng * ifGroup {
			g, i := r/ifGroup, r%ifGroup
			dst := xt[g*ifGroup*d+i:]
			if r < nb {
				for j, v := range X.Row(r0 + r) {
					dst[j*ifGroup] = isoKey(v)
				}
			} else {
				for j := range d {
					dst[j*ifGroup] = 0
				}
			}
		}
		acc := acc[:ng*ifGroup]
		clear(acc)
		for t := range f.heap {
			h := &f.heap[t]
			for g := range ng {
				x := (*[ifGroupSpan]uint64)(xt[g*ifGroup*d:])
				// The root is every row's first node: its split is loaded once.
				xr, s := (*[ifGroup]uint64)(x[h.fo[1]:]), h.split[1]
				k0, k1, k2, k3 := 2+b2u(xr[0] > s), 2+b2u(xr[1] > s), 2+b2u(xr[2] > s), 2+b2u(xr[3] > s)
				k4, k5, k6, k7 := 2+b2u(xr[4] > s), 2+b2u(xr[5] > s), 2+b2u(xr[6] > s), 2+b2u(xr[7] > s)
				for range f.levels - 1 {
					i0, i1, i2, i3 := k0&ifHeapMask, k1&ifHeapMask, k2&ifHeapMask, k3&ifHeapMask
					i4, i5, i6, i7 := k4&ifHeapMask, k5&ifHeapMask, k6&ifHeapMask, k7&ifHeapMask
					k0 = 2*k0 + b2u(x[int(h.fo[i0])] > h.split[i0])
					k1 = 2*k1 + b2u(x[int(h.fo[i1])+1] > h.split[i1])
					k2 = 2*k2 + b2u(x[int(h.fo[i2])+2] > h.split[i2])
					k3 = 2*k3 + b2u(x[int(h.fo[i3])+3] > h.split[i3])
					k4 = 2*k4 + b2u(x[int(h.fo[i4])+4] > h.split[i4])
					k5 = 2*k5 + b2u(x[int(h.fo[i5])+5] > h.split[i5])
					k6 = 2*k6 + b2u(x[int(h.fo[i6])+6] > h.split[i6])
					k7 = 2*k7 + b2u(x[int(h.fo[i7])+7] > h.split[i7])
				}
				a := (*[ifGroup]float64)(acc[g*ifGroup:])
				a[0] += h.pl[k0&ifHeapMask]
				a[1] += h.pl[k1&ifHeapMask]
				a[2] += h.pl[k2&ifHeapMask]
				a[3] += h.pl[k3&ifHeapMask]
				a[4] += h.pl[k4&ifHeapMask]
				a[5] += h.pl[k5&ifHeapMask]
				a[6] += h.pl[k6&ifHeapMask]
				a[7] += h.pl[k7&ifHeapMask]
			}
		}
		for r, h := range acc[:nb] {
			out[r0+r] = isoScore(h, f.inv)
		}
	}
}

// ifBlock bounds the rows a block holds; blocks also keep to about 16 KiB of features.
const ifBlock = 256

func (f *IsolationForest) scoreRows(X Matrix, out []float64, lo, hi int) {
	var q [ifBlock]uint32
	var acc [ifBlock]float64
	d := f.d
	block := min(max(2048/d, 16), ifBlock)
	for r0 := lo; r0 < hi; r0 += block {
		nb := min(block, hi-r0)
		xb := X.Data[r0*d : (r0+nb)*d]
		acc := acc[:nb]
		clear(acc)
		for t, steps := range f.steps {
			nodes := f.nodes[f.base[t]:f.base[t+1]]
			qs := q[:nb]
			clear(qs)
			for range steps {
				for r, k := range qs {
					n := nodes[k]
					qs[r] = n.left + b2u(xb[r*d+int(n.feat)] > n.split)
				}
			}
			pl := f.pathLen[f.base[t]:f.base[t+1]]
			for r, k := range qs {
				acc[r] += pl[k]
			}
		}
		for r, h := range acc {
			out[r0+r] = isoScore(h, f.inv)
		}
	}
}

// isoKey maps float64 to uint64 preserving order: for values that are not NaN, a > b
// exactly when isoKey(a) > isoKey(b) (−0 and +0 both map to the key of +0).
func isoKey(v float64) uint64 {
	if v == 0 {
		v = 0
	}
	b := math.Float64bits(v)
	return b ^ (uint64(int64(b)>>63) | 1<<63)
}

// isoScore is 2^(−E[h]/c(ψ)) from Σh and 1/(trees·c(ψ)); with c(ψ) = 0 (one sample per
// tree) every row scores 0.5, as scikit-learn does.
func isoScore(sumH, inv float64) float64 {
	if inv == 0 {
		return 0.5
	}
	return math.Exp2(-sumH * inv)
}

// Contributions implements Contributor. In every tree, each split on x's path credits its
// feature with log2(parent size / child size): the bits of x's training neighbourhood the
// split removes. A feature that cuts x off from the bulk early takes most of the credit;
// the sum over a path is log2(ψ / leaf size), so rows in dense leaves spread little.
func (f *IsolationForest) Contributions(x, contrib []float64) error {
	if err := isoCheckRow("iforest", f.d, x, contrib); err != nil {
		return err
	}
	clear(contrib)
	sum := 0.0
	for t := range f.steps {
		nodes, size := f.nodes[f.base[t]:f.base[t+1]], f.size[f.base[t]:f.base[t+1]]
		for i := uint32(0); nodes[i].left != i; {
			n := nodes[i]
			c := n.left + b2u(x[n.feat] > n.split)
			w := math.Log2(float64(size[i]) / float64(size[c]))
			contrib[n.feat] += w
			sum += w
			i = c
		}
	}
	normalizeShares(contrib, sum)
	return nil
}

// ifVersion is the first byte of the encoding.
const ifVersion = 1

// MarshalBinary implements Persistent: the configuration and seed, then, if fitted, the
// trees' nodes (left child, feature, split, size). Leaf path lengths are recomputed on
// restore, by the same code, so they are bit for bit the same.
func (f *IsolationForest) MarshalBinary() ([]byte, error) {
	w := isoWriter{b: make([]byte, 0, 64+len(f.nodes)*20+len(f.steps)*4)}
	w.u8(ifVersion)
	w.u64(f.seed)
	w.u32(uint32(f.cfg.Trees))
	w.u32(uint32(f.cfg.MaxSamples))
	w.f64(f.cfg.MaxFeatures)
	w.u32(uint32(f.d))
	if f.d == 0 {
		return w.b, nil
	}
	w.u32(uint32(f.psi))
	for t := range f.steps {
		nodes, size := f.nodes[f.base[t]:f.base[t+1]], f.size[f.base[t]:f.base[t+1]]
		w.u32(uint32(len(nodes)))
		for i, n := range nodes {
			w.u32(n.left)
			w.u32(n.feat)
			w.f64(n.split)
			w.u32(size[i])
		}
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent. The trees are checked to be trees (every node
// reached once, children after parents, sizes adding up, depth within the height
// limit), so a corrupt checkpoint is an error, never a panic or an endless descent. On
// error f is unchanged.
func (f *IsolationForest) UnmarshalBinary(data []byte) error {
	r := isoReader{name: "iforest", b: data}
	if v := r.u8(); r.err == nil && v != ifVersion {
		return fmt.Errorf("iforest: unknown encoding version %d (this build reads %d)", v, ifVersion)
	}
	seed := r.u64()
	cfg := IForestConfig{Trees: int(r.u32()), MaxSamples: int(r.u32()), MaxFeatures: r.f64()}
	d := int(r.u32())
	if r.err != nil {
		return r.err
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	g := IsolationForest{cfg: cfg, seed: seed, workers: max(f.workers, 1), d: d}
	if d == 0 {
		if len(r.b) != 0 {
			return fmt.Errorf("iforest: %d bytes after an unfitted model", len(r.b))
		}
		*f = g
		return nil
	}
	g.psi = int(r.u32())
	if r.err == nil && (g.psi < 1 || g.psi > cfg.MaxSamples) {
		return fmt.Errorf("iforest: decoding: %d samples per tree, max_samples is %d", g.psi, cfg.MaxSamples)
	}
	maxNodes, height := 2*g.psi-1, isoHeight(g.psi)
	g.base = make([]uint32, 1, cfg.Trees+1)
	g.steps = make([]uint8, cfg.Trees)
	var seen []uint8 // per node of the tree being read: its depth + 1 once reached, else 0
	for t := range cfg.Trees {
		count := int(r.u32())
		if r.err != nil {
			return r.err
		}
		if count < 1 || count > maxNodes {
			return fmt.Errorf("iforest: decoding tree %d: %d nodes, at most %d for %d samples", t, count, maxNodes, g.psi)
		}
		if !r.need(count * 20) {
			return r.err
		}
		at := len(g.nodes)
		for range count {
			g.nodes = append(g.nodes, ifNode{left: r.u32(), feat: r.u32(), split: r.f64()})
			g.size = append(g.size, r.u32())
			g.pathLen = append(g.pathLen, 0)
		}
		nodes, size, pl := g.nodes[at:], g.size[at:], g.pathLen[at:]
		seen = append(seen[:0], make([]uint8, count)...)
		seen[0] = 1
		if size[0] != uint32(g.psi) {
			return fmt.Errorf("iforest: decoding tree %d: the root holds %d rows, not %d", t, size[0], g.psi)
		}
		for i := range nodes {
			n := &nodes[i]
			if seen[i] == 0 {
				return fmt.Errorf("iforest: decoding tree %d: node %d is not reached from the root", t, i)
			}
			dep := int(seen[i]) - 1
			if int(n.left) == i {
				*n = ifNode{split: math.Inf(1), left: uint32(i)}
				pl[i] = float64(dep) + isoAvgPath(int(size[i]))
				g.steps[t] = max(g.steps[t], uint8(dep))
				continue
			}
			l := int(n.left)
			switch {
			case l <= i || l+1 >= count || seen[l] != 0 || seen[l+1] != 0:
				return fmt.Errorf("iforest: decoding tree %d: node %d has children %d and %d", t, i, l, l+1)
			case int(n.feat) >= d || math.IsNaN(n.split):
				return fmt.Errorf("iforest: decoding tree %d: node %d splits feature %d of %d at %v", t, i, n.feat, d, n.split)
			case size[l] == 0 || size[l+1] == 0 || uint64(size[l])+uint64(size[l+1]) != uint64(size[i]):
				return fmt.Errorf("iforest: decoding tree %d: node %d of %d rows has children of %d and %d", t, i, size[i], size[l], size[l+1])
			case dep+1 > height:
				return fmt.Errorf("iforest: decoding tree %d: node %d is deeper than the height limit %d", t, l, height)
			}
			seen[l], seen[l+1] = uint8(dep+2), uint8(dep+2)
		}
		g.base = append(g.base, uint32(len(g.nodes)))
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("iforest: %d bytes after the last tree", len(r.b))
	}
	g.inv = isoScoreNorm(g.psi, len(g.steps))
	g.buildHeap()
	*f = g
	return nil
}

// isoScoreNorm is 1 / (trees · c(ψ)), which turns a forest's summed path lengths into
// the exponent of 2^(−E[h]/c(ψ)); 0 when c(ψ) is 0 (a sample of one row).
func isoScoreNorm(psi, trees int) float64 {
	if c := isoAvgPath(psi); c > 0 {
		return 1 / (float64(trees) * c)
	}
	return 0
}

// isoAvgPath is c(n), the average path length of an unsuccessful search in a binary
// search tree of n keys (scikit-learn's _average_path_length): what a leaf of n rows adds
// to the depth, since the tree stopped growing before isolating them.
func isoAvgPath(n int) float64 {
	switch {
	case n <= 1:
		return 0
	case n == 2:
		return 1
	}
	m := float64(n)
	return 2*(math.Log(m-1)+eulerGamma) - 2*(m-1)/m
}

// isoHeight is the height limit ceil(log2 ψ) (at least 1): the average depth of a tree
// of ψ points, below which isolating normal points tells nothing.
func isoHeight(psi int) int {
	return max(bits.Len(uint(psi-1)), 1)
}

// isoUniform draws uniformly from [lo, hi) for finite lo < hi, even when hi − lo overflows.
func isoUniform(rng *rand.Rand, lo, hi float64) float64 {
	u := rng.Float64()
	s := lo + u*(hi-lo)
	if math.IsInf(hi-lo, 0) {
		s = lo*(1-u) + hi*u
	}
	if !(s >= lo && s < hi) { // rounding up to hi: scikit-learn falls back to lo as well
		s = lo
	}
	return s
}

// isoSample draws k of the rows [0, n) without replacement (Floyd's algorithm: O(k) draws
// whatever n, so a forest on millions of rows does not shuffle them per tree) and calls
// use(i, row) for i = 0..k−1. picked is scratch.
func isoSample(rng *rand.Rand, n, k int, picked map[int]struct{}, use func(i, row int)) {
	if k >= n {
		for i := range n {
			use(i, i)
		}
		return
	}
	clear(picked)
	i := 0
	for j := n - k; j < n; j++ {
		r := rng.IntN(j + 1)
		if _, dup := picked[r]; dup {
			r = j
		}
		picked[r] = struct{}{}
		use(i, r)
		i++
	}
}

// isoForEach runs fn over [0, n) in up to workers contiguous chunks of at least grain
// items, concurrently, and returns when all are done.
func isoForEach(n, workers, grain int, fn func(lo, hi int)) {
	chunks := min(workers, n/max(grain, 1))
	if chunks <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	per := (n + chunks - 1) / chunks
	for lo := 0; lo < n; lo += per {
		wg.Go(func() { fn(lo, min(lo+per, n)) })
	}
	wg.Wait()
}

func isoCheckFit(name string, X Matrix) error {
	if err := X.Check(); err != nil {
		return fmt.Errorf("%s: fit: %w", name, err)
	}
	if X.Cols >= math.MaxUint32 {
		return fmt.Errorf("%s: fit: %d columns are too many", name, X.Cols)
	}
	for k, v := range X.Data {
		if !finite(v) {
			return fmt.Errorf("%s: fit: row %d, column %d is %v; impute or drop non-finite values first", name, k/X.Cols, k%X.Cols, v)
		}
	}
	return nil
}

func isoCheckScore(name string, d int, X Matrix, out []float64) error {
	if d == 0 {
		return fmt.Errorf("%s: score before fit", name)
	}
	if err := X.Check(); err != nil {
		return fmt.Errorf("%s: score: %w", name, err)
	}
	if X.Cols != d {
		return fmt.Errorf("%s: score: X has %d columns, the model was fitted on %d", name, X.Cols, d)
	}
	if len(out) != X.Rows {
		return fmt.Errorf("%s: score: out holds %d scores for %d rows", name, len(out), X.Rows)
	}
	for k, v := range X.Data {
		if v != v {
			return fmt.Errorf("%s: score: row %d, column %d is NaN; impute missing values first", name, k/X.Cols, k%X.Cols)
		}
	}
	return nil
}

func isoCheckRow(name string, d int, x, contrib []float64) error {
	switch {
	case d == 0:
		return fmt.Errorf("%s: contributions before fit", name)
	case len(x) != d:
		return fmt.Errorf("%s: contributions: x has %d features, the model was fitted on %d", name, len(x), d)
	case len(contrib) != d:
		return fmt.Errorf("%s: contributions: contrib has room for %d features, x has %d", name, len(contrib), d)
	}
	for j, v := range x {
		if v != v {
			return fmt.Errorf("%s: contributions: feature %d is NaN", name, j)
		}
	}
	return nil
}

// isoWriter appends little-endian fields.
type isoWriter struct{ b []byte }

func (w *isoWriter) u8(v uint8)    { w.b = append(w.b, v) }
func (w *isoWriter) u32(v uint32)  { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *isoWriter) u64(v uint64)  { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *isoWriter) f64(v float64) { w.u64(math.Float64bits(v)) }

// isoReader reads little-endian fields; past the end it returns zeros and keeps an error,
// so a decoder checks once per section instead of after every field.
type isoReader struct {
	name string
	b    []byte
	err  error
}

var errIsoTruncated = errors.New("truncated")

func (r *isoReader) need(n int) bool {
	if r.err == nil && (n < 0 || len(r.b) < n) {
		r.err = fmt.Errorf("%s: decoding: %w input", r.name, errIsoTruncated)
	}
	return r.err == nil
}

func (r *isoReader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *isoReader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *isoReader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *isoReader) f64() float64 { return math.Float64frombits(r.u64()) }
