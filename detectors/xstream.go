package detectors

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
)

func init() {
	Register(Info{
		Name: "xstream",
		Kind: KindStreaming,
		Doc: "xStream (Manzoor, Lamba & Akoglu, KDD 2018): records are projected onto `projections` " +
			"sparse random directions (StreamHash: each feature weighs ±√(3/K) with probability " +
			"1/6 each, else 0), then each of `chains` half-space chains bins the projection " +
			"ever finer, one random projected dimension per level (a dimension's bins halve each " +
			"time the chain reuses it). Bins are counted in a count-min table per chain and level " +
			"over the last complete window of `window` records while the current window is counted " +
			"beside it. A chain's density is min over levels of log2(1 + count) + level; the score " +
			"is 1 − (mean density − 1)/log2(1 + window), in [0,1], higher is more anomalous. One " +
			"model per partition and feature count, shared by its series. Bin widths come from the " +
			"first window (half the range of each projected dimension), which is NaN.",
		Params: []Param{
			{Name: "projections", Doc: "random projected dimensions (K)", Default: 100, Min: 1, Max: 1000, Integer: true},
			{Name: "chains", Doc: "half-space chains; cost is chains × depth table updates a record", Default: 100, Min: 1, Max: 1000, Integer: true},
			{Name: "depth", Doc: "levels per chain", Default: 15, Min: 1, Max: 40, Integer: true},
			{Name: "window", Doc: "records per count window (the reference is the previous window)", Default: 250, Min: 16, Max: 65535, Integer: true},
		},
		NewStreaming: func(p Params, seed uint64) (Streaming, error) {
			return NewXStream(XStreamConfig{
				Projections: p.Int("projections"), Chains: p.Int("chains"), Depth: p.Int("depth"), Window: p.Int("window"),
			}, seed)
		},
	})
}

// XStreamConfig is the shape of an xStream model.
type XStreamConfig struct {
	Projections int // K, the projected dimensions
	Chains      int // half-space chains
	Depth       int // levels per chain
	Window      int // records per count window, at most 65535 (counts are uint16)
}

const (
	// XStreamMaxModelBytes caps one model (XStreamModelBytes).
	XStreamMaxModelBytes = 1 << 30
	// XStreamMaxModels caps the feature counts a partition builds models for; records of
	// further widths get NaN.
	XStreamMaxModels = 8
	// xsMaxDims bounds the feature count of a model (as hst's).
	xsMaxDims = 1 << 16
	// xsClip bounds inputs; xsBinClip bounds scaled projections so bins fit in int32.
	xsClip    = 1e100
	xsBinClip = 1 << 30
)

// xsBucket is one count-min cell: the count of the previous complete window (r) and of the
// current one (l) as of window epoch, swapped lazily as hst's nodes are.
type xsBucket struct {
	r, l  uint16
	epoch uint32
}

// XStream is the xstream detector: one model per feature count, built on first use and
// shared by the partition's series.
type XStream struct {
	cfg    XStreamConfig
	seed   uint64
	models map[int]*xsModel
	last   *xsModel
}

// NewXStream checks cfg and returns an empty detector; models take their memory
// (XStreamModelBytes) when the first record of a width arrives.
func NewXStream(cfg XStreamConfig, seed uint64) (*XStream, error) {
	switch {
	case cfg.Projections < 1 || cfg.Projections > 1<<16:
		return nil, fmt.Errorf("xstream: projections = %d must be in [1, %d]", cfg.Projections, 1<<16)
	case cfg.Chains < 1 || cfg.Chains > 1<<16:
		return nil, fmt.Errorf("xstream: chains = %d must be in [1, %d]", cfg.Chains, 1<<16)
	case cfg.Depth < 1 || cfg.Depth > 40:
		return nil, fmt.Errorf("xstream: depth = %d must be in [1, 40]", cfg.Depth)
	case cfg.Window < 1 || cfg.Window > math.MaxUint16:
		return nil, fmt.Errorf("xstream: window = %d must be in [1, %d]", cfg.Window, math.MaxUint16)
	}
	if b := XStreamModelBytes(cfg); b > XStreamMaxModelBytes {
		return nil, fmt.Errorf("xstream: projections = %d, chains = %d, depth = %d and window = %d need %d MiB per model, over the %d MiB limit",
			cfg.Projections, cfg.Chains, cfg.Depth, cfg.Window, b>>20, XStreamMaxModelBytes>>20)
	}
	return &XStream{cfg: cfg, seed: seed, models: make(map[int]*xsModel)}, nil
}

// xsTableSize is the cells per chain and level: a power of two at least twice the window,
// so a window's distinct bins fill at most half of it.
func xsTableSize(window int) int {
	return max(64, 1<<bits.Len(uint(2*window-1)))
}

// XStreamModelBytes is the memory of one model apart from its projection (about
// 4·projections bytes a feature): the count tables (chains × depth × table size × 8
// bytes), the chains' shifts (16 bytes per chain and projected dimension) and, until the
// first window closes, that window's projections (8 × window × projections bytes).
func XStreamModelBytes(cfg XStreamConfig) int {
	return cfg.Chains*cfg.Depth*(xsTableSize(cfg.Window)*8+5) + 16*cfg.Chains*cfg.Projections + 8*cfg.Window*cfg.Projections
}

// SizeBytes is the memory held by the models built so far.
func (x *XStream) SizeBytes() int {
	n := 0
	for _, m := range x.models {
		n += len(m.tab)*8 + len(m.projVal)*12 + (len(m.shift)+len(m.frac))*8 + cap(m.warm)*8 + len(m.fs)*5
	}
	return n
}

// ScoreLearn implements Streaming. NaN features are taken as 0 and values are clipped to
// ±1e100. Contributions are approximate: each chain credits the projected dimension it
// split at the level where the record's density was lowest, weighted by how anomalous
// the chain finds it, and a projected dimension passes its credit to the features in
// proportion to |weight × (x − running mean)|.
func (x *XStream) ScoreLearn(_ string, rec, contrib []float64) float64 {
	d := len(rec)
	if contrib != nil {
		clear(contrib[:d])
	}
	m := x.last
	if m == nil || m.d != d {
		m = x.models[d]
		if m == nil {
			if d == 0 || d > xsMaxDims || len(x.models) >= XStreamMaxModels {
				return math.NaN() // a width we hold no model for: no judgement
			}
			m = newXSModel(x.cfg, d, x.seed)
			x.models[d] = m
		}
		x.last = m
	}
	return m.scoreLearn(rec, contrib)
}

// xsModel is the model for one feature count.
type xsModel struct {
	d, k, chains, depth, window int
	logW                        uint // log2 of the table size

	// StreamHash projection, by input feature: entries projStart[i]..projStart[i+1] of
	// projDim (a projected dimension) and projVal (±√(3/K)).
	projStart []int32
	projDim   []int32
	projVal   []float64

	fs    []int32   // [chain·depth + level]: the projected dimension split there
	first []bool    // [chain·depth + level]: the chain's first use of that dimension
	frac  []float64 // [chain·K + dim]: the random shift as a fraction of the bin width
	salt  []uint64  // per level: mixed into the bin key, so levels' tables are independent

	// Set when the first window closes: the bin width of each projected dimension (half
	// its range over the window, 1 where it had none) and each chain's shifts.
	invDelta []float64 // per projected dimension
	shift    []float64 // [chain·K + dim]: frac · delta
	warm     []float64 // the first window's projections, window × K, until it closes

	tab   []xsBucket // [(chain·depth + level)·size + cell]
	count int        // records in the current window
	epoch uint32     // the current window's number, ≥ 1

	mean []float64 // running mean of the features, for contributions

	proj []float64 // scratch: the record's projection
	z    []float64 // scratch: per projected dimension, its scaled value in the chain
	bin  []int64   // scratch: per projected dimension, its bin in the chain
	acc  []float64 // scratch: credit per projected dimension
	xs   []float64 // scratch: the record, cleaned
}

func newXSModel(cfg XStreamConfig, d int, seed uint64) *xsModel {
	k := cfg.Projections
	size := xsTableSize(cfg.Window)
	m := &xsModel{
		d: d, k: k, chains: cfg.Chains, depth: cfg.Depth, window: cfg.Window,
		logW:      uint(bits.Len(uint(size)) - 1),
		projStart: make([]int32, d+1),
		fs:        make([]int32, cfg.Chains*cfg.Depth),
		first:     make([]bool, cfg.Chains*cfg.Depth),
		frac:      make([]float64, cfg.Chains*k),
		salt:      make([]uint64, cfg.Depth),
		warm:      make([]float64, 0, cfg.Window*k),
		tab:       make([]xsBucket, cfg.Chains*cfg.Depth*size),
		epoch:     1,
		mean:      make([]float64, d),
		proj:      make([]float64, k),
		z:         make([]float64, k),
		bin:       make([]int64, k),
		acc:       make([]float64, k),
		xs:        make([]float64, d),
	}
	// The stream seed with the width, so a model does not depend on which widths came first.
	rng := rand.New(rand.NewPCG(seed, uint64(d)^0x7873747265616d)) // "xstream"
	w := math.Sqrt(3 / float64(k))
	for i := range d {
		for j := range k {
			switch rng.IntN(6) {
			case 0:
				m.projDim, m.projVal = append(m.projDim, int32(j)), append(m.projVal, w)
			case 1:
				m.projDim, m.projVal = append(m.projDim, int32(j)), append(m.projVal, -w)
			}
		}
		m.projStart[i+1] = int32(len(m.projDim))
	}
	used := make([]bool, k)
	for c := range cfg.Chains {
		clear(used)
		for l := range cfg.Depth {
			f := rng.IntN(k)
			m.fs[c*cfg.Depth+l] = int32(f)
			m.first[c*cfg.Depth+l] = !used[f]
			used[f] = true
		}
		for j := range k {
			m.frac[c*k+j] = rng.Float64()
		}
	}
	for l := range m.salt {
		m.salt[l] = rng.Uint64()
	}
	return m
}

// project writes the record's projection to m.proj, after cleaning it into m.xs.
func (m *xsModel) project(rec []float64) {
	clear(m.proj)
	for i, v := range rec {
		if v != v {
			v = 0
		}
		v = min(max(v, -xsClip), xsClip)
		m.xs[i] = v
		for e := m.projStart[i]; e < m.projStart[i+1]; e++ {
			m.proj[m.projDim[e]] += m.projVal[e] * v
		}
	}
}

func (m *xsModel) scoreLearn(rec, contrib []float64) float64 {
	m.project(rec)
	if m.invDelta == nil {
		m.warm = append(m.warm, m.proj...)
		m.learnMean()
		if len(m.warm) == m.window*m.k {
			m.closeWarmup()
		}
		return math.NaN() // bin widths come from the first window: no judgement yet
	}
	withContrib := contrib != nil
	if withContrib {
		clear(m.acc)
	}
	top := math.Log2(float64(m.window)+1) + 1 // the largest possible density
	total := 0.0
	for c := range m.chains {
		v, f := m.chain(c)
		total += v
		if withContrib {
			m.acc[f] += max(top-v, 0)
		}
	}
	if withContrib {
		m.attribute(contrib[:len(rec)])
	}
	m.learnMean()
	if m.count++; m.count == m.window {
		m.advance()
	}
	s := (top - total/float64(m.chains)) / (top - 1)
	return min(max(s, 0), 1)
}

// chain bins the projection down chain c, scoring it against the reference counts and
// counting it in the current window. It returns the chain's density, min over
// levels l (from 1) of log2(1 + count) + l, and the projected dimension split at the level
// reaching it. The min is taken over (count + 1)·2^l in integers: one logarithm a chain.
func (m *xsModel) chain(c int) (float64, int32) {
	k, depth, size := m.k, m.depth, 1<<m.logW
	fs := m.fs[c*depth : (c+1)*depth]
	first := m.first[c*depth : (c+1)*depth]
	shift := m.shift[c*k : (c+1)*k]
	tab := m.tab[c*depth*size : (c+1)*depth*size]
	epoch, prev := m.epoch, m.epoch-1
	best, bestDim := uint64(math.MaxUint64), int32(0)
	var key uint64
	for l, f := range fs {
		var z float64
		if first[l] {
			z = (m.proj[f] + shift[f]) * m.invDelta[f]
		} else {
			z = 2*m.z[f] - shift[f]*m.invDelta[f] // half the width, half the shift
		}
		z = min(max(z, -xsBinClip), xsBinClip)
		m.z[f] = z
		b := int64(math.Floor(z))
		if !first[l] {
			key -= xsMix(f, m.bin[f])
		}
		key += xsMix(f, b) // the bins of every dimension so far, in any order
		m.bin[f] = b
		cell := &tab[l*size+int((key^m.salt[l])*0x9e3779b97f4a7c15>>(64-m.logW))]
		if cell.epoch != epoch { // first touch in this window: swap lazily
			r := cell.l
			if cell.epoch != prev {
				r = 0
			}
			cell.r, cell.l, cell.epoch = r, 0, epoch
		}
		if dens := (uint64(cell.r) + 1) << (l + 1); dens < best {
			best, bestDim = dens, f
		}
		cell.l++
	}
	return math.Log2(float64(best)), bestDim
}

// xsMix hashes a (projected dimension, bin) pair to 64 well-mixed bits (splitmix64's
// finaliser); bins fit in 32 bits after xsBinClip.
func xsMix(f int32, b int64) uint64 {
	z := uint64(uint32(f))<<32 | uint64(uint32(b))
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// attribute turns credit per projected dimension into shares of the features.
func (m *xsModel) attribute(contrib []float64) {
	sum := 0.0
	for i, v := range m.xs {
		dev := math.Abs(v - m.mean[i])
		c := 0.0
		for e := m.projStart[i]; e < m.projStart[i+1]; e++ {
			c += m.acc[m.projDim[e]] * math.Abs(m.projVal[e])
		}
		c *= dev
		if !finite(c) {
			c = 0
		}
		contrib[i] = c
		sum += c
	}
	if !finite(sum) {
		sum = 0
	}
	normalizeShares(contrib, sum)
}

// learnMean moves the running mean towards the record, weighing the last window.
func (m *xsModel) learnMean() {
	a := 1 / float64(m.window)
	for i, v := range m.xs {
		m.mean[i] += a * (v - m.mean[i])
	}
}

// closeWarmup sets the bin widths from the first window's projections, counts that window
// and makes it the reference.
func (m *xsModel) closeWarmup() {
	k := m.k
	lo, hi := make([]float64, k), make([]float64, k)
	copy(lo, m.warm[:k])
	copy(hi, m.warm[:k])
	for r := k; r < len(m.warm); r += k {
		for j, v := range m.warm[r : r+k] {
			lo[j], hi[j] = min(lo[j], v), max(hi[j], v)
		}
	}
	m.invDelta = make([]float64, k)
	for j := range k {
		delta := (hi[j] - lo[j]) / 2
		if !(delta > 0) || !finite(delta) || !finite(1/delta) {
			delta = 1 // no spread seen: any unit will do
		}
		m.invDelta[j] = 1 / delta
	}
	m.shift = make([]float64, len(m.frac))
	for i, f := range m.frac {
		m.shift[i] = f / m.invDelta[i%k]
	}
	for r := 0; r < len(m.warm); r += k {
		copy(m.proj, m.warm[r:r+k])
		for c := range m.chains {
			m.chain(c)
		}
	}
	m.warm = nil
	m.advance()
}

// advance closes the current window. Cells catch up lazily; every 2^32 − 2 windows, when
// the epoch is about to wrap, one pass brings all of them up to date.
func (m *xsModel) advance() {
	m.count = 0
	m.epoch++
	if m.epoch < math.MaxUint32 {
		return
	}
	prev := m.epoch - 1
	for i := range m.tab {
		c := &m.tab[i]
		if c.epoch == prev {
			c.r = c.l
		} else {
			c.r = 0
		}
		c.l, c.epoch = 0, 1
	}
	m.epoch = 1
}

// MarshalBinary implements Persistent: the configuration and seed, then per model (by
// feature count) the running mean and either the first window's projections, while it is
// still open, or the bin widths, the window position and the counts of the cells that hold
// any, as of the current window. Projections, chains and shifts are a pure function of
// the configuration, the seed and the width, and are rebuilt.
func (x *XStream) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapXStream, 64)
	w.int(x.cfg.Projections)
	w.int(x.cfg.Chains)
	w.int(x.cfg.Depth)
	w.int(x.cfg.Window)
	w.u64(x.seed)
	w.int(len(x.models))
	for _, d := range sortedInts(x.models) {
		m := x.models[d]
		w.int(d)
		w.floats(m.mean)
		if m.invDelta == nil {
			w.u8(0)
			w.int(len(m.warm) / m.k)
			w.floats(m.warm)
			continue
		}
		w.u8(1)
		w.floats(m.invDelta)
		w.int(m.count)
		w.uvar(uint64(m.epoch))
		nonzero := 0
		for i := range m.tab {
			if r, l := m.cellCounts(i); r|l != 0 {
				nonzero++
			}
		}
		w.int(nonzero)
		prev := -1
		for i := range m.tab {
			r, l := m.cellCounts(i)
			if r|l == 0 {
				continue
			}
			w.int(i - prev - 1)
			w.int(int(r))
			w.int(int(l))
			prev = i
		}
	}
	return w.b, nil
}

// cellCounts is cell i's reference and current count as of the current window.
func (m *xsModel) cellCounts(i int) (r, l uint16) {
	c := &m.tab[i]
	switch c.epoch {
	case m.epoch:
		return c.r, c.l
	case m.epoch - 1:
		return c.l, 0
	}
	return 0, 0
}

// UnmarshalBinary implements Persistent; it replaces x's configuration and state.
func (x *XStream) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapXStream, "xstream")
	if err != nil {
		return err
	}
	cfg := XStreamConfig{
		Projections: r.intIn(1, 1<<16, "projections"),
		Chains:      r.intIn(1, 1<<16, "chains"),
		Depth:       r.intIn(1, 40, "depth"),
		Window:      r.intIn(1, math.MaxUint16, "window"),
	}
	seed := r.u64("seed")
	nm := r.intIn(0, XStreamMaxModels, "models")
	if r.err != nil {
		return r.err
	}
	out, err := NewXStream(cfg, seed)
	if err != nil {
		return fmt.Errorf("xstream snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	k := cfg.Projections
	for range nm {
		d := r.intIn(1, xsMaxDims, "feature count")
		if _, dup := out.models[d]; dup && r.err == nil {
			r.fail("two models for %d features", d)
		}
		// The model, the projection's expected entries, scratch.
		need := XStreamModelBytes(cfg) + (d*k/3+d)*12 + 64*k + 16*d
		if !r.alloc(need, "model") {
			break
		}
		m := newXSModel(cfg, d, seed)
		readFinite(r, m.mean, "mean")
		switch r.u8("phase") {
		case 0:
			rows := r.intIn(0, cfg.Window-1, "first window records")
			m.warm = m.warm[:rows*k]
			readFinite(r, m.warm, "first window projections")
		case 1:
			m.invDelta = make([]float64, k)
			readFinite(r, m.invDelta, "bin widths")
			for _, v := range m.invDelta {
				if !(v > 0) && r.err == nil {
					r.fail("inverse bin width %v", v)
				}
			}
			m.shift = make([]float64, len(m.frac))
			for i, f := range m.frac {
				m.shift[i] = f / m.invDelta[i%k]
			}
			m.warm = nil
			m.count = r.intIn(0, cfg.Window-1, "count")
			m.epoch = uint32(r.intIn(1, math.MaxUint32-1, "epoch"))
			nonzero := r.count(3, "cells with counts")
			i := -1
			for range nonzero {
				i += 1 + int(min(r.uvar("cell gap"), uint64(len(m.tab))))
				rc, lc := r.uvar("reference count"), r.uvar("current count")
				if r.err != nil {
					break
				}
				if i >= len(m.tab) || rc > math.MaxUint16 || lc > math.MaxUint16 || rc|lc == 0 {
					r.fail("cell %d of %d with counts %d, %d", i, len(m.tab), rc, lc)
					break
				}
				m.tab[i] = xsBucket{r: uint16(rc), l: uint16(lc), epoch: m.epoch}
			}
		default:
			r.fail("unknown model phase")
		}
		out.models[d] = m
	}
	if err := r.done(); err != nil {
		return err
	}
	*x = *out
	return nil
}

// readFinite fills v with finite float64s.
func readFinite(r *snapReader, v []float64, field string) {
	r.floats(v, field)
	for _, c := range v {
		if !finite(c) && r.err == nil {
			r.fail("%s: %v is not finite", field, c)
		}
	}
}
