package processors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/gonomaly/gonomaly/detectors"
)

// Snapshots of the stage processors (Stateful). Each starts with a format byte and the
// configuration it was taken under (the spec version for detect, the ensemble settings
// for ensemble): a snapshot of another configuration is refused rather than restored
// into detectors it does not describe. The detectors' own encodings
// (detectors.Persistent) carry their versions and are validated as they decode.

const stageSnapshotVersion = 1

var (
	_ Stateful = (*detector)(nil)
	_ Stateful = (*ensembler)(nil)
)

type snapBuf struct{ b []byte }

func (w *snapBuf) bytes(p []byte) {
	w.b = binary.AppendUvarint(w.b, uint64(len(p)))
	w.b = append(w.b, p...)
}
func (w *snapBuf) str(s string)  { w.bytes([]byte(s)) }
func (w *snapBuf) uvar(v uint64) { w.b = binary.AppendUvarint(w.b, v) }

type snapRead struct {
	b   []byte
	err error
}

func (r *snapRead) uvar() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated snapshot")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapRead) bytes() []byte {
	n := r.uvar()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errors.New("truncated snapshot")
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *snapRead) str() string { return string(r.bytes()) }

func (r *snapRead) header(want string) {
	if len(r.b) == 0 || r.b[0] != stageSnapshotVersion {
		r.err = errors.New("unknown stage snapshot format")
		return
	}
	r.b = r.b[1:]
	if got := r.str(); r.err == nil && got != want {
		r.err = fmt.Errorf("snapshot of configuration %q, this stage runs %q", got, want)
	}
}

func marshalPersistent(what string, v any) ([]byte, error) {
	p, ok := v.(detectors.Persistent)
	if !ok {
		return nil, fmt.Errorf("%s (%T) cannot be checkpointed", what, v)
	}
	return p.MarshalBinary()
}

func unmarshalPersistent(what string, v any, data []byte) error {
	p, ok := v.(detectors.Persistent)
	if !ok {
		return fmt.Errorf("%s (%T) cannot be restored", what, v)
	}
	if err := p.UnmarshalBinary(data); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Snapshot implements Stateful: per spec entry, the algorithm's state, or for a model
// entry the model version in use and, for a streaming model, its learned state.
func (p *detector) Snapshot() ([]byte, error) {
	w := &snapBuf{b: []byte{stageSnapshotVersion}}
	w.str(p.stage.modelVersion)
	w.uvar(uint64(len(p.dets)))
	models := 0
	for i, det := range p.dets {
		if det == nil {
			m := p.models[models]
			models++
			w.uvar(1)
			w.str(m.ref.String())
			var state []byte
			if m.det != nil && m.det.stream != nil {
				var err error
				if state, err = marshalPersistent("model "+m.detector, m.det.stream); err != nil {
					return nil, err
				}
			}
			w.bytes(state)
			continue
		}
		b, err := marshalPersistent("detector "+p.stage.spec.Detectors[i].Name, det)
		if err != nil {
			return nil, err
		}
		w.uvar(0)
		w.bytes(b)
	}
	return w.b, nil
}

// Restore implements Stateful. A model entry's learned state is restored only when the
// snapshot was taken with the version now in use; with a newer version the entry starts
// from that version's trained state, as a switch without a restart does.
func (p *detector) Restore(data []byte) error {
	r := &snapRead{b: data}
	r.header(p.stage.modelVersion)
	if n := r.uvar(); r.err == nil && n != uint64(len(p.dets)) {
		return fmt.Errorf("detect snapshot has %d detectors, the spec %d", n, len(p.dets))
	}
	models := 0
	for i, det := range p.dets {
		kind := r.uvar()
		if r.err != nil {
			break
		}
		if (kind == 1) != (det == nil) {
			return fmt.Errorf("detect snapshot: entry %d is of another kind", i)
		}
		if det == nil {
			m := p.models[models]
			models++
			ref, state := r.str(), r.bytes()
			if r.err != nil || len(state) == 0 || m.det == nil || m.det.stream == nil || ref != m.ref.String() {
				continue
			}
			if err := unmarshalPersistent("model "+m.detector, m.det.stream, state); err != nil {
				return err
			}
			continue
		}
		b := r.bytes()
		if r.err != nil {
			break
		}
		if err := unmarshalPersistent("detector "+p.stage.spec.Detectors[i].Name, det, b); err != nil {
			return err
		}
	}
	if r.err != nil {
		return fmt.Errorf("detect snapshot: %w", r.err)
	}
	return nil
}

// ensembleConfig names what an ensemble snapshot depends on.
func (e *Ensemble) snapshotConfig() string {
	names := make([]string, len(e.spec.Detectors))
	for i, d := range e.spec.Detectors {
		names[i] = d.Name
	}
	return fmt.Sprintf("%v|%+v", names, e.spec.Ensemble)
}

// Snapshot implements Stateful: the calibrators, then every series (sorted, so equal
// states give equal bytes) with its warm-up count and post-processors.
func (p *ensembler) Snapshot() ([]byte, error) {
	w := &snapBuf{b: []byte{stageSnapshotVersion}}
	w.str(p.stage.snapshotConfig())
	w.uvar(uint64(len(p.calibrators)))
	for i, c := range p.calibrators {
		b, err := marshalPersistent(fmt.Sprintf("calibrator %d", i), c)
		if err != nil {
			return nil, err
		}
		w.bytes(b)
	}
	keys := make([]string, 0, len(p.series))
	for k := range p.series {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.uvar(uint64(len(keys)))
	for _, k := range keys {
		sp := p.series[k]
		w.str(k)
		w.uvar(uint64(sp.seen))
		for _, part := range []detectors.Persistent{sp.likelihood, sp.peaks} {
			if part == nil || isNilPersistent(part) {
				w.bytes(nil)
				continue
			}
			b, err := part.MarshalBinary()
			if err != nil {
				return nil, err
			}
			w.bytes(b)
		}
	}
	return w.b, nil
}

func isNilPersistent(p detectors.Persistent) bool {
	switch v := p.(type) {
	case *detectors.AnomalyLikelihood:
		return v == nil
	case *detectors.PeakFilter:
		return v == nil
	}
	return false
}

// Restore implements Stateful.
func (p *ensembler) Restore(data []byte) error {
	e := p.stage
	r := &snapRead{b: data}
	r.header(e.snapshotConfig())
	if n := r.uvar(); r.err == nil && n != uint64(len(p.calibrators)) {
		return fmt.Errorf("ensemble snapshot has %d calibrators, the spec %d", n, len(p.calibrators))
	}
	for i, c := range p.calibrators {
		b := r.bytes()
		if r.err != nil {
			break
		}
		if err := unmarshalPersistent(fmt.Sprintf("calibrator %d", i), c, b); err != nil {
			return err
		}
	}
	n := r.uvar()
	if r.err == nil && n > uint64(len(r.b)) {
		return errors.New("ensemble snapshot: series count exceeds its size")
	}
	series := make(map[string]*seriesPost, n)
	for range n {
		k, seen := r.str(), r.uvar()
		lik, peaks := r.bytes(), r.bytes()
		if r.err != nil {
			break
		}
		sp, err := newSeriesPost(e.spec.Ensemble)
		if err != nil {
			return err
		}
		sp.seen = int(min(seen, uint64(e.spec.Ensemble.Warmup)))
		if (len(lik) > 0) != (sp.likelihood != nil) || (len(peaks) > 0) != (sp.peaks != nil) {
			return fmt.Errorf("ensemble snapshot: series %q has other post-processors than the spec", k)
		}
		if sp.likelihood != nil {
			if err := sp.likelihood.UnmarshalBinary(lik); err != nil {
				return fmt.Errorf("series %q likelihood: %w", k, err)
			}
		}
		if sp.peaks != nil {
			if err := sp.peaks.UnmarshalBinary(peaks); err != nil {
				return fmt.Errorf("series %q peaks: %w", k, err)
			}
		}
		series[k] = sp
	}
	if r.err != nil {
		return fmt.Errorf("ensemble snapshot: %w", r.err)
	}
	p.series = series
	return nil
}

var _ Stateful = (*preprocessor)(nil)

// snapshotConfig names what a preprocess snapshot depends on: the scaling settings.
func (p *Preprocess) snapshotConfig() string { return fmt.Sprintf("%+v", p.spec.Preprocess) }

// Snapshot implements Stateful: every series (sorted) and, per feature (sorted), whether
// a value was seen, the last value (the fill for missing ones) and the scaling window.
func (pp *preprocessor) Snapshot() ([]byte, error) {
	w := &snapBuf{b: []byte{stageSnapshotVersion}}
	w.str(pp.stage.snapshotConfig())
	w.uvar(uint64(len(pp.series)))
	for _, name := range slices.Sorted(maps.Keys(pp.series)) {
		ss := pp.series[name]
		w.str(name)
		w.uvar(uint64(len(ss.features)))
		for _, f := range slices.Sorted(maps.Keys(ss.features)) {
			fs := ss.features[f]
			w.str(f)
			seen := uint64(0)
			if fs.seen {
				seen = 1
			}
			w.uvar(seen)
			w.uvar(math.Float64bits(fs.last))
			b, err := marshalPersistent("window of "+name+"."+f, fs.window)
			if err != nil {
				return nil, err
			}
			w.bytes(b)
		}
	}
	return w.b, nil
}

// Restore implements Stateful.
func (pp *preprocessor) Restore(data []byte) error {
	r := &snapRead{b: data}
	r.header(pp.stage.snapshotConfig())
	n := r.uvar()
	if r.err == nil && n > uint64(len(r.b)) {
		return errors.New("preprocess snapshot: series count exceeds its size")
	}
	series := make(map[string]*seriesScaler, n)
	for range n {
		name, nf := r.str(), r.uvar()
		if r.err == nil && nf > uint64(len(r.b)) {
			return errors.New("preprocess snapshot: feature count exceeds its size")
		}
		if r.err != nil {
			break
		}
		ss := &seriesScaler{features: make(map[string]*featureScaler, nf)}
		for range nf {
			f, seen, last, b := r.str(), r.uvar(), r.uvar(), r.bytes()
			if r.err != nil {
				break
			}
			fs := &featureScaler{window: new(detectors.RollingRobust), last: math.Float64frombits(last), seen: seen == 1}
			if err := unmarshalPersistent("window of "+name+"."+f, fs.window, b); err != nil {
				return err
			}
			if fs.window.Window() != pp.stage.spec.Preprocess.Window {
				return fmt.Errorf("preprocess snapshot: window of %s.%s holds %d values, the spec %d", name, f, fs.window.Window(), pp.stage.spec.Preprocess.Window)
			}
			ss.features[f] = fs
		}
		series[name] = ss
	}
	if r.err != nil {
		return fmt.Errorf("preprocess snapshot: %w", r.err)
	}
	pp.series = series
	return nil
}
