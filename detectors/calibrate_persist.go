package detectors

import "fmt"

// MarshalBinary implements Persistent: the window size and warm-up, then the window's
// scores in arrival order.
func (c *ECDFCalibrator) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapECDF, 16+8*c.win.Len())
	appendECDF(w, c)
	return w.b, nil
}

func appendECDF(w *snapWriter, c *ECDFCalibrator) {
	w.int(c.win.Window())
	w.int(c.warmup)
	appendRolling(w, &c.win)
}

// UnmarshalBinary implements Persistent; it replaces c's configuration and state.
func (c *ECDFCalibrator) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapECDF, "ecdf calibrator")
	if err != nil {
		return err
	}
	out := readECDF(r)
	if err := r.done(); err != nil {
		return err
	}
	*c = *out
	return nil
}

func readECDF(r *snapReader) *ECDFCalibrator {
	window := r.intIn(1, MaxCalibrationWindow, "window")
	warmup := r.intIn(1, window, "warmup")
	if !r.alloc(16*window, "window") {
		return nil
	}
	c := NewECDFCalibrator(window)
	c.warmup = warmup
	readRolling(r, &c.win)
	return c
}

// MarshalBinary implements Persistent: the window as it sits in memory (the periodic exact
// recomputation sums it in slot order, so the order is part of the state), the running
// mean and squared deviations, and the updates since the last recomputation.
func (g *GaussianCalibrator) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapGaussian, 48+8*g.n)
	w.int(len(g.ring))
	w.int(g.warmup)
	w.int(g.n)
	w.int(g.head)
	w.int(g.updates)
	w.f64(g.mean)
	w.f64(g.m2)
	w.floats(g.ring[:g.n])
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces g's configuration and state.
func (g *GaussianCalibrator) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapGaussian, "gaussian calibrator")
	if err != nil {
		return err
	}
	window := r.intIn(1, MaxCalibrationWindow, "window")
	warmup := r.intIn(1, window, "warmup")
	n := r.intIn(0, window, "count")
	head := r.intIn(0, window-1, "head")
	updates := r.intIn(0, window-1, "updates")
	mean, m2 := r.f64("mean"), r.f64("m2")
	if r.err == nil && n < window && head != n {
		r.fail("head %d of a window holding %d of %d", head, n, window)
	}
	if r.err == nil && n < window && updates != 0 {
		r.fail("%d sliding updates before the window is full", updates)
	}
	if !r.alloc(8*window, "window") {
		return r.err
	}
	out := NewGaussianCalibrator(window)
	out.warmup, out.n, out.head, out.updates, out.mean, out.m2 = warmup, n, head, updates, mean, m2
	r.floats(out.ring[:n], "window values")
	for _, v := range out.ring[:n] {
		if !finite(v) && r.err == nil {
			r.fail("window value %v is not finite", v)
		}
	}
	if err := r.done(); err != nil {
		return err
	}
	*g = *out
	return nil
}

// MarshalBinary implements Persistent: the ECDF the tail is fitted on is all the state.
func (c *POTCalibrator) MarshalBinary() ([]byte, error) {
	if c.ecdf == nil {
		return nil, fmt.Errorf("pot calibrator: not built with NewPOTCalibrator")
	}
	w := newSnapWriter(snapPOT, 16+8*c.ecdf.win.Len())
	appendECDF(w, c.ecdf)
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces c's configuration and state.
func (c *POTCalibrator) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapPOT, "pot calibrator")
	if err != nil {
		return err
	}
	e := readECDF(r)
	if err := r.done(); err != nil {
		return err
	}
	c.ecdf = e
	return nil
}
