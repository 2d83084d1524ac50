package detectors

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// snapStep is one record of a test stream: its series, timestamp and values.
type snapStep struct {
	series string
	ts     int64
	x      []float64
}

// snapStream mixes three series of widths 1, 2 and 3, with repeats, a flat stretch, a few
// spikes and non-finite values, so that every branch of every state gets written.
func snapStream(n int, seed uint64) []snapStep {
	rng := rand.New(rand.NewPCG(seed, 77))
	out := make([]snapStep, n)
	for i := range out {
		d := 1 + i%3
		x := make([]float64, d)
		for j := range x {
			switch {
			case i%50 == 7:
				x[j] = 8 + rng.NormFloat64() // spike
			case i%7 == 3:
				x[j] = 1 // repeats: duplicates in rrcf, ties in the windows
			case i > n/2 && i%97 == 5:
				x[j] = math.NaN()
			case i > n/2 && i%89 == 5:
				x[j] = math.Inf(1)
			default:
				x[j] = rng.NormFloat64()
			}
		}
		out[i] = snapStep{series: fmt.Sprintf("s%d", d), ts: int64(i) * 3_600_000, x: x}
	}
	return out
}

// streamingSnapCase names a streaming detector and builds it; a zero value must restore.
type streamingSnapCase struct {
	name  string
	build func(t testing.TB) Streaming
	fresh func() Persistent
	n     int // records in the stream
}

func streamingSnapCases() []streamingSnapCase {
	must := func(t testing.TB, s Streaming, err error) Streaming {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return []streamingSnapCase{
		{"zscore", func(t testing.TB) Streaming { z, err := NewRobustZScore(16, 4); return must(t, z, err) },
			func() Persistent { return new(RobustZScore) }, 600},
		{"ewma", func(t testing.TB) Streaming { e, err := NewEWMA(0.1, 4); return must(t, e, err) },
			func() Persistent { return new(EWMA) }, 600},
		{"hst", func(t testing.TB) Streaming {
			h, err := NewHalfSpaceTrees(HSTConfig{Trees: 5, Height: 8, Window: 20, Limit: 4}, 3)
			return must(t, h, err)
		}, func() Persistent { return new(HalfSpaceTrees) }, 600},
		{"rrcf", func(t testing.TB) Streaming {
			r, err := NewRandomCutForest(RRCFConfig{Trees: 6, TreeSize: 24, Shingle: 1}, 3)
			return must(t, r, err)
		}, func() Persistent { return new(RandomCutForest) }, 600},
		{"rrcf-shingle", func(t testing.TB) Streaming {
			r, err := NewRandomCutForest(RRCFConfig{Trees: 4, TreeSize: 16, Shingle: 3}, 4)
			return must(t, r, err)
		}, func() Persistent { return new(RandomCutForest) }, 600},
		{"xstream", func(t testing.TB) Streaming {
			x, err := NewXStream(XStreamConfig{Projections: 6, Chains: 8, Depth: 6, Window: 40}, 3)
			return must(t, x, err)
		}, func() Persistent { return new(XStream) }, 600},
		{"seasonal", func(t testing.TB) Streaming {
			s, err := NewSeasonal(SeasonalConfig{BinsPerDay: 6, Weekly: true, Alpha: 0.2, MinSamples: 3, StepSeconds: 1800, UTCOffsetHours: 1})
			return must(t, s, err)
		}, func() Persistent { return new(Seasonal) }, 600},
		{"windowed_gaussian", func(t testing.TB) Streaming { g, err := NewWindowedGaussian(16, 4); return must(t, g, err) },
			func() Persistent { return new(WindowedGaussian) }, 600},
	}
}

// feed scores one step, through ScoreLearnAt every third step when the detector takes
// timestamps.
func feed(d Streaming, i int, st snapStep, contrib []float64) float64 {
	if ta, ok := d.(TimeAware); ok && i%3 == 0 {
		return ta.ScoreLearnAt(st.series, st.ts, st.x, contrib[:len(st.x)])
	}
	return d.ScoreLearn(st.series, st.x, contrib[:len(st.x)])
}

// TestStreamingSnapshotsResumeExactly: run part of a stream, snapshot, restore into a zero
// value, and run both on: every later score and contribution must be identical bit for
// bit, and the two must snapshot to the same bytes at the end. Snapshots are taken at
// several points, among them inside warm-ups.
func TestStreamingSnapshotsResumeExactly(t *testing.T) {
	for _, tc := range streamingSnapCases() {
		t.Run(tc.name, func(t *testing.T) {
			stream := snapStream(tc.n, 5)
			for _, cut := range []int{0, 3, 25, tc.n / 2, tc.n - 1} {
				orig := tc.build(t)
				ca, cb := make([]float64, 3), make([]float64, 3)
				for i, st := range stream[:cut] {
					feed(orig, i, st, ca)
				}
				data, err := orig.(Persistent).MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				restored := tc.fresh()
				if err := restored.UnmarshalBinary(data); err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				again, err := restored.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(data, again) {
					t.Fatalf("cut %d: a restored detector snapshots to other bytes (%d vs %d)", cut, len(again), len(data))
				}
				res := restored.(Streaming)
				for i := cut; i < len(stream); i++ {
					st := stream[i]
					a, b := feed(orig, i, st, ca), feed(res, i, st, cb)
					if math.Float64bits(a) != math.Float64bits(b) {
						t.Fatalf("cut %d, record %d: %v resumed as %v", cut, i, a, b)
					}
					for j := range st.x {
						if math.Float64bits(ca[j]) != math.Float64bits(cb[j]) {
							t.Fatalf("cut %d, record %d: contributions %v resumed as %v", cut, i, ca, cb)
						}
					}
				}
				a, _ := orig.(Persistent).MarshalBinary()
				b, _ := restored.MarshalBinary()
				if !bytes.Equal(a, b) {
					t.Fatalf("cut %d: after the stream the snapshots differ", cut)
				}
			}
		})
	}
}

type calibratorSnapCase struct {
	name  string
	build func() Calibrator
	fresh func() Persistent
}

func calibratorSnapCases() []calibratorSnapCase {
	return []calibratorSnapCase{
		{"ecdf", func() Calibrator { return NewECDFCalibrator(50) }, func() Persistent { return new(ECDFCalibrator) }},
		{"windowed_gaussian", func() Calibrator { return NewGaussianCalibrator(50) }, func() Persistent { return new(GaussianCalibrator) }},
		{"pot", func() Calibrator { return NewPOTCalibrator(200) }, func() Persistent { return new(POTCalibrator) }},
	}
}

// TestCalibratorSnapshotsResumeExactly is the same for calibrators, across the Gaussian's
// periodic exact recomputation and the POT tail's start.
func TestCalibratorSnapshotsResumeExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	raw := make([]float64, 1500)
	for i := range raw {
		raw[i] = math.Exp(rng.NormFloat64())
		switch i % 40 {
		case 3:
			raw[i] = math.NaN()
		case 7:
			raw[i] = 1 // ties
		case 11:
			raw[i] = math.Inf(1)
		}
	}
	for _, tc := range calibratorSnapCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, cut := range []int{1, 10, 120, 777} {
				orig := tc.build()
				for _, v := range raw[:cut] {
					orig.Calibrate(v)
				}
				data, err := orig.(Persistent).MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				restored := tc.fresh()
				if err := restored.UnmarshalBinary(data); err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				res := restored.(Calibrator)
				for i, v := range raw[cut:] {
					a, b := orig.Calibrate(v), res.Calibrate(v)
					if math.Float64bits(a) != math.Float64bits(b) {
						t.Fatalf("cut %d, score %d: %v resumed as %v", cut, cut+i, a, b)
					}
				}
				a, _ := orig.(Persistent).MarshalBinary()
				b, _ := restored.MarshalBinary()
				if !bytes.Equal(a, b) {
					t.Fatalf("cut %d: after the stream the snapshots differ", cut)
				}
			}
		})
	}
}

// snapshotSeeds are valid snapshots of every type, mid-stream: the fuzz corpus starts from
// them, and TestSnapshotsRejectDamage damages them.
func snapshotSeeds(t testing.TB) [][]byte {
	var out [][]byte
	stream := snapStream(300, 6)
	for _, tc := range streamingSnapCases() {
		d := tc.build(t)
		contrib := make([]float64, 3)
		for i, st := range stream {
			feed(d, i, st, contrib)
		}
		data, err := d.(Persistent).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	for _, tc := range calibratorSnapCases() {
		c := tc.build()
		for i := range 300 {
			c.Calibrate(float64(i%37) / 7)
		}
		data, err := c.(Persistent).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// snapTargets are fresh instances of every Persistent streaming type and calibrator, in
// the order of snapshotSeeds.
func snapTargets() []func() Persistent {
	var out []func() Persistent
	for _, tc := range streamingSnapCases() {
		out = append(out, tc.fresh)
	}
	for _, tc := range calibratorSnapCases() {
		out = append(out, tc.fresh)
	}
	return out
}

// TestSnapshotsRejectDamage: every proper prefix, a flipped version, another type's tag
// and trailing bytes are errors of the right kind, and the receiver is left as it was.
func TestSnapshotsRejectDamage(t *testing.T) {
	seeds, targets := snapshotSeeds(t), snapTargets()
	for i, data := range seeds {
		for n := range len(data) {
			if err := targets[i]().UnmarshalBinary(data[:n]); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("target %d: a %d-byte prefix of %d gave %v", i, n, len(data), err)
			}
		}
		bad := bytes.Clone(data)
		bad[0] = 99
		if err := targets[i]().UnmarshalBinary(bad); !errors.Is(err, ErrSnapshotVersion) {
			t.Fatalf("target %d: version 99 gave %v", i, err)
		}
		for _, other := range targets {
			if o := other(); fmt.Sprintf("%T", o) != fmt.Sprintf("%T", targets[i]()) {
				if err := o.UnmarshalBinary(data); !errors.Is(err, ErrSnapshotCorrupt) {
					t.Fatalf("target %d: restored into a %T: %v", i, o, err)
				}
			}
		}
		if err := targets[i]().UnmarshalBinary(append(bytes.Clone(data), 0)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("target %d: trailing byte gave %v", i, err)
		}
		// A failed restore leaves the receiver as it was.
		p := targets[i]()
		if err := p.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		if err := p.UnmarshalBinary(data[:len(data)/2]); err == nil {
			t.Fatal("half a snapshot restored")
		}
		if again, _ := p.MarshalBinary(); !bytes.Equal(again, data) {
			t.Fatalf("target %d: a failed restore changed the receiver", i)
		}
	}
}

// TestSnapshotSizes reports the snapshot of an hst forest at the defaults (10 features,
// after many windows) and of a zscore series, and checks they stay small enough for a
// Kafka changelog record.
func TestSnapshotSizes(t *testing.T) {
	h := newHST(t, hstDefaults, 1)
	rows := normalRows(5000, 10, 2)
	for _, r := range rows {
		h.ScoreLearn("s", r, nil)
	}
	hb, _ := h.MarshalBinary()
	h2 := new(HalfSpaceTrees)
	if err := h2.UnmarshalBinary(hb); err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for i := range h.forests[10].nodes {
		if r, l := h.forests[10].nodeMass(i); r|l != 0 {
			nonzero++
		}
	}
	for i, r := range rows[:600] { // the defaults resume exactly too
		if a, b := h.ScoreLearn("s", r, nil), h2.ScoreLearn("s", r, nil); a != b {
			t.Fatalf("hst defaults, record %d after restore: %v, want %v", i, b, a)
		}
	}
	z, _ := NewRobustZScore(64, 8)
	for i := range 200 {
		z.ScoreLearn("host-17", []float64{float64(i % 13)}, nil)
	}
	zb, _ := z.MarshalBinary()
	r := newRRCF(t, rrcfDefaults, 1)
	for _, x := range rows[:1000] {
		r.ScoreLearn("s", x[:1], nil)
	}
	rb, _ := r.MarshalBinary()
	x := newXStream(t, xstreamDefaults, 1)
	for _, row := range rows[:1000] {
		x.ScoreLearn("s", row, nil)
	}
	xb, _ := x.MarshalBinary()
	s := newSeasonal(t, seasonalDefaults)
	for i := range 4 * 7 * 288 {
		s.ScoreLearnAt("s", int64(i)*300_000, rows[i%len(rows)][:1], nil)
	}
	sb, _ := s.MarshalBinary()
	t.Logf("hst defaults, 10 features: %d KiB in memory, snapshot %.1f KiB (%d nodes with mass)", HSTForestBytes(hstDefaults)>>10, float64(len(hb))/1024, nonzero)
	t.Logf("zscore, one series of one feature, window 64 full: snapshot %d bytes", len(zb))
	t.Logf("rrcf defaults, 1 feature: snapshot %.1f KiB", float64(len(rb))/1024)
	t.Logf("xstream defaults, 10 features: %d KiB in memory, snapshot %.1f KiB", XStreamModelBytes(xstreamDefaults)>>10, float64(len(xb))/1024)
	t.Logf("seasonal defaults, one series of one feature after four weeks: snapshot %d bytes", len(sb))
	if len(hb) > 1<<20 || len(zb) > 600 {
		t.Fatalf("snapshots too large: hst %d, zscore %d bytes", len(hb), len(zb))
	}
}

// TestFuzzSeedsCommitted: the committed corpus holds a valid snapshot of every type, so
// `go test` replays them even without -fuzz. Run with -update-fuzz-seeds to rewrite it.
func TestFuzzSeedsCommitted(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshalStreaming")
	seeds := snapshotSeeds(t)
	if os.Getenv("GONOMALY_UPDATE_FUZZ_SEEDS") != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, data := range seeds {
			body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", byte(i), data)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range seeds {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("seed-%02d", i))); err != nil {
			t.Fatalf("committed fuzz seed %d missing (GONOMALY_UPDATE_FUZZ_SEEDS=1 go test -run TestFuzzSeedsCommitted): %v", i, err)
		}
	}
}

// FuzzUnmarshalStreaming feeds arbitrary bytes to the UnmarshalBinary of every streaming
// detector and calibrator (the first byte picks which). It must never panic; what it
// accepts must snapshot back to the same bytes and then score records without panicking.
func FuzzUnmarshalStreaming(f *testing.F) {
	for i, data := range snapshotSeeds(f) {
		f.Add(byte(i), data)
	}
	targets := snapTargets()
	defer func(limit int) { snapshotMemoryLimit = limit }(snapshotMemoryLimit)
	snapshotMemoryLimit = 16 << 20 // a corrupt configuration must fail, not exhaust the fuzzer
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		p := targets[int(which)%len(targets)]()
		if err := p.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotVersion) {
				t.Fatalf("error %v wraps neither snapshot error", err)
			}
			return
		}
		again, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		q := targets[int(which)%len(targets)]()
		if err := q.UnmarshalBinary(again); err != nil {
			t.Fatalf("a re-encoded snapshot does not restore: %v", err)
		}
		if third, _ := q.MarshalBinary(); !bytes.Equal(third, again) {
			t.Fatal("snapshots are not canonical")
		}
		switch d := p.(type) {
		case Streaming:
			if !fuzzSmall(d) {
				return // scoring would build models of a size the configuration allows but a fuzzer cannot afford
			}
			contrib := make([]float64, 4)
			for i := range 40 {
				x := []float64{float64(i % 5), -1, 1e300, math.NaN()}[:1+i%4]
				d.ScoreLearn(fmt.Sprintf("s%d", i%3), x, contrib[:len(x)])
				d.ScoreLearn("s1", x[:1], nil)
			}
		case Calibrator:
			for i := range 40 {
				d.Calibrate(float64(i % 7))
			}
		}
	})
}

// fuzzSmall reports whether scoring records of up to 4 features would build models of at
// most 16 MiB: a restored detector may be configured for far more, legitimately.
func fuzzSmall(d Streaming) bool {
	const limit = 16 << 20
	switch d := d.(type) {
	case *HalfSpaceTrees:
		return HSTForestBytes(d.cfg) <= limit
	case *RandomCutForest:
		return RRCFForestBytes(d.cfg, 4) <= limit
	case *XStream:
		return XStreamModelBytes(d.cfg)+4*4*d.cfg.Projections <= limit
	}
	return true
}

// TestRegisteredStreamingPersist: every registered streaming detector can be checkpointed,
// and the new ones are registered with documented parameters whose defaults build.
func TestRegisteredStreamingPersist(t *testing.T) {
	for _, name := range []string{"rrcf", "xstream", "seasonal", "windowed_gaussian"} {
		info, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != KindStreaming || info.NewStreaming == nil || info.Doc == "" {
			t.Fatalf("%s: kind %q, constructor %v, doc %q", name, info.Kind, info.NewStreaming != nil, info.Doc)
		}
		for _, p := range info.Params {
			if p.Doc == "" || p.Default < p.Min || p.Default > p.Max {
				t.Fatalf("%s.%s: undocumented or default %v outside [%v, %v]", name, p.Name, p.Default, p.Min, p.Max)
			}
		}
	}
	for _, info := range List() {
		if info.Kind != KindStreaming {
			continue
		}
		p, err := info.Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := info.NewStreaming(p, 1)
		if err != nil {
			t.Fatalf("%s with defaults: %v", info.Name, err)
		}
		if _, ok := d.(Persistent); !ok {
			t.Errorf("%s does not implement Persistent", info.Name)
		}
	}
	if info, _ := Lookup("seasonal"); info.NewStreaming != nil {
		p, _ := info.Resolve(nil)
		d, _ := info.NewStreaming(p, 1)
		if _, ok := d.(TimeAware); !ok {
			t.Error("seasonal does not implement TimeAware")
		}
	}
	for _, tc := range []struct {
		detector string
		given    Params
	}{
		{"rrcf", Params{"trees": 0}}, {"rrcf", Params{"tree_size": 8}}, {"rrcf", Params{"shingle": 65}},
		{"xstream", Params{"window": 70000}}, {"xstream", Params{"depth": 0}},
		{"seasonal", Params{"weekly": 0.5}}, {"seasonal", Params{"alpha": 0}}, {"seasonal", Params{"bins_per_day": 1000}},
	} {
		info, _ := Lookup(tc.detector)
		if _, err := info.Resolve(tc.given); err == nil {
			t.Errorf("%s %v accepted", tc.detector, tc.given)
		}
	}
}
