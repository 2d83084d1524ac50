package detectors

import (
	"fmt"
	"math"
)

// MarshalBinary implements Persistent: window and min_samples, then every series (sorted by
// name) with its width and, per feature, the count, the evictions since the last exact
// recomputation, the running mean and m2 as bits, and the window's values oldest first.
// The running moments are written rather than recomputed on restore because the slid
// updates' rounding is part of the state: with them every later score is bit for bit the
// original's.
func (g *WindowedGaussian) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapWindowedGaussian, 16+len(g.series)*(16+8*g.window+24))
	w.int(g.window)
	w.int(g.minSamples)
	w.int(len(g.series))
	for _, name := range sortedKeys(g.series) {
		st := g.series[name]
		w.str(name)
		w.int(len(st.wins))
		for f := range st.wins {
			gw := &st.wins[f]
			w.int(gw.n)
			w.int(gw.evicted)
			w.f64(gw.mean)
			w.f64(gw.m2)
			if gw.n < len(gw.ring) { // not yet full: filled from 0, head is n
				w.floats(gw.ring[:gw.n])
			} else {
				w.floats(gw.ring[gw.head:])
				w.floats(gw.ring[:gw.head])
			}
		}
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces g's configuration and state. Values
// go back in arrival order from slot 0; recompute sums in arrival order, so the rotation
// does not change a result.
func (g *WindowedGaussian) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapWindowedGaussian, "windowed_gaussian")
	if err != nil {
		return err
	}
	window := r.intIn(1, math.MaxInt32/2, "window")
	minSamples := r.intIn(1, window, "min_samples")
	n := r.count(2, "series")
	if r.err != nil {
		return r.err
	}
	out, err := NewWindowedGaussian(window, minSamples)
	if err != nil {
		return fmt.Errorf("gaussian snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	for range n {
		name := r.str("series name")
		width := r.count(1, "width")
		if _, dup := out.series[name]; dup && r.err == nil {
			r.fail("series %q twice", name)
		}
		if !r.alloc(width*(window*8+64), "series window") {
			break
		}
		st := out.newState(name, width)
		for f := range st.wins {
			readGaussWindow(r, &st.wins[f])
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	*g = *out
	return nil
}

// readGaussWindow restores one feature's window written by MarshalBinary into gw, whose
// ring newState sized.
func readGaussWindow(r *snapReader, gw *gaussWindow) {
	w := len(gw.ring)
	cnt := r.intIn(0, w, "window count")
	evicted := r.intIn(0, w-1, "evictions")
	mean, m2 := r.f64("mean"), r.f64("m2")
	if r.err != nil {
		return
	}
	switch {
	case mean != mean || !(m2 >= 0):
		r.fail("mean %v, m2 %v", mean, m2)
	case cnt < w && evicted != 0:
		r.fail("%d evictions from a window of %d of %d", evicted, cnt, w)
	case cnt == 0 && (mean != 0 || m2 != 0):
		r.fail("empty window with mean %v, m2 %v", mean, m2)
	}
	vals := gw.ring[:cnt]
	r.floats(vals, "window values")
	for _, v := range vals {
		if !finite(v) && r.err == nil {
			r.fail("window value %v is not finite", v)
		}
	}
	if r.err != nil {
		clear(vals)
		return
	}
	gw.n, gw.evicted, gw.mean, gw.m2 = cnt, evicted, mean, m2
	gw.head = cnt % w
}
