package detectors

import (
	"fmt"
	"strings"
)

// Combiner turns the calibrated scores of a record's detectors (each in [0,1]) into one
// score. Scores come in the order the pipeline spec lists the detectors (aom groups by
// it). weights align with scores; nil means all 1, and only weighted_mean reads them.
// NaN scores are skipped, so one broken detector does not sink the verdict; with no score
// left the result is 0. Combiners keep no state and allocate nothing for up to 32 scores.
type Combiner func(scores, weights []float64) float64

// Combination methods, as named in pipeline specs.
const (
	CombineMean         = "mean"
	CombineMax          = "max"
	CombineWeightedMean = "weighted_mean"
	CombineMedian       = "median"
	CombineAOM          = "aom"
	CombineVote         = "vote"
)

// AOMBucket is aom's default bucket size. Average of maximum (Aggarwal & Sathe, "Theoretical
// Foundations and Algorithms for Outlier Ensembles", 2015) splits the detectors into
// buckets, takes each bucket's maximum and averages them: between max, which one noisy
// detector can trip, and mean, which one confident detector cannot move. Ensembles here
// have a handful of detectors, so buckets hold two, consecutive in spec order (a spec can
// pair detectors that see different things); a last odd one is a bucket alone.
const AOMBucket = 2

// VoteCut is the calibrated score at which a detector votes "anomalous" for vote, whose
// result is the fraction of detectors voting so: with a threshold of 0.5 on it, a record
// is anomalous when at least half of them agree. Calibrated scores are percentiles of each
// detector's own history, so 0.5 only means "above its median": pipelines that want
// votes for rare scores use NewVoteCombiner with a cut near their threshold.
const VoteCut = 0.5

// CombineMethods lists the names NewCombiner accepts (a fresh slice: callers may keep or
// change it).
func CombineMethods() []string {
	return []string{CombineMean, CombineMax, CombineWeightedMean, CombineMedian, CombineAOM, CombineVote}
}

// NewCombiner resolves a method name once, when the pipeline starts, so the per-record
// path calls a function instead of switching on a string.
func NewCombiner(method string) (Combiner, error) {
	switch method {
	case CombineMean:
		return combineMean, nil
	case CombineMax:
		return combineMax, nil
	case CombineWeightedMean:
		return combineWeightedMean, nil
	case CombineMedian:
		return combineMedian, nil
	case CombineAOM:
		return NewAOMCombiner(AOMBucket)
	case CombineVote:
		return NewVoteCombiner(VoteCut)
	}
	return nil, fmt.Errorf("unknown ensemble method %q (known: %s)", method, strings.Join(CombineMethods(), ", "))
}

// Combine is NewCombiner and a call, for one-off use (batch jobs, tests).
func Combine(method string, scores, weights []float64) (float64, error) {
	c, err := NewCombiner(method)
	if err != nil {
		return 0, err
	}
	return c(scores, weights), nil
}

func combineMean(scores, _ []float64) float64 {
	sum, n := 0.0, 0
	for _, s := range scores {
		if s == s {
			sum += s
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func combineMax(scores, _ []float64) float64 {
	m := 0.0
	for _, s := range scores {
		if s > m { // false for NaN
			m = s
		}
	}
	return m
}

// combineWeightedMean ignores negative and NaN weights (a weight of 0 silences a detector).
func combineWeightedMean(scores, weights []float64) float64 {
	if weights == nil {
		return combineMean(scores, nil)
	}
	sum, wsum := 0.0, 0.0
	for i, s := range scores {
		if i >= len(weights) {
			break
		}
		if w := weights[i]; s == s && w > 0 {
			sum += w * s
			wsum += w
		}
	}
	if wsum == 0 {
		return 0
	}
	return sum / wsum
}

func combineMedian(scores, _ []float64) float64 {
	var buf [32]float64
	v := buf[:0]
	if len(scores) > len(buf) {
		v = make([]float64, 0, len(scores))
	}
	// Insertion sort: ensembles have a handful of detectors.
	for _, s := range scores {
		if s != s {
			continue
		}
		i := len(v)
		v = append(v, s)
		for ; i > 0 && v[i-1] > s; i-- {
			v[i] = v[i-1]
		}
		v[i] = s
	}
	n := len(v)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return v[n/2]
	default:
		return (v[n/2-1] + v[n/2]) / 2
	}
}

// NewAOMCombiner returns average of maximum over buckets of bucket consecutive detectors
// (see AOMBucket). A bucket whose scores are all NaN is left out of the average.
func NewAOMCombiner(bucket int) (Combiner, error) {
	if bucket < 1 {
		return nil, fmt.Errorf("aom: bucket size %d must be at least 1", bucket)
	}
	return func(scores, _ []float64) float64 {
		sum, n := 0.0, 0
		for lo := 0; lo < len(scores); lo += bucket {
			m, seen := 0.0, false
			for _, s := range scores[lo:min(lo+bucket, len(scores))] {
				if s == s {
					m = max(m, s)
					seen = true
				}
			}
			if seen {
				sum += m
				n++
			}
		}
		if n == 0 {
			return 0
		}
		return sum / float64(n)
	}, nil
}

// NewVoteCombiner returns the fraction of detectors (NaN ones left out) whose calibrated
// score is at least cut (see VoteCut).
func NewVoteCombiner(cut float64) (Combiner, error) {
	if !(cut > 0 && cut <= 1) {
		return nil, fmt.Errorf("vote: cut %v must be in (0, 1]", cut)
	}
	return func(scores, _ []float64) float64 {
		votes, n := 0, 0
		for _, s := range scores {
			if s == s {
				n++
				if s >= cut {
					votes++
				}
			}
		}
		if n == 0 {
			return 0
		}
		return float64(votes) / float64(n)
	}, nil
}
