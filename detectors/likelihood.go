package detectors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Post-processors of one series' combined anomaly scores (in [0,1]), applied after
// calibration and combination. Each holds one series' state, is used by one goroutine,
// has memory bounded by its configuration, and implements Persistent so the ensemble can
// checkpoint it with its partition.

// Bounds of the post-processors' windows: memory bounds, since each keeps its window
// per series.
const (
	MaxLikelihoodShort = 10_000
	MaxLikelihoodLong  = 10_000_000
	MaxPeakWindow      = 100_000
)

// LikelihoodWarmup is how many averaged scores AnomalyLikelihood learns before it judges;
// until then it returns 0.5, "no evidence either way", as Numenta's does.
const LikelihoodWarmup = 100

// likelihoodMinSD floors the long-term spread: a series whose scores never move would
// otherwise make the slightest change infinitely unlikely.
const likelihoodMinSD = 0.005

// AnomalyLikelihood is Numenta's anomaly likelihood (Ahmad et al., "Unsupervised
// real-time anomaly detection for streaming data", Neurocomputing 2017): it asks how
// unusual the recent scores of a series are for that series, rather than how high one
// score is. The short-term mean of the last Short scores is compared with a normal
// distribution of those means over about the last Long records, and the likelihood is
// 1 − Q((short mean − long mean) / long sd): the probability that the recent scores are
// not just the series' usual noise. One-sided: scores below the usual are not anomalous.
//
// The long-term mean and variance are exponentially weighted with memory Long (exact
// while fewer than Long means are seen), so a series costs Short + 6 numbers however long
// Long is.
type AnomalyLikelihood struct {
	short, long int
	ring        []float64 // the last short scores; next is the oldest once full
	next        int
	sum         float64 // of ring
	n           int     // averaged scores learned, capped at long
	mean, vari  float64 // of the short-term means
}

// NewAnomalyLikelihood returns a likelihood over short-term means of short scores against
// about the last long of them; short must be in [1, MaxLikelihoodShort] and long in
// [2, MaxLikelihoodLong].
func NewAnomalyLikelihood(short, long int) (*AnomalyLikelihood, error) {
	if short < 1 || short > MaxLikelihoodShort {
		return nil, fmt.Errorf("likelihood: short = %d is out of range [1, %d]", short, MaxLikelihoodShort)
	}
	if long < 2 || long > MaxLikelihoodLong {
		return nil, fmt.Errorf("likelihood: long = %d is out of range [2, %d]", long, MaxLikelihoodLong)
	}
	return &AnomalyLikelihood{short: short, long: long, ring: make([]float64, 0, short)}, nil
}

// Update judges score against what came before and then learns it. NaN yields NaN and is
// not learned; ±Inf count as 1 and 0, the ends of the scores' range.
func (l *AnomalyLikelihood) Update(score float64) float64 {
	if score != score {
		return score
	}
	score = math.Max(0, math.Min(1, score))
	if len(l.ring) < l.short {
		l.ring = append(l.ring, score)
	} else {
		l.sum -= l.ring[l.next]
		l.ring[l.next] = score
		l.next = (l.next + 1) % l.short
	}
	l.sum += score
	m := l.sum / float64(len(l.ring))

	out := 0.5
	if l.n >= LikelihoodWarmup {
		sd := math.Max(math.Sqrt(l.vari), likelihoodMinSD)
		out = 0.5 * math.Erfc(-(m-l.mean)/sd/math.Sqrt2) // 1 − Q(z)
	}
	if l.n < l.long {
		l.n++
	}
	a := 1 / float64(l.n)
	d := m - l.mean
	l.mean += a * d
	l.vari = (1 - a) * (l.vari + a*d*d)
	if len(l.ring) == l.short && l.next == 0 {
		l.sum = kahanSum(l.ring) // shed the rounding that running sums collect
	}
	return out
}

func kahanSum(xs []float64) float64 {
	var s, c float64
	for _, x := range xs {
		y := x - c
		t := s + y
		c = (t - s) - y
		s = t
	}
	return s
}

const likelihoodVersion = 1

// MarshalBinary implements Persistent: version, short, long, learned count, mean,
// variance, then the window oldest first.
func (l *AnomalyLikelihood) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+8*(2+len(l.ring)))
	b = append(b, likelihoodVersion)
	b = binary.AppendUvarint(b, uint64(l.short))
	b = binary.AppendUvarint(b, uint64(l.long))
	b = binary.AppendUvarint(b, uint64(l.n))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(l.mean))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(l.vari))
	b = binary.AppendUvarint(b, uint64(len(l.ring)))
	for i := range l.ring {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(l.ring[(l.next+i)%len(l.ring)]))
	}
	return b, nil
}

// UnmarshalBinary implements Persistent, checking every field against the constructor's
// rules so that a corrupt checkpoint is an error, not a panic later.
func (l *AnomalyLikelihood) UnmarshalBinary(data []byte) error {
	r := binReader{b: data}
	if v := r.byte(); v != likelihoodVersion {
		return fmt.Errorf("likelihood: unknown state version %d", v)
	}
	short, long, n := r.uvarint(), r.uvarint(), r.uvarint()
	mean, vari := r.float(), r.float()
	k := r.uvarint()
	if r.err != nil {
		return fmt.Errorf("likelihood: %w", r.err)
	}
	fresh, err := NewAnomalyLikelihood(int(min(short, math.MaxInt32)), int(min(long, math.MaxInt32)))
	if err != nil {
		return err
	}
	switch {
	case n > long:
		return fmt.Errorf("likelihood: %d scores learned, more than long = %d", n, long)
	case k > short:
		return fmt.Errorf("likelihood: window holds %d scores, more than short = %d", k, short)
	case !finite(mean) || !finite(vari) || vari < 0:
		return errors.New("likelihood: mean or variance is not a finite, non-negative value")
	}
	for range k {
		x := r.float()
		if r.err == nil && !(x >= 0 && x <= 1) {
			return fmt.Errorf("likelihood: score %v in the window is outside [0, 1]", x)
		}
		fresh.ring = append(fresh.ring, x)
	}
	if r.err != nil {
		return fmt.Errorf("likelihood: %w", r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("likelihood: %d trailing bytes", len(r.b))
	}
	fresh.n, fresh.mean, fresh.vari = int(n), mean, vari
	fresh.sum = kahanSum(fresh.ring)
	*l = *fresh
	return nil
}

// PeakFilter keeps one anomaly from being reported again and again: a score counts in
// full only if it beats every one of the series' previous Window scores. Any other score
// is capped at the fraction of those scores it beats (below 1), so with a threshold near
// 1 the records after an anomaly are not flagged again unless they beat the one that
// fired, for Window records. A new peak keeps its score, so the scale is unchanged.
type PeakFilter struct {
	window int
	ring   []float64 // the last window scores; next is the oldest once full
	next   int
	sorted []float64 // ring, sorted
}

// NewPeakFilter returns a filter over the last window scores; window must be in
// [1, MaxPeakWindow].
func NewPeakFilter(window int) (*PeakFilter, error) {
	if window < 1 || window > MaxPeakWindow {
		return nil, fmt.Errorf("peak filter: window = %d is out of range [1, %d]", window, MaxPeakWindow)
	}
	return &PeakFilter{window: window}, nil
}

// Filter returns min(score, fraction of the previous scores below score) — score itself
// for the first one — and then remembers score. NaN yields NaN and is not remembered.
func (f *PeakFilter) Filter(score float64) float64 {
	if score != score {
		return score
	}
	out := score
	if n := len(f.sorted); n > 0 {
		below, _ := slices.BinarySearch(f.sorted, score) // scores strictly below
		out = min(score, float64(below)/float64(n))
	}
	if len(f.ring) < f.window {
		f.ring = append(f.ring, score)
	} else {
		old := f.ring[f.next]
		i, _ := slices.BinarySearch(f.sorted, old)
		f.sorted = slices.Delete(f.sorted, i, i+1)
		f.ring[f.next] = score
		f.next = (f.next + 1) % f.window
	}
	i, _ := slices.BinarySearch(f.sorted, score)
	f.sorted = slices.Insert(f.sorted, i, score)
	return out
}

const peakFilterVersion = 1

// MarshalBinary implements Persistent: version, window, then the scores oldest first.
func (f *PeakFilter) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+8*len(f.ring))
	b = append(b, peakFilterVersion)
	b = binary.AppendUvarint(b, uint64(f.window))
	b = binary.AppendUvarint(b, uint64(len(f.ring)))
	for i := range f.ring {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f.ring[(f.next+i)%len(f.ring)]))
	}
	return b, nil
}

// UnmarshalBinary implements Persistent.
func (f *PeakFilter) UnmarshalBinary(data []byte) error {
	r := binReader{b: data}
	if v := r.byte(); v != peakFilterVersion {
		return fmt.Errorf("peak filter: unknown state version %d", v)
	}
	window, k := r.uvarint(), r.uvarint()
	if r.err != nil {
		return fmt.Errorf("peak filter: %w", r.err)
	}
	fresh, err := NewPeakFilter(int(min(window, math.MaxInt32)))
	if err != nil {
		return err
	}
	if k > window {
		return fmt.Errorf("peak filter: %d scores, more than window = %d", k, window)
	}
	for range k {
		x := r.float()
		if r.err == nil && x != x {
			return errors.New("peak filter: NaN score")
		}
		fresh.ring = append(fresh.ring, x)
	}
	if r.err != nil {
		return fmt.Errorf("peak filter: %w", r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("peak filter: %d trailing bytes", len(r.b))
	}
	fresh.sorted = slices.Clone(fresh.ring)
	slices.Sort(fresh.sorted)
	*f = *fresh
	return nil
}

// binReader reads the post-processors' checkpoints; the first error sticks and every
// later read returns zero.
type binReader struct {
	b   []byte
	err error
}

var errShortState = errors.New("state is truncated")

func (r *binReader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = cmpErr(r.err, errShortState)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *binReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortState
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) float() float64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = cmpErr(r.err, errShortState)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func cmpErr(old, new error) error {
	if old != nil {
		return old
	}
	return new
}
