package detectors

import (
	"cmp"
	"math"
	"slices"
)

// ROCAUC is the area under the ROC curve of scores against labels (1 = positive), by
// the Mann-Whitney U statistic with mid-ranks for ties. It is NaN when one class is
// missing.
func ROCAUC(scores []float64, labels []int) float64 {
	n := len(scores)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(scores[a], scores[b]) })
	var rankSumPos float64
	var pos int
	for i := 0; i < n; {
		j := i
		for j < n && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(i+j+1) / 2 // ranks are 1-based: i+1..j
		for k := i; k < j; k++ {
			if labels[idx[k]] == 1 {
				rankSumPos += mid
				pos++
			}
		}
		i = j
	}
	neg := n - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSumPos - float64(pos)*float64(pos+1)/2) / (float64(pos) * float64(neg))
}
