package detectors

import (
	"fmt"
	"math"
	"slices"
)

// MarshalBinary implements Persistent: window and min_samples, then every series (sorted by
// name) with its width and, per feature, the values of its window in arrival order. The
// sorted copy of each window is rebuilt on restore, which halves the snapshot: a series of
// one feature with a full window of 64 takes 8·64 bytes and a few more.
func (z *RobustZScore) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapZScore, 16+len(z.series)*(16+16*z.window))
	w.int(z.window)
	w.int(z.minSamples)
	w.int(len(z.series))
	for _, name := range sortedKeys(z.series) {
		st := z.series[name]
		w.str(name)
		w.int(len(st.wins))
		for f := range st.wins {
			appendRolling(w, &st.wins[f])
		}
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces z's configuration and state.
func (z *RobustZScore) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapZScore, "zscore")
	if err != nil {
		return err
	}
	window := r.intIn(1, math.MaxInt32/2, "window")
	minSamples := r.intIn(1, window, "min_samples")
	n := r.count(2, "series")
	if r.err != nil {
		return r.err
	}
	out, err := NewRobustZScore(window, minSamples)
	if err != nil {
		return fmt.Errorf("zscore snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	for range n {
		name := r.str("series name")
		width := r.count(1, "width")
		if _, dup := out.series[name]; dup && r.err == nil {
			r.fail("series %q twice", name)
		}
		if !r.alloc(width*(2*window*8+48), "series window") {
			break
		}
		st := out.newState(name, width)
		for f := range st.wins {
			readRolling(r, &st.wins[f])
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	*z = *out
	return nil
}

// MarshalBinary writes the window's size and values, oldest first: what the preprocess
// stage checkpoints per series and feature.
func (rr *RollingRobust) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapRolling, 16+8*rr.Len())
	w.int(rr.Window())
	appendRolling(w, rr)
	return w.b, nil
}

// UnmarshalBinary restores a window written by MarshalBinary, at the size it was written
// with; every median and MAD afterwards is bit for bit the original's.
func (rr *RollingRobust) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapRolling, "rolling window")
	if err != nil {
		return err
	}
	window := r.intIn(1, math.MaxInt32, "window")
	if !r.alloc(16*window, "window") {
		return r.done()
	}
	out := new(RollingRobust)
	out.init(make([]float64, 2*window), window)
	readRolling(r, out)
	if err := r.done(); err != nil {
		return err
	}
	*rr = *out
	return nil
}

// appendRolling writes a window's count and values, oldest first.
func appendRolling(w *snapWriter, rr *RollingRobust) {
	n := rr.Len()
	w.int(n)
	if n < rr.Window() { // not yet full: the ring is filled from 0 and head is n
		w.floats(rr.ring[:n])
		return
	}
	w.floats(rr.ring[rr.head:])
	w.floats(rr.ring[:rr.head])
}

// readRolling restores a window written by appendRolling into rr, which init sized. The
// values go back in arrival order from slot 0, and the sorted copy is rebuilt: ordering
// and order statistics are those of the same values, so every result is bit for bit the
// original's.
func readRolling(r *snapReader, rr *RollingRobust) {
	n := r.intIn(0, rr.Window(), "window count")
	if r.err != nil {
		return
	}
	vals := rr.ring[:n]
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
	rr.head = n % rr.Window()
	rr.sorted = append(rr.sorted[:0], vals...)
	slices.Sort(rr.sorted)
}
