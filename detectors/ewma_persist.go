package detectors

import (
	"fmt"
	"math"
)

// MarshalBinary implements Persistent: alpha and min_samples, then every series (sorted by
// name) with its width and, per feature, its count, mean and variance.
func (e *EWMA) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapEWMA, 24+len(e.series)*64)
	w.f64(e.alpha)
	w.int(int(e.minSamples))
	w.int(len(e.series))
	for _, name := range sortedKeys(e.series) {
		st := e.series[name]
		w.str(name)
		w.int(len(st) / 3)
		w.floats(st)
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces e's configuration and state.
func (e *EWMA) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapEWMA, "ewma")
	if err != nil {
		return err
	}
	alpha := r.f64("alpha")
	minSamples := r.intIn(1, math.MaxInt32, "min_samples")
	n := r.count(2, "series")
	if r.err != nil {
		return r.err
	}
	out, err := NewEWMA(alpha, minSamples)
	if err != nil {
		return fmt.Errorf("ewma snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	for range n {
		name := r.str("series name")
		width := r.count(24, "width")
		if _, dup := out.series[name]; dup && r.err == nil {
			r.fail("series %q twice", name)
		}
		if r.err != nil {
			break
		}
		st := make([]float64, 3*width)
		r.floats(st, "series state")
		out.series[name] = st
	}
	if err := r.done(); err != nil {
		return err
	}
	*e = *out
	return nil
}
