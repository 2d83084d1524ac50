package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/producers"
	"github.com/gonomaly/gonomaly/schemas"
)

func cmdProduce(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	topic := fs.String("topic", "records", "topic to publish to (relative to the prefix unless it has a dot)")
	format := fs.String("format", "json", "value encoding: json or avro")
	csvPath := fs.String("csv", "", "read records from this CSV file (- for stdin)")
	ndjsonPath := fs.String("ndjson", "", "read records from this NDJSON file (- for stdin)")
	synthetic := fs.Bool("synthetic", false, "generate a synthetic stream with labelled anomalies")
	seriesCol := fs.String("series-column", "", "CSV: column holding the series id")
	seriesName := fs.String("series", "", "CSV: one series per file, with this id")
	timeCol := fs.String("time-column", "timestamp", "CSV: column holding the time (RFC 3339, 2006-01-02 15:04:05, or epoch)")
	valueCols := fs.String("value-columns", "", "CSV: comma-separated value columns (default: every other column)")
	seriesCount := fs.Int("series-count", 10, "synthetic: number of series")
	features := fs.Int("features", 1, "synthetic: values per record")
	count := fs.Int64("count", 10_000, "synthetic: records to publish (0: until interrupted)")
	seed := fs.Uint64("seed", 1, "synthetic: seed")
	anomalyRate := fs.Float64("anomaly-rate", 0.002, "synthetic: fraction of records that start an injected anomaly")
	labels := fs.String("labels", "", "synthetic: write the injected anomalies to this CSV file")
	rate := fs.Float64("rate", 0, "cap on records/s (0: as fast as possible)")
	skipBad := fs.Bool("skip-bad", false, "skip bad input lines (reported on stderr) instead of stopping")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	chosen := 0
	for _, on := range []bool{*csvPath != "", *ndjsonPath != "", *synthetic} {
		if on {
			chosen++
		}
	}
	if chosen != 1 {
		return usageErr("choose exactly one input: --csv FILE, --ndjson FILE (- for stdin) or --synthetic")
	}
	valueFormat, err := schemas.ParseFormat(*format)
	if err != nil || (valueFormat != schemas.FormatJSON && valueFormat != schemas.FormatAvro) {
		return usageErr("--format %q: use json or avro", *format)
	}

	var src producers.Source
	var gen *producers.Synthetic
	switch {
	case *synthetic:
		gen = producers.NewSynthetic(producers.SyntheticConfig{
			Series: *seriesCount, Features: *features, Count: *count, Seed: *seed, AnomalyRate: *anomalyRate,
		})
		src = gen
	case *csvPath != "":
		r, closeFn, err := openInput(*csvPath, env)
		if err != nil {
			return err
		}
		defer closeFn()
		cfg := producers.CSVConfig{SeriesColumn: *seriesCol, Series: *seriesName, TimeColumn: *timeCol}
		if *valueCols != "" {
			cfg.ValueColumns = splitList(*valueCols)
		}
		csvSrc, err := producers.NewCSVSource(r, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", *csvPath, err)
		}
		src = csvSrc
	default:
		r, closeFn, err := openInput(*ndjsonPath, env)
		if err != nil {
			return err
		}
		defer closeFn()
		src = producers.NewNDJSONSource(r)
	}

	cl, c, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	defer cl.Close()
	full := *topic
	if !strings.Contains(full, ".") {
		full = c.Prefix + full
	}
	pub, err := producers.NewPublisher(cl, full, producers.PublisherOptions{
		Format:  valueFormat,
		Rate:    *rate,
		SkipBad: *skipBad,
		OnBad:   func(err error) { fmt.Fprintf(env.stderr, "skipped: %v\n", err) },
		Progress: func(s producers.Stats) {
			fmt.Fprintf(env.stderr, "sent %d  acked %d  errors %d  %.0f records/s\n", s.Sent, s.Acked, s.Errors, s.Rate)
		},
	})
	if err != nil {
		return err
	}
	start := time.Now()
	stats, err := pub.Run(ctx, src)
	fmt.Fprintf(env.stderr, "published %d records to %s in %s (%d errors, %d skipped)\n",
		stats.Acked, full, time.Since(start).Round(time.Millisecond), stats.Errors, stats.Skipped)
	if gen != nil && *labels != "" {
		if lerr := writeLabels(*labels, gen); lerr != nil && err == nil {
			err = lerr
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: what was sent is reported above
	}
	return err
}

func openInput(path string, env *environment) (io.Reader, func(), error) {
	if path == "-" {
		return env.stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func writeLabels(path string, gen *producers.Synthetic) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	if err := gen.WriteLabels(f); err != nil {
		f.Close()
		return fmt.Errorf("--labels: %w", err)
	}
	return f.Close()
}
