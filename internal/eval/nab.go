package eval

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// NABProfile weighs the three outcomes of the Numenta Anomaly Benchmark: a detected
// window earns up to TP, a false positive costs up to FP, a missed window costs FN.
type NABProfile struct {
	Name       string
	TP, FP, FN float64
}

// NABProfiles are NAB's three application profiles, in the order NAB reports them.
var NABProfiles = []NABProfile{
	{Name: "standard", TP: 1, FP: 0.11, FN: 1},
	{Name: "reward_low_fp", TP: 1, FP: 0.22, FN: 1},
	{Name: "reward_low_fn", TP: 1, FP: 0.11, FN: 2},
}

// NABWindow is an anomaly window as 0-based row indices, both ends included.
type NABWindow struct{ Start, End int }

// NABLabels is what the scorer needs to know about one series: its length, the rows of
// probation that are never scored, and its windows in order, not overlapping.
type NABLabels struct {
	Name      string
	Rows      int
	Probation int
	Windows   []NABWindow
}

// NABProbation is NAB's probationary period for a series of n rows: min(⌊0.15·n⌋, 750)
// rows in which a detector is still learning and is neither rewarded nor penalised.
func NABProbation(n int) int { return min(n*15/100, 750) }

// nabSigma is NAB's scaled sigmoid: +1 far before a window's right end, 0 on it, −1 from
// three window widths after it on.
func nabSigma(y float64) float64 {
	if y > 3 {
		return -1
	}
	return 2/(1+math.Exp(5*y)) - 1
}

// nabSigmaMinus1 normalises a true positive so the first row of a window is worth A_TP.
var nabSigmaMinus1 = nabSigma(-1)

// nabRowValue says what a detection at row i is worth before the profile's weights. In
// window k it returns k and the true-positive weight in (0,1], earliest best; outside
// every window it returns −1 and the false-positive weight in [−1, 0], which depends only
// on where the row lies, never on the other detections. next is the first window not
// yet behind i; rows must come in increasing order.
func nabRowValue(l *NABLabels, i int, next *int) (window int, v float64) {
	ws := l.Windows
	for *next < len(ws) && ws[*next].End < i {
		*next++
	}
	k := *next
	if k < len(ws) && ws[k].Start <= i {
		w := ws[k]
		width := float64(w.End - w.Start + 1)
		return k, nabSigma(-float64(w.End-i+1)/width) / nabSigmaMinus1
	}
	if k == 0 {
		return -1, -1 // before the first window: nothing excuses it
	}
	// After window k−1: close behind it a detection is probably the same anomaly seen
	// late and costs little; three widths on it costs the full A_FP. A one-row window
	// divides by zero, which yields +Inf and so the full cost.
	w := ws[k-1]
	return -1, nabSigma(float64(i-w.End) / float64(w.End-w.Start))
}

// NABRawScore is one series' raw NAB score under profile p when the rows with
// detected(i) true are detections: the best detection of each window earns its TP weight,
// other detections inside windows count for nothing, detections outside windows cost
// their FP weight, and undetected windows cost A_FN. Probation rows are skipped.
func NABRawScore(l *NABLabels, detected func(row int) bool, p NABProfile) float64 {
	best := make([]float64, len(l.Windows))
	hit := make([]bool, len(l.Windows))
	fp := 0.0
	next := 0
	for i := l.Probation; i < l.Rows; i++ {
		if !detected(i) {
			continue
		}
		k, v := nabRowValue(l, i, &next)
		switch {
		case k < 0:
			fp += p.FP * v
		case !hit[k] || v > best[k]:
			hit[k], best[k] = true, v
		}
	}
	s := fp
	for k := range l.Windows {
		if hit[k] {
			s += p.TP * best[k]
		} else {
			s -= p.FN
		}
	}
	return s
}

// NABScore is a detector's result on a corpus under one profile.
type NABScore struct {
	Profile string
	// Threshold is the one chosen for the whole corpus: rows scoring at least this much
	// are detections. Above every score (no detections) when that scores best.
	Threshold float64
	Raw       float64 // summed over files
	// Normalized is 100·(Raw − S_null)/(S_perfect − S_null): 0 for a detector that never
	// fires, 100 for one that hits every window on its first row and nowhere else.
	Normalized float64
	// Detected and Windows count windows; FalsePositives counts detections outside them.
	Detected, Windows, FalsePositives int
}

// nabEvent is a scored row as the threshold sweep sees it.
type nabEvent struct {
	score  float64
	window int32 // corpus-wide window index for a row in a window, −1 otherwise
	value  float64
}

// ScoreNAB chooses, per profile, the single threshold that maximises the corpus raw score
// and returns the scores there. scores[f] holds one score per row of labels[f].
//
// The sweep is exact and costs one sort: a false positive's worth depends only on its
// row, and a window's worth is that of its best (earliest) detection, so lowering the
// threshold past a row changes the total by a known amount. Rows are taken in descending
// score, ties together, and the total is read between distinct scores, which visits every
// distinct score as a threshold plus "above them all".
func ScoreNAB(labels []NABLabels, scores [][]float64, profiles []NABProfile) ([]NABScore, error) {
	if len(scores) != len(labels) {
		return nil, fmt.Errorf("nab: %d score series for %d labelled series", len(scores), len(labels))
	}
	var events []nabEvent
	windows := 0
	for f := range labels {
		l := &labels[f]
		if len(scores[f]) != l.Rows {
			return nil, fmt.Errorf("nab: %s: %d scores for %d rows", l.Name, len(scores[f]), l.Rows)
		}
		next := 0
		for i := l.Probation; i < l.Rows; i++ {
			s := scores[f][i]
			if math.IsNaN(s) {
				return nil, fmt.Errorf("nab: %s: row %d: score is NaN", l.Name, i+1)
			}
			k, v := nabRowValue(l, i, &next)
			e := nabEvent{score: s, window: -1, value: v}
			if k >= 0 {
				e.window = int32(windows + k)
			}
			events = append(events, e)
		}
		windows += len(l.Windows)
	}
	if windows == 0 {
		return nil, errors.New("nab: the corpus has no anomaly windows, so no score can be normalised")
	}
	slices.SortFunc(events, func(a, b nabEvent) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})

	maxScore := math.Inf(-1)
	if len(events) > 0 {
		maxScore = events[0].score
	}
	out := make([]NABScore, len(profiles))
	best := make([]float64, windows)
	hit := make([]bool, windows)
	for pi, p := range profiles {
		clear(hit)
		total := -p.FN * float64(windows) // no detections at all
		bestTotal := total
		threshold := math.Inf(1)
		for i := 0; i < len(events); {
			s := events[i].score
			for ; i < len(events) && events[i].score == s; i++ {
				e := &events[i]
				if e.window < 0 {
					total += p.FP * e.value
					continue
				}
				v := p.TP * e.value
				switch k := e.window; {
				case !hit[k]:
					total += v + p.FN
					hit[k], best[k] = true, v
				case v > best[k]:
					total += v - best[k]
					best[k] = v
				}
			}
			// Strictly better only: of equal totals the higher threshold fires less.
			if total > bestTotal {
				bestTotal, threshold = total, s
			}
		}
		if math.IsInf(threshold, 1) {
			// JSON has no infinity; the next float above the top score detects nothing.
			threshold = math.Nextafter(maxScore, math.Inf(1))
			if math.IsInf(maxScore, -1) {
				threshold = 1
			}
		}
		out[pi] = nabScoreAt(labels, scores, p, threshold, windows)
	}
	return out, nil
}

// nabScoreAt scores the corpus at one threshold from scratch, so the reported score does
// not carry the sweep's accumulated rounding.
func nabScoreAt(labels []NABLabels, scores [][]float64, p NABProfile, threshold float64, windows int) NABScore {
	r := NABScore{Profile: p.Name, Threshold: threshold, Windows: windows}
	for f := range labels {
		l := &labels[f]
		sc := scores[f]
		detected := func(i int) bool { return sc[i] >= threshold }
		r.Raw += NABRawScore(l, detected, p)
		next := 0
		hit := make([]bool, len(l.Windows))
		for i := l.Probation; i < l.Rows; i++ {
			if !detected(i) {
				continue
			}
			if k, _ := nabRowValue(l, i, &next); k >= 0 {
				hit[k] = true
			} else {
				r.FalsePositives++
			}
		}
		for _, h := range hit {
			if h {
				r.Detected++
			}
		}
	}
	null, perfect := -p.FN*float64(windows), p.TP*float64(windows)
	r.Normalized = 100 * (r.Raw - null) / (perfect - null)
	return r
}
