package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gonomaly/gonomaly/client"
	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

const jobsUsage = `gonomaly jobs submit [--type detect] [--algorithm A] [--params k=v,...] [--dataset ID] [--model M] [--file job.json] [--wait]
gonomaly jobs status ID | wait ID | cancel ID
gonomaly jobs list [--state S] [--type T] [--limit N] [--cursor C]
gonomaly jobs results ID [--format ndjson|json] [--out FILE]
gonomaly jobs upload FILE [--name N] [--format csv|ndjson]
every subcommand: --api URL (GONOMALY_API), --api-key KEY (GONOMALY_API_KEY), --json`

// cmdJobs submits, tracks, lists and cancels jobs, fetches their results and uploads
// datasets, through the HTTP API with the client package.
func cmdJobs(ctx context.Context, args []string, env *environment) error {
	if len(args) == 0 {
		return usageErr("which subcommand?\n%s", jobsUsage)
	}
	sub, args := args[0], args[1:]
	run, ok := map[string]func(context.Context, []string, *environment) error{
		"submit": jobsSubmit, "status": jobsStatus, "wait": jobsWait, "cancel": jobsCancel,
		"list": jobsList, "results": jobsResults, "upload": jobsUpload,
	}[sub]
	if !ok {
		return usageErr("unknown subcommand %q\n%s", sub, jobsUsage)
	}
	return run(ctx, args, env)
}

// apiFlags are the flags every jobs subcommand shares.
type apiFlags struct {
	url, key string
	json     bool
}

func (f *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "api", "http://127.0.0.1:8080", "the gonomaly API")
	fs.StringVar(&f.key, "api-key", "", "API key, sent as Authorization: Bearer (prefer the env GONOMALY_API_KEY)")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of tables")
}

func (f *apiFlags) client() (*client.Client, error) {
	var opts []client.Option
	if f.key != "" {
		opts = append(opts, client.WithAPIKey(f.key))
	}
	c, err := client.New(f.url, opts...)
	if err != nil {
		return nil, usageErr("--api: %v", err)
	}
	return c, nil
}

// parseArgs parses flags that may come before, between or after the positional
// arguments (`jobs status ID --json`), then fills the flags not given from GONOMALY_*.
func parseArgs(fs *flag.FlagSet, args []string, positional ...string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(os.Stderr)
				fs.Usage()
				return nil, err
			}
			return nil, usageErr("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := parseFlags(fs, nil); err != nil { // the environment fallbacks
		return nil, err
	}
	if len(pos) != len(positional) {
		if len(positional) == 0 {
			return nil, usageErr("unexpected argument %q", pos[0])
		}
		return nil, usageErr("want %s, got %d argument(s)", strings.Join(positional, " "), len(pos))
	}
	return pos, nil
}

func jobsSubmit(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("jobs submit", flag.ContinueOnError)
	var af apiFlags
	af.register(fs)
	file := fs.String("file", "", "the job as JSON (POST /api/v1/jobs's body); the flags below override its fields")
	typ := fs.String("type", "detect", "job type: detect, ensemble, preprocess, train")
	algorithm := fs.String("algorithm", "", "detector (gonomaly's registry names, e.g. iforest)")
	params := fs.String("params", "", "detector parameters k=v,... (e.g. trees=200,max_samples=256)")
	dataset := fs.String("dataset", "", "input: an uploaded dataset's id")
	columns := fs.String("columns", "", "input columns to use, comma-separated (default all)")
	model := fs.String("model", "", "detect: score with this trained model (name or name@version); train: publish under this name")
	contamination := fs.Float64("contamination", 0, "fraction of rows labelled anomalous (default 0.1)")
	seed := fs.Uint64("seed", 0, "seed of randomised detectors")
	timeout := fs.Duration("timeout", 0, "per-attempt timeout of the job (default 1h)")
	wait := fs.Bool("wait", false, "wait until the job ends; exit 1 unless it succeeded")
	poll := fs.Duration("poll", time.Second, "how often --wait asks")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	var job jobs.Job
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return usageErr("--file: %v", err)
		}
		job, err = readJobFile(f)
		f.Close()
		if err != nil {
			return usageErr("--file %s: %v", *file, err)
		}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["type"] || job.Type == "" {
		t, err := jobs.ParseType(*typ)
		if err != nil {
			return usageErr("--type: %v", err)
		}
		job.Type = t
	}
	if given["algorithm"] {
		job.Algorithm = *algorithm
	}
	if given["params"] {
		p, err := parseParamList(*params)
		if err != nil {
			return usageErr("--params: %v", err)
		}
		job.Params = p
	}
	if given["dataset"] {
		job.Input = jobs.Input{Dataset: *dataset, Columns: job.Input.Columns}
	}
	if given["columns"] {
		job.Input.Columns = splitList(*columns)
	}
	if given["model"] {
		job.Model = *model
	}
	if given["contamination"] {
		job.Contamination = *contamination
	}
	if given["seed"] {
		job.Seed = *seed
	}
	if given["timeout"] {
		job.Timeout = jobs.Duration(*timeout)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	st, err := c.SubmitJob(ctx, job)
	if err != nil {
		return err
	}
	if !*wait {
		return printStatus(env.stdout, st, af.json)
	}
	fmt.Fprintf(env.stderr, "submitted %s; waiting\n", st.ID)
	st, err = c.Wait(ctx, st.ID, *poll)
	if err != nil {
		return err
	}
	if err := printStatus(env.stdout, st, af.json); err != nil {
		return err
	}
	return jobOutcome(st)
}

// jobOutcome is the exit status of a waited-for job: an error unless it succeeded.
func jobOutcome(st jobs.Status) error {
	switch st.State {
	case jobs.Succeeded:
		return nil
	case jobs.Failed:
		msg := "no reason given"
		if st.Error != nil {
			msg = st.Error.Message
		}
		return fmt.Errorf("job %s failed: %s", st.ID, msg)
	default:
		return fmt.Errorf("job %s ended %s", st.ID, st.State)
	}
}

func jobsStatus(ctx context.Context, args []string, env *environment) error {
	return withJobID(ctx, "jobs status", args, env, func(ctx context.Context, c *client.Client, id string, af apiFlags) error {
		st, err := c.Job(ctx, id)
		if err != nil {
			return err
		}
		return printStatus(env.stdout, st, af.json)
	})
}

func jobsCancel(ctx context.Context, args []string, env *environment) error {
	return withJobID(ctx, "jobs cancel", args, env, func(ctx context.Context, c *client.Client, id string, af apiFlags) error {
		st, err := c.CancelJob(ctx, id)
		if err != nil {
			return err
		}
		return printStatus(env.stdout, st, af.json)
	})
}

func jobsWait(ctx context.Context, args []string, env *environment) error {
	var poll *time.Duration
	return withJobID(ctx, "jobs wait", args, env, func(ctx context.Context, c *client.Client, id string, af apiFlags) error {
		st, err := c.Wait(ctx, id, *poll)
		if err != nil {
			return err
		}
		if err := printStatus(env.stdout, st, af.json); err != nil {
			return err
		}
		return jobOutcome(st)
	}, func(fs *flag.FlagSet) { poll = fs.Duration("poll", time.Second, "how often to ask") })
}

// withJobID runs a subcommand that takes one job id.
func withJobID(ctx context.Context, name string, args []string, env *environment,
	fn func(context.Context, *client.Client, string, apiFlags) error, extra ...func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var af apiFlags
	af.register(fs)
	for _, e := range extra {
		e(fs)
	}
	pos, err := parseArgs(fs, args, "ID")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	return fn(ctx, c, pos[0], af)
}

func jobsList(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("jobs list", flag.ContinueOnError)
	var af apiFlags
	af.register(fs)
	state := fs.String("state", "", "only jobs in this state: queued, running, succeeded, failed, cancelled")
	typ := fs.String("type", "", "only jobs of this type: detect, ensemble, preprocess, train")
	limit := fs.Int("limit", 20, fmt.Sprintf("jobs per page (1..%d)", jobs.MaxPageSize))
	cursor := fs.String("cursor", "", "the page after this cursor (printed under the previous page)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	f := jobs.Filter{After: *cursor, Limit: *limit}
	if *limit < 1 || *limit > jobs.MaxPageSize {
		return usageErr("--limit %d: want 1..%d", *limit, jobs.MaxPageSize)
	}
	if *state != "" {
		s, err := jobs.ParseState(*state)
		if err != nil {
			return usageErr("--state: %v", err)
		}
		f.State = s
	}
	if *typ != "" {
		t, err := jobs.ParseType(*typ)
		if err != nil {
			return usageErr("--type: %v", err)
		}
		f.Type = t
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	page, err := c.ListJobs(ctx, f)
	if err != nil {
		return err
	}
	if af.json {
		if page.Jobs == nil {
			page.Jobs = []jobs.Status{}
		}
		return writeJSON(env.stdout, page)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tSTATE\tPROGRESS\tSUBMITTED\tWHAT\tINPUT")
	for _, st := range page.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.ID, st.Type, stateText(st), percent(st.Progress),
			st.SubmittedAt.Local().Format(time.DateTime), what(st.Job), inputText(st.Job.Input))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(env.stdout, "more: gonomaly jobs list --cursor %s\n", page.NextCursor)
	}
	return nil
}

func jobsResults(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("jobs results", flag.ContinueOnError)
	var af apiFlags
	af.register(fs)
	format := fs.String("format", "ndjson", "ndjson (one row a line) or json (one array)")
	out := fs.String("out", "", "write here instead of stdout")
	pageSize := fs.Int("page-size", 10_000, "rows fetched per request")
	pos, err := parseArgs(fs, args, "ID")
	if err != nil {
		return err
	}
	if *format != "ndjson" && *format != "json" {
		return usageErr("--format %q: want ndjson or json", *format)
	}
	if *pageSize < 1 {
		return usageErr("--page-size must be positive")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	w := env.stdout
	var f *os.File
	if *out != "" {
		if f, err = os.Create(*out); err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	n, err := writeResults(bw, c.AllResults(ctx, pos[0], *pageSize), *format)
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if f != nil {
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wrote %d rows to %s\n", n, *out)
	}
	return nil
}

// writeResults writes every row as NDJSON or as one JSON array, and counts them.
func writeResults(w io.Writer, rows func(func(jobs.ResultRow, error) bool), format string) (int, error) {
	n := 0
	var failed error
	if format == "json" {
		io.WriteString(w, "[")
	}
	rows(func(r jobs.ResultRow, err error) bool {
		if err != nil {
			failed = err
			return false
		}
		b, _ := json.Marshal(r) // a ResultRow is numbers and a bool
		if format == "json" && n > 0 {
			io.WriteString(w, ",\n")
		}
		w.Write(b)
		if format == "ndjson" {
			io.WriteString(w, "\n")
		}
		n++
		return true
	})
	if failed != nil {
		return n, failed
	}
	if format == "json" {
		io.WriteString(w, "]\n")
	}
	return n, nil
}

func jobsUpload(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("jobs upload", flag.ContinueOnError)
	var af apiFlags
	af.register(fs)
	name := fs.String("name", "", "the dataset's name (default the file's name)")
	format := fs.String("format", "", "csv or ndjson (default from the file's extension)")
	pos, err := parseArgs(fs, args, "FILE")
	if err != nil {
		return err
	}
	path := pos[0]
	if *format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".csv":
			*format = client.CSV
		case ".ndjson", ".jsonl":
			*format = client.NDJSON
		default:
			return usageErr("cannot tell the format of %s from its extension: give --format csv or --format ndjson", path)
		}
	}
	if *name == "" {
		*name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := af.client()
	if err != nil {
		return err
	}
	d, err := c.UploadDataset(ctx, f, *format, *name)
	if err != nil {
		return err
	}
	if af.json {
		return writeJSON(env.stdout, d)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", d.ID)
	fmt.Fprintf(tw, "name\t%s\n", d.Name)
	fmt.Fprintf(tw, "rows\t%d\n", d.Rows)
	fmt.Fprintf(tw, "columns\t%s\n", strings.Join(d.Columns, ","))
	fmt.Fprintf(tw, "labels\t%v\n", d.Labels)
	fmt.Fprintf(tw, "hash\t%s\n", d.Hash)
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printStatus prints one job's status as a two-column table, or as JSON.
func printStatus(w io.Writer, st jobs.Status, asJSON bool) error {
	if asJSON {
		return writeJSON(w, st)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("id", st.ID)
	row("type", string(st.Type))
	row("state", stateText(st))
	if st.State == jobs.Running {
		row("progress", percent(st.Progress))
	}
	row("message", st.Message)
	if st.Error != nil {
		e := st.Error.Message
		if st.Error.Transient {
			e += " (transient)"
		}
		row("error", e)
	}
	row("what", what(st.Job))
	row("input", inputText(st.Job.Input))
	if st.Attempt > 0 {
		row("attempt", strconv.Itoa(st.Attempt))
	}
	row("worker", st.Worker)
	row("submitted", timeText(st.SubmittedAt))
	row("submitted by", st.Job.SubmittedBy)
	row("started", timeText(st.StartedAt))
	row("finished", timeText(st.FinishedAt))
	if !st.StartedAt.IsZero() && !st.FinishedAt.IsZero() {
		row("took", st.FinishedAt.Sub(st.StartedAt).Round(time.Millisecond).String())
	}
	if r := st.Result; r != nil {
		row("rows", fmt.Sprintf("%d × %d columns", r.Rows, r.Columns))
		row("anomalies", fmt.Sprintf("%d (threshold %.4g)", r.Anomalies, r.Threshold))
		if r.Model != nil {
			row("model", r.Model.String())
		}
		row("dataset", r.Dataset)
		for _, k := range slices.Sorted(maps.Keys(r.Metrics)) {
			row(k, strconv.FormatFloat(r.Metrics[k], 'g', 4, 64))
		}
		// The API keeps where results lie in Kafka to itself; detect and ensemble jobs
		// have a result per row.
		if st.State == jobs.Succeeded && (st.Type == jobs.Detect || st.Type == jobs.Ensemble) {
			row("results", fmt.Sprintf("%d rows: gonomaly jobs results %s", r.Rows, st.ID))
		}
	}
	return tw.Flush()
}

func stateText(st jobs.Status) string {
	if st.CancelRequested && !st.State.Terminal() {
		return string(st.State) + " (cancel requested)"
	}
	return string(st.State)
}

func percent(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) }

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(time.DateTime + ".000")
}

// what says in a few words what a job does.
func what(j jobs.Job) string {
	var parts []string
	if j.Algorithm != "" {
		a := j.Algorithm
		if len(j.Params) > 0 {
			a += "(" + formatParams(j.Params) + ")"
		}
		parts = append(parts, a)
	}
	for _, d := range j.Detectors {
		parts = append(parts, d.Algorithm)
	}
	if j.Combiner != "" {
		parts = append(parts, "combined by "+j.Combiner)
	}
	if j.Model != "" {
		parts = append(parts, "model "+j.Model)
	}
	if j.Scaling != "" {
		parts = append(parts, "scaling "+j.Scaling)
	}
	return strings.Join(parts, " ")
}

func inputText(in jobs.Input) string {
	switch {
	case in.Dataset != "":
		return "dataset " + in.Dataset
	case in.InlineRows > 0 || len(in.Rows) > 0:
		return fmt.Sprintf("%d inline rows", max(in.InlineRows, len(in.Rows)))
	case in.Records != nil:
		return fmt.Sprintf("records of %s from %s to %s", strings.Join(in.Records.Series, ","),
			in.Records.From.Format(time.RFC3339), in.Records.To.Format(time.RFC3339))
	}
	return ""
}

func formatParams(p detectors.Params) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		kv = append(kv, k+"="+strconv.FormatFloat(p[k], 'g', -1, 64))
	}
	return strings.Join(kv, ",")
}

// parseParamList reads "k=v,k2=v2" into detector parameters; errors name the entry.
func parseParamList(s string) (detectors.Params, error) {
	out := detectors.Params{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		k, v, ok := strings.Cut(entry, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("entry %d %q: want name=number", i+1, entry)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("entry %d: %s=%q is not a finite number", i+1, k, v)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("entry %d: %s is given twice", i+1, k)
		}
		out[k] = f
	}
	return out, nil
}

// readJobFile decodes a job (POST /api/v1/jobs's body) strictly: one JSON object with
// known fields only. Errors name the line and column, or the field.
func readJobFile(r io.Reader) (jobs.Job, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return jobs.Job{}, err
	}
	var job jobs.Job
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&job); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return job, fmt.Errorf("%s: %s", position(data, se.Offset-1), strings.TrimPrefix(se.Error(), "json: "))
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				field = "the job"
			}
			return job, fmt.Errorf("%s: %s: want %s, got a JSON %s", position(data, te.Offset-1), field, te.Type, te.Value)
		case errors.Is(err, io.EOF):
			return job, errors.New("empty: want a JSON object such as {\"type\":\"detect\",\"algorithm\":\"iforest\",\"input\":{\"dataset\":\"ds_…\"}}")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return job, fmt.Errorf("%s: unexpected end of JSON", position(data, int64(len(data))))
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		off := dec.InputOffset()
		if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
			// The decoder stops after the member's value: point at its name instead.
			if i := bytes.LastIndex(data[:off], []byte(name)); i >= 0 {
				off = int64(i)
			}
		}
		return job, fmt.Errorf("%s: %s", position(data, off), msg)
	}
	rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")
	if len(rest) > 0 {
		return job, fmt.Errorf("%s: unexpected data after the job's JSON object", position(data, int64(len(data)-len(rest))))
	}
	return job, nil
}

// position says where the byte at index off is, as "line L, column C" (1-based); off
// may be len(data), just after the end.
func position(data []byte, off int64) string {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}
