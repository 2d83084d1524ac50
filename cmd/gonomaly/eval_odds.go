package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/gonomaly/gonomaly/internal/eval"
)

// cmdEvalODDS runs PyOD's benchmark protocol over the ODDS CSVs of a directory for the
// chosen batch detectors and prints the results; internal/eval does the work.
func cmdEvalODDS(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("eval odds", flag.ContinueOnError)
	data := fs.String("data", "", "directory of ODDS CSVs (.csv or .csv.gz, last column \"label\", 1 = outlier)")
	datasets := fs.String("datasets", "", "datasets to evaluate, by file name without .csv[.gz] (default: every file)")
	dets := fs.String("detectors", "", "batch detectors to evaluate, comma-separated (default: every registered one)")
	seeds := fs.Int("seeds", 10, "random 60/40 splits to average (seeds 0..N-1)")
	workers := fs.Int("workers", 0, "goroutines a parallel detector may use to fit and score (0: GOMAXPROCS)")
	asJSON := fs.Bool("json", false, `print {"results":[...]} instead of tables`)
	markdown := fs.Bool("markdown", false, "print a markdown table with PyOD's published numbers beside ours")
	var params stringList
	fs.Var(&params, "param", "detector parameter override detector.param=value, e.g. iforest.trees=200; repeatable")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return usageErr("--data DIR is required (e.g. --data ../shared/data/odds)")
	}
	if *seeds < 1 || *seeds > 1000 {
		return usageErr("--seeds %d: must be 1..1000", *seeds)
	}
	if *asJSON && *markdown {
		return usageErr("--json and --markdown: choose one")
	}
	if *workers < 0 {
		return usageErr("--workers %d: must be 0 (GOMAXPROCS) or more", *workers)
	}
	overrides, err := eval.ParseOverrides(params)
	if err != nil {
		return usageErr("--param %v", err)
	}
	candidates, err := eval.BatchCandidates(splitList(*dets), overrides)
	if err != nil {
		return usageErr("%v", err)
	}
	files, err := eval.DatasetFiles(*data, splitList(*datasets))
	if err != nil {
		return usageErr("--data: %v", err)
	}
	results, err := eval.RunODDSFiles(ctx, eval.ODDSConfig{
		Detectors: candidates, Seeds: *seeds, Workers: *workers,
		Progress: func(p eval.Progress) {
			outcome := fmt.Sprintf("roc_auc %.3f", p.Result.ROCAUC)
			if p.Result.Error != "" {
				outcome = "failed: " + p.Result.Error
			}
			fmt.Fprintf(env.stderr, "[%d/%d] %s %s: %s in %.1f s\n", p.Done, p.Total, p.Dataset, p.Detector, outcome, p.Seconds)
		},
	}, files)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		err = eval.WriteJSON(env.stdout, results)
	case *markdown:
		_, err = io.WriteString(env.stdout, eval.MarkdownTable(results))
	default:
		err = eval.WriteTable(env.stdout, results)
	}
	if err != nil {
		return err
	}
	// The results are printed either way; a failed evaluation still fails the command so
	// that scripts and CI notice.
	if failed := eval.Failed(results); len(failed) > 0 {
		msgs := make([]string, len(failed))
		for i, r := range failed {
			msgs[i] = fmt.Sprintf("%s on %s: %s", r.Detector, r.Dataset, r.Error)
		}
		return fmt.Errorf("%d of %d evaluations failed:\n  %s", len(failed), len(results), strings.Join(msgs, "\n  "))
	}
	return nil
}
