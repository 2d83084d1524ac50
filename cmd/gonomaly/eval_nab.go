package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gonomaly/gonomaly/internal/eval"
)

// nabPublished are the standard-profile scores of the NAB README (full 58-series corpus)
// that a run is read against.
var nabPublished = []struct {
	name     string
	standard float64
}{
	{"ARTime", 74.9}, {"Numenta HTM", 70.5}, {"CAD OSE", 69.9}, {"earthgecko Skyline", 58.2},
	{"KNN CAD", 58.0}, {"Relative Entropy", 54.6}, {"Random Cut Forest (AWS)", 51.7},
	{"Twitter ADVec", 47.1}, {"Windowed Gaussian", 39.6}, {"Random", 11.0}, {"Null", 0},
}

// nabResultJSON is one line of `eval nab --json`.
type nabResultJSON struct {
	Detector    string             `json:"detector"`
	Standard    float64            `json:"standard"`
	RewardLowFP float64            `json:"reward_low_fp"`
	RewardLowFN float64            `json:"reward_low_fn"`
	Thresholds  map[string]float64 `json:"thresholds"`
	Raw         map[string]float64 `json:"raw"`
	// Detected windows and false positives under the standard profile's threshold.
	Detected       int `json:"detected"`
	Windows        int `json:"windows"`
	FalsePositives int `json:"false_positives"`
}

// cmdEvalNAB runs `gonomaly eval nab`: every configuration through the real pipeline
// stages on a NAB-style corpus, scored as NAB scores.
func cmdEvalNAB(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("eval nab", flag.ContinueOnError)
	data := fs.String("data", "", "corpus directory: <category>/<name>.csv files with header timestamp,value")
	labels := fs.String("labels", "", "anomaly windows JSON (default: DATA/combined_windows.json)")
	dets := fs.String("detectors", "", "comma-separated streaming detectors and/or \"ensemble\" (default: every streaming detector, then ensemble)")
	specPath := fs.String("spec", "", "pipeline spec YAML for the ensemble and the base of single detectors (empty: the built-in default)")
	workers := fs.Int("workers", runtime.NumCPU(), "series streamed in parallel")
	asJSON := fs.Bool("json", false, "print results as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return usageErr("--data DIR is required")
	}
	if *labels == "" {
		*labels = filepath.Join(*data, "combined_windows.json")
	}
	if *workers < 1 {
		return usageErr("--workers %d: must be at least 1", *workers)
	}
	base, err := loadSpec(*specPath)
	if err != nil {
		return err
	}
	var names []string
	for n := range strings.SplitSeq(*dets, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	configs, err := eval.NABConfigs(base, names)
	if err != nil {
		return usageErr("--detectors: %v", err)
	}

	corpus, err := eval.LoadNAB(*data, *labels)
	if err != nil {
		return err
	}
	rows := 0
	for _, s := range corpus.Series {
		rows += s.Rows
	}
	fmt.Fprintf(env.stderr, "nab: %d series, %d rows, %d windows; %d configurations on %d workers\n",
		len(corpus.Series), rows, corpus.Windows(), len(configs), *workers)
	if n := len(corpus.Unmatched); n > 0 {
		fmt.Fprintf(env.stderr, "nab: %d labelled series have no file in %s and are left out (scores are not comparable with NAB's full corpus): %s\n",
			n, *data, strings.Join(corpus.Unmatched, ", "))
	}

	start := time.Now()
	var mu sync.Mutex
	last := time.Time{}
	progress := func(done, total int) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); done == total || now.Sub(last) >= time.Second {
			last = now
			fmt.Fprintf(env.stderr, "nab: %d/%d series streamed (%s)\n", done, total, now.Sub(start).Round(100*time.Millisecond))
		}
	}
	results, err := eval.RunNAB(ctx, configs, corpus, *workers, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		return printNABJSON(env, results)
	}
	printNABTable(env, results)
	return nil
}

func printNABJSON(env *environment, results []eval.NABDetectorScore) error {
	out := struct {
		Results []nabResultJSON `json:"results"`
	}{Results: []nabResultJSON{}}
	for _, r := range results {
		j := nabResultJSON{Detector: r.Detector, Thresholds: map[string]float64{}, Raw: map[string]float64{}}
		for _, p := range r.Profiles {
			switch p.Profile {
			case "standard":
				j.Standard = p.Normalized
				j.Detected, j.Windows, j.FalsePositives = p.Detected, p.Windows, p.FalsePositives
			case "reward_low_fp":
				j.RewardLowFP = p.Normalized
			case "reward_low_fn":
				j.RewardLowFN = p.Normalized
			}
			j.Thresholds[p.Profile] = p.Threshold
			j.Raw[p.Profile] = p.Raw
		}
		out.Results = append(out.Results, j)
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func printNABTable(env *environment, results []eval.NABDetectorScore) {
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "detector\tstandard\tlow FP\tlow FN\tthreshold (std)\twindows hit\tFPs (std)\t")
	for _, r := range results {
		p := r.Profiles
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.6g\t%d/%d\t%d\t\n", r.Detector,
			p[0].Normalized, p[1].Normalized, p[2].Normalized, p[0].Threshold, p[0].Detected, p[0].Windows, p[0].FalsePositives)
	}
	tw.Flush()
	fmt.Fprintln(env.stdout, "\npublished (NAB README, full 58-series corpus, standard profile):")
	tw = tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, p := range nabPublished {
		fmt.Fprintf(tw, "%s\t%.1f\t\n", p.name, p.standard)
	}
	tw.Flush()
}
