package producers

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/gonomaly/gonomaly/schemas"
)

// Anomaly kinds injected by Synthetic, as written in Label.Kind.
const (
	KindSpike      = "spike"
	KindLevelShift = "level_shift"
	KindDrift      = "drift"
)

// SyntheticConfig configures a Synthetic generator. Zero values take the defaults.
type SyntheticConfig struct {
	Series   int           // number of series, named "series-0000", …; default 1
	Features int           // values per record; 1 → "value", k → "f0".."f{k-1}"; default 1
	Step     time.Duration // event time between a series' points, whole ms; default 1 minute
	Start    time.Time     // event time of the first point; default 2026-01-01T00:00:00Z
	Count    int64         // total records over all series; 0 = endless
	Seed     uint64

	// AnomalyRate is the fraction of records (after warm-up) that start an injected
	// anomaly; default 0.002, negative for none. Windows (about 32 points on average)
	// block new anomalies while they last; the generator compensates, up to a rate of
	// about 0.03, where anomalies follow each other back to back.
	AnomalyRate float64
	// WarmupPoints is how many points each series has before its first anomaly, so
	// detectors see a clean baseline; default 200, negative for none.
	WarmupPoints int
}

// Label is one injected anomaly: the ground truth for evaluation.
type Label struct {
	Series string
	TS     int64  // Unix ms of the first anomalous point
	Index  int64  // global record index of that point (0-based, across all series)
	Kind   string // KindSpike, KindLevelShift or KindDrift
	End    int64  // Unix ms of the last point of the window; TS for spikes
}

// Synthetic generates deterministic multi-series data with labelled anomalies: each
// feature is level + linear trend + daily seasonality + Gaussian noise, records are
// interleaved round-robin across series at a fixed step of event time. The same
// config and seed always give the same records and labels.
//
// A Synthetic is not safe for concurrent use.
type Synthetic struct {
	cfg     SyntheticConfig
	names   []string // feature names, shared by every record so keys never allocate
	series  []synthSeries
	startMS int64
	stepMS  int64
	warmup  int64
	pStart  float64 // per eligible point, see newAnomalyProb
	next    int64   // global index of the next record
	labels  []Label
	nSeries int64
}

// synthFeature is one feature's signal model, all in the feature's own units.
type synthFeature struct {
	level float64
	slope float64 // per millisecond of event time
	amp   float64 // seasonal amplitude
	// cos and sin of the seasonal phase, so Next needs one Sincos per record rather
	// than a Sin per feature
	cosPhase, sinPhase float64
	sd                 float64 // noise standard deviation
	offset             float64 // current anomaly offset, recomputed per point
}

// synthSeries is one series' state. Each series has its own PCG stream so its values
// depend only on the seed and its index, not on how many series run beside it.
type synthSeries struct {
	name  string
	rng   *rand.Rand
	feats []synthFeature

	// The active anomaly window, if any: kind, affected feature, remaining points.
	kind    string
	feat    int
	pos     int // points of the window done so far
	span    int
	size    float64 // offset in sd units, signed
	blocked int     // points still covered by the current window
}

// Mean points a new anomaly blocks (spike 1, level shift 20..60, drift 30..80, chosen
// uniformly); used to turn the requested rate into a per-eligible-point probability.
const meanAnomalySpan = (1.0 + 40 + 55) / 3

// NewSynthetic returns a generator for cfg, applying defaults.
func NewSynthetic(cfg SyntheticConfig) *Synthetic {
	if cfg.Series <= 0 {
		cfg.Series = 1
	}
	if cfg.Features <= 0 {
		cfg.Features = 1
	}
	if cfg.Step <= 0 {
		cfg.Step = time.Minute
	}
	if cfg.Step < time.Millisecond {
		cfg.Step = time.Millisecond
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if cfg.AnomalyRate == 0 {
		cfg.AnomalyRate = 0.002
	}
	if cfg.WarmupPoints == 0 {
		cfg.WarmupPoints = 200
	}
	g := &Synthetic{
		cfg:     cfg,
		startMS: cfg.Start.UnixMilli(),
		stepMS:  cfg.Step.Milliseconds(),
		warmup:  int64(max(cfg.WarmupPoints, 0)),
		pStart:  newAnomalyProb(cfg.AnomalyRate),
		nSeries: int64(cfg.Series),
	}
	if cfg.Features == 1 {
		g.names = []string{"value"}
	} else {
		for i := range cfg.Features {
			g.names = append(g.names, "f"+strconv.Itoa(i))
		}
	}
	g.series = make([]synthSeries, cfg.Series)
	for i := range g.series {
		g.series[i] = newSynthSeries(cfg.Seed, i, cfg.Features)
	}
	return g
}

// newAnomalyProb converts a rate of anomalies per record into the probability that an
// eligible point (not inside a window) starts one. Each onset also blocks the
// meanSpan-1 points after it, so a fraction rate·(meanSpan-1) of points cannot fire and
// the rest must fire more often to reach the requested rate.
func newAnomalyProb(rate float64) float64 {
	if rate <= 0 {
		return 0
	}
	blocked := rate * (meanAnomalySpan - 1)
	if blocked >= 0.9 {
		return 1
	}
	return min(rate/(1-blocked), 1)
}

func newSynthSeries(seed uint64, idx, features int) synthSeries {
	// The golden-ratio multiplier spreads consecutive indexes across the PCG's second
	// state word; the seed stays in the first so different seeds never collide.
	rng := rand.New(rand.NewPCG(seed, 0x9E3779B97F4A7C15*uint64(idx+1)))
	s := synthSeries{name: fmt.Sprintf("series-%04d", idx), rng: rng, feats: make([]synthFeature, features)}
	for f := range s.feats {
		level := 10 + 90*rng.Float64()
		sd := level * (0.01 + 0.04*rng.Float64())
		s.feats[f] = synthFeature{
			level: level,
			sd:    sd,
			// Up to half a standard deviation per day: visible over a week, never so
			// steep that a detector's baseline is stale within a window.
			slope: (rng.Float64() - 0.5) * sd / float64(24*time.Hour/time.Millisecond),
			amp:   sd * (1 + 4*rng.Float64()),
		}
		s.feats[f].sinPhase, s.feats[f].cosPhase = math.Sincos(2 * math.Pi * rng.Float64())
	}
	return s
}

// Next fills r with the next record; io.EOF after Count records.
func (g *Synthetic) Next(r *schemas.Record) error {
	i := g.next
	if g.cfg.Count > 0 && i >= g.cfg.Count {
		return io.EOF
	}
	g.next++
	si := i % g.nSeries
	point := i / g.nSeries
	s := &g.series[si]
	ts := g.startMS + point*g.stepMS

	resetRecord(r)
	r.Series = s.name
	r.TS = ts

	if s.blocked == 0 && point >= g.warmup && g.pStart > 0 && s.rng.Float64() < g.pStart {
		g.startAnomaly(s, si, i, point, ts)
	}
	for f := range s.feats {
		s.feats[f].offset = 0
	}
	if s.blocked > 0 {
		s.applyAnomaly()
	}

	tMS := float64(ts - g.startMS)
	// sin(day+phase) = sin(day)·cos(phase) + cos(day)·sin(phase): one Sincos per record
	// instead of a Sin per feature.
	sinDay, cosDay := math.Sincos(2 * math.Pi * float64(ts%86_400_000) / 86_400_000)
	for f := range s.feats {
		ft := &s.feats[f]
		season := ft.amp * (sinDay*ft.cosPhase + cosDay*ft.sinPhase)
		r.Values[g.names[f]] = ft.level + ft.slope*tMS + season + ft.sd*s.rng.NormFloat64() + ft.offset
	}
	return nil
}

// startAnomaly picks a kind, size and span for a new anomaly at this point and labels
// it. Spans are cut short at the last point this series will produce, so a label never
// points past the data.
func (g *Synthetic) startAnomaly(s *synthSeries, si, idx, point, ts int64) {
	rng := s.rng
	sign := 1.0
	if rng.IntN(2) == 0 {
		sign = -1
	}
	s.feat = rng.IntN(len(s.feats))
	s.pos = 0
	switch rng.IntN(3) {
	case 0:
		s.kind, s.span = KindSpike, 1
		s.size = sign * (8 + 7*rng.Float64())
	case 1:
		s.kind, s.span = KindLevelShift, 20+rng.IntN(41)
		s.size = sign * (6 + 4*rng.Float64())
	default:
		s.kind, s.span = KindDrift, 30+rng.IntN(51)
		s.size = sign * 8
	}
	if g.cfg.Count > 0 {
		last := (g.cfg.Count - 1 - si) / g.nSeries // this series' last point
		s.span = int(min(int64(s.span), last-point+1))
	}
	s.blocked = s.span
	g.labels = append(g.labels, Label{
		Series: s.name,
		TS:     ts,
		Index:  idx,
		Kind:   s.kind,
		End:    ts + int64(s.span-1)*g.stepMS,
	})
}

// applyAnomaly sets the affected feature's offset for the current point of the window.
func (s *synthSeries) applyAnomaly() {
	ft := &s.feats[s.feat]
	switch s.kind {
	case KindSpike:
		// Add the seasonal amplitude so the spike cannot hide in a seasonal peak/trough.
		ft.offset = s.size*ft.sd + math.Copysign(ft.amp, s.size)
	case KindLevelShift:
		ft.offset = s.size * ft.sd
	case KindDrift:
		// Ramp from a small step up to the full size on the last point.
		ft.offset = s.size * ft.sd * float64(s.pos+1) / float64(s.span)
	}
	s.pos++
	s.blocked--
}

// Labels returns a copy of the anomalies injected so far, in record order.
func (g *Synthetic) Labels() []Label { return slices.Clone(g.labels) }

// WriteLabels writes the labels so far as CSV: series,ts,kind,end_ts with RFC 3339
// UTC times, the form eval reads back.
func (g *Synthetic) WriteLabels(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"series", "ts", "kind", "end_ts"}); err != nil {
		return err
	}
	for _, l := range g.labels {
		row := []string{l.Series, formatMillis(l.TS), l.Kind, formatMillis(l.End)}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func formatMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}
