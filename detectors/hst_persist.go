package detectors

import (
	"fmt"
	"math"
	"unsafe"
)

// MarshalBinary implements Persistent: the configuration and seed, then per forest (by
// feature count) its window position and the masses of the nodes that hold any.
//
// The splits are not written: a forest is a pure function of the configuration, the seed
// and its width, so restore rebuilds them (the format version changes if that function
// does). Masses are written as of the current window — a node whose lazy window swap is
// pending is written as it will read — and only where non-zero: two windows of 250 points
// touch at most 500 paths per tree, so a forest at the defaults, 25 MiB in memory, is a
// few tens of KiB on the wire (30 KiB for 10 normal features).
func (h *HalfSpaceTrees) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapHST, 64)
	w.int(h.cfg.Trees)
	w.int(h.cfg.Height)
	w.int(h.cfg.Window)
	w.f64(h.cfg.Limit)
	w.u64(h.seed)
	w.int(len(h.forests))
	for _, d := range sortedInts(h.forests) {
		f := h.forests[d]
		w.int(d)
		w.int(f.count)
		w.int(int(f.epoch))
		w.boolean(f.warm)
		nonzero := 0
		for i := range f.nodes {
			if r, l := f.nodeMass(i); r|l != 0 {
				nonzero++
			}
		}
		w.int(nonzero)
		prev := -1
		for i := range f.nodes {
			r, l := f.nodeMass(i)
			if r|l == 0 {
				continue
			}
			w.int(i - prev - 1) // the gap since the last node written
			w.uvar(uint64(r))
			w.uvar(uint64(l))
			prev = i
		}
	}
	return w.b, nil
}

// nodeMass is node i's reference and latest mass as of the forest's current window.
func (f *hstForest) nodeMass(i int) (r, l uint32) {
	n := &f.nodes[i]
	switch n.epoch {
	case f.epoch:
		return n.r, n.l
	case f.epoch - 1:
		return n.l, 0
	}
	return 0, 0
}

// UnmarshalBinary implements Persistent; it replaces h's configuration and state.
func (h *HalfSpaceTrees) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapHST, "hst")
	if err != nil {
		return err
	}
	cfg := HSTConfig{
		Trees:  r.intIn(1, math.MaxInt32, "trees"),
		Height: r.intIn(1, 25, "height"),
		Window: r.intIn(1, math.MaxUint32, "window"),
		Limit:  r.f64("limit"),
	}
	seed := r.u64("seed")
	nf := r.intIn(0, HSTMaxForests, "forests")
	if r.err != nil {
		return r.err
	}
	out, err := NewHalfSpaceTrees(cfg, seed)
	if err != nil {
		return fmt.Errorf("hst snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	for range nf {
		d := r.intIn(1, hstMaxDims, "feature count")
		if _, dup := out.forests[d]; dup && r.err == nil {
			r.fail("two forests for %d features", d)
		}
		count := r.intIn(0, cfg.Window-1, "count")
		epoch := r.intIn(1, hstSweepEpoch-1, "epoch")
		warm := r.boolean("warm")
		if !warm && epoch != 1 && r.err == nil {
			r.fail("epoch %d before the first window closed", epoch)
		}
		nonzero := r.count(3, "nodes with mass")
		if !r.alloc(HSTForestBytes(cfg)+d*int(unsafe.Sizeof(float64(0)))*2, "forest") {
			break
		}
		f := newHSTForest(cfg, d, seed)
		f.count, f.epoch, f.warm = count, uint16(epoch), warm
		i := -1
		for range nonzero {
			i += 1 + int(min(r.uvar("node gap"), uint64(len(f.nodes))))
			rm, lm := r.uvar("reference mass"), r.uvar("latest mass")
			if r.err != nil {
				break
			}
			if i >= len(f.nodes) || rm > math.MaxUint32 || lm > math.MaxUint32 || rm|lm == 0 {
				r.fail("node %d of %d with masses %d, %d", i, len(f.nodes), rm, lm)
				break
			}
			f.nodes[i].r, f.nodes[i].l, f.nodes[i].epoch = uint32(rm), uint32(lm), f.epoch
		}
		out.forests[d] = f
	}
	if err := r.done(); err != nil {
		return err
	}
	*h = *out
	return nil
}
