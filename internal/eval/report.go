package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes {"results": [...]}, the machine-readable form of a run.
func WriteJSON(w io.Writer, results []Result) error {
	if results == nil {
		results = []Result{} // "results": [] rather than null
	}
	return json.NewEncoder(w).Encode(struct {
		Results []Result `json:"results"`
	}{results})
}

// WriteTable writes aligned datasets × detectors grids of ROC-AUC, precision@n and
// seconds per seed (fit + score), for a terminal.
func WriteTable(w io.Writer, results []Result) error {
	datasets, dets := axes(results)
	cell := map[[2]string]Result{}
	for _, r := range results {
		cell[[2]string{r.Dataset, r.Detector}] = r
	}
	grids := []struct {
		title string
		value func(Result) string
	}{
		{"ROC-AUC" + seedsNote(results), func(r Result) string { return fmtMetric(r.ROCAUC) }},
		{"PRECISION@N (n = outliers in the test part)", func(r Result) string { return fmtMetric(r.PrecisionAtN) }},
		{"SECONDS PER SEED (fit + score)", func(r Result) string { return fmt.Sprintf("%.3f", r.FitSeconds+r.ScoreSeconds) }},
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for g, grid := range grids {
		if g > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw, grid.title)
		fmt.Fprintf(tw, "DATASET\tROWS\tCOLS\t%s\n", strings.Join(dets, "\t"))
		for _, ds := range datasets {
			var rows, cols int
			vals := make([]string, len(dets))
			for i, d := range dets {
				r, ok := cell[[2]string{ds, d}]
				switch {
				case !ok:
					vals[i] = "-"
					continue
				case r.Error != "":
					vals[i] = "error"
				default:
					vals[i] = grid.value(r)
				}
				rows, cols = r.Rows, r.Cols
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", ds, rows, cols, strings.Join(vals, "\t"))
		}
	}
	if failed := Failed(results); len(failed) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ERRORS")
		for _, r := range failed {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Dataset, r.Detector, r.Error)
		}
	}
	return tw.Flush()
}

// MarkdownTable renders results as a markdown table, one row per dataset and detector,
// with PyOD's published numbers beside ours and our lead over them ("delta"; positive
// means we score higher). References from a single split are marked † and explained in
// a footnote under the table.
func MarkdownTable(results []Result) string {
	var b strings.Builder
	b.WriteString("| dataset | detector | ROC-AUC | PyOD ROC-AUC | delta | precision@n | PyOD precision@n | delta | fit s | score s |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	datasets, dets := axes(results)
	cell := map[[2]string]Result{}
	for _, r := range results {
		cell[[2]string{r.Dataset, r.Detector}] = r
	}
	singleSplit := false
	for _, ds := range datasets {
		for _, d := range dets {
			r, ok := cell[[2]string{ds, d}]
			if !ok {
				continue
			}
			ref, hasRef := PublishedPyOD(ds, d)
			if !hasRef {
				ref = Reference{ROCAUC: math.NaN(), PrecisionAtN: math.NaN()}
			}
			mark := ""
			if hasRef && ref.Splits == 1 {
				mark, singleSplit = "†", true
			}
			ours, oursP, fit, score := fmtMetric(r.ROCAUC), fmtMetric(r.PrecisionAtN), fmt.Sprintf("%.3f", r.FitSeconds), fmt.Sprintf("%.3f", r.ScoreSeconds)
			if r.Error != "" {
				ours, oursP, fit, score = "error", "-", "-", "-"
			}
			refAUC, refP := fmtMetric(ref.ROCAUC), fmtMetric(ref.PrecisionAtN)
			if refAUC != "-" {
				refAUC += mark
			}
			if refP != "-" {
				refP += mark
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", ds, d,
				ours, refAUC, fmtDelta(r.ROCAUC, ref.ROCAUC),
				oursP, refP, fmtDelta(r.PrecisionAtN, ref.PrecisionAtN), fit, score)
		}
	}
	if singleSplit {
		b.WriteString("\n† PyOD's published number for ECOD, COPOD and LODA is from a single split (its 2024 notebook run), not a mean of 10.\n")
	}
	return b.String()
}

// axes returns the datasets and detectors of results in their order of first appearance.
func axes(results []Result) (datasets, dets []string) {
	for _, r := range results {
		if !slices.Contains(datasets, r.Dataset) {
			datasets = append(datasets, r.Dataset)
		}
		if !slices.Contains(dets, r.Detector) {
			dets = append(dets, r.Detector)
		}
	}
	return datasets, dets
}

func seedsNote(results []Result) string {
	if len(results) == 0 {
		return ""
	}
	for _, r := range results {
		if r.Seeds != results[0].Seeds {
			return ""
		}
	}
	if results[0].Seeds == 1 {
		return " (one 60/40 split)"
	}
	return fmt.Sprintf(" (mean of %d random 60/40 splits)", results[0].Seeds)
}

func fmtMetric(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

func fmtDelta(ours, ref float64) string {
	if math.IsNaN(ours) || math.IsNaN(ref) {
		return "-"
	}
	d := math.Round((ours-ref)*1000) / 1000
	if d == 0 {
		return "0.000" // not "-0.000" or "+0.000", which suggest a direction there is not
	}
	return fmt.Sprintf("%+.3f", d)
}
