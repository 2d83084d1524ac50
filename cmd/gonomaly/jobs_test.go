package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/client"
	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

const (
	ciSecret   = "ci-secret-0123456789"
	dashSecret = "dash-secret-0123456789"
)

// TestJobsCommands: `gonomaly jobs` against `gonomaly api` (keys on) uploads a dataset,
// submits jobs from flags and from a file, shows, lists, cancels them, and turns every
// refusal into a non-zero exit that says why.
func TestJobsCommands(t *testing.T) {
	_, brokerAddr := startBroker(t)
	_, base := startAPI(t, brokerAddr, []string{"GONOMALY_API_KEYS=ci:submit:" + ciSecret + ",dash:read:" + dashSecret})
	ci := []string{"GONOMALY_API=" + base, "GONOMALY_API_KEY=" + ciSecret}
	dash := []string{"GONOMALY_API=" + base, "GONOMALY_API_KEY=" + dashSecret}
	jobsCmd := func(env []string, args ...string) string {
		t.Helper()
		out, stderr, code := runCmd(t, env, append([]string{"jobs"}, args...)...)
		if code != 0 {
			t.Fatalf("gonomaly jobs %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "points.csv")
	var csv strings.Builder
	csv.WriteString("x,y\n")
	for i := range 50 {
		fmt.Fprintf(&csv, "%d,%d\n", i%5, i%3)
	}
	os.WriteFile(csvPath, []byte(csv.String()), 0o644)

	// Upload: a table by default, JSON with --json; the name comes from the file.
	out := jobsCmd(ci, "upload", csvPath)
	m := regexp.MustCompile(`(?m)^id\s+(\S+)$`).FindStringSubmatch(out)
	if m == nil || !regexp.MustCompile(`(?m)^rows\s+50$`).MatchString(out) || !regexp.MustCompile(`(?m)^name\s+points$`).MatchString(out) {
		t.Fatalf("upload table:\n%s", out)
	}
	datasetID := m[1]

	// Submit from flags (flags after the subcommand's arguments are fine too).
	var queued jobs.Status
	out = jobsCmd(ci, "submit", "--type", "detect", "--algorithm", "iforest", "--dataset", datasetID, "--params", "trees=40,max_samples=32", "--json")
	if err := json.Unmarshal([]byte(out), &queued); err != nil {
		t.Fatalf("submit --json: %v\n%s", err, out)
	}
	if queued.State != jobs.Queued || queued.Job.Input.Dataset != datasetID || queued.Job.Params["trees"] != 40 || queued.Job.SubmittedBy != "ci" {
		t.Fatalf("queued status %+v", queued)
	}
	// From a file, with a flag overriding one of its fields.
	jobFile := filepath.Join(dir, "job.json")
	os.WriteFile(jobFile, []byte(`{"type":"detect","algorithm":"hbos","input":{"rows":[[1,2],[2,1],[1,1],[9,9]]},"contamination":0.25}`), 0o644)
	out = jobsCmd(ci, "submit", "--file", jobFile, "--contamination", "0.3")
	m = regexp.MustCompile(`(?m)^id\s+(job_\S+)$`).FindStringSubmatch(out)
	if m == nil || !regexp.MustCompile(`(?m)^state\s+queued$`).MatchString(out) || !strings.Contains(out, "4 inline rows") {
		t.Fatalf("submit table:\n%s", out)
	}
	fromFile := m[1]
	var st jobs.Status
	if err := json.Unmarshal([]byte(jobsCmd(dash, "status", fromFile, "--json")), &st); err != nil || st.Job.Contamination != 0.3 || st.Job.Algorithm != "hbos" {
		t.Fatalf("status of the file's job: %+v %v", st, err)
	}

	// List: a table with both, newest first; --json pages.
	out = jobsCmd(dash, "list")
	if i, j := strings.Index(out, fromFile), strings.Index(out, queued.ID); i < 0 || j < 0 || i > j || !strings.HasPrefix(out, "ID") {
		t.Fatalf("list:\n%s", out)
	}
	var page client.JobPage
	if err := json.Unmarshal([]byte(jobsCmd(dash, "list", "--limit", "1", "--json")), &page); err != nil || len(page.Jobs) != 1 || page.NextCursor == "" {
		t.Fatalf("list --limit 1 --json: %+v %v", page, err)
	}
	out = jobsCmd(dash, "list", "--limit", "1")
	if !strings.Contains(out, "more: gonomaly jobs list --cursor "+page.NextCursor) {
		t.Fatalf("list --limit 1 does not say how to get more:\n%s", out)
	}

	// Cancel: the read key may not, the submit key may.
	_, stderr, code := runCmd(t, dash, "jobs", "cancel", fromFile)
	if code != 1 || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "read role") {
		t.Fatalf("cancel with the read key: exit %d: %s", code, stderr)
	}
	out = jobsCmd(ci, "cancel", fromFile)
	if !regexp.MustCompile(`(?m)^state\s+cancelled$`).MatchString(out) {
		t.Fatalf("cancel:\n%s", out)
	}
	out = jobsCmd(dash, "list", "--state", "cancelled", "--json")
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Jobs) != 1 || page.Jobs[0].ID != fromFile {
		t.Fatalf("cancelled list: %s", out)
	}
	// wait on a cancelled job ends at once, with exit 1 because it did not succeed.
	_, stderr, code = runCmd(t, dash, "jobs", "wait", fromFile)
	if code != 1 || !strings.Contains(stderr, "ended cancelled") {
		t.Fatalf("wait on a cancelled job: exit %d: %s", code, stderr)
	}

	// Refusals say why, with exit 1 (the server said no) or 2 (the command line is wrong).
	for _, tc := range []struct {
		env  []string
		args []string
		code int
		want string
	}{
		{[]string{"GONOMALY_API=" + base}, []string{"list"}, 1, "401 Unauthorized: missing API key"},
		{dash, []string{"submit", "--algorithm", "iforest", "--dataset", datasetID}, 1, "403 Forbidden"},
		{ci, []string{"status", "job_nope"}, 1, "404 Not Found"},
		{ci, []string{"submit", "--algorithm", "magic", "--dataset", datasetID}, 1, "400 Bad Request"},
		{ci, []string{"results", queued.ID}, 1, "409 Conflict"},
		{ci, []string{"submit", "--params", "trees=x"}, 2, `--params: entry 1: trees="x" is not a finite number`},
		{ci, []string{"submit", "--type", "magic"}, 2, `unknown job type "magic"`},
		{ci, []string{"submit", "--file", filepath.Join(dir, "missing.json")}, 2, "--file: open"},
		{ci, []string{"status"}, 2, "want ID, got 0 argument(s)"},
		{ci, []string{"status", "a", "b"}, 2, "want ID, got 2 argument(s)"},
		{ci, []string{"list", "extra"}, 2, `unexpected argument "extra"`},
		{ci, []string{"list", "--state", "sleeping"}, 2, `unknown job state "sleeping"`},
		{ci, []string{"list", "--limit", "0"}, 2, "--limit 0: want 1..1000"},
		{ci, []string{"results", "x", "--format", "csv"}, 2, `--format "csv": want ndjson or json`},
		{ci, []string{"upload", filepath.Join(dir, "data.xlsx")}, 2, "give --format csv or --format ndjson"},
		{ci, []string{"frobnicate"}, 2, `unknown subcommand "frobnicate"`},
		{ci, nil, 2, "which subcommand?"},
		{[]string{"GONOMALY_API=127.0.0.1:1"}, []string{"list"}, 2, "want http://host:port"},
		{[]string{"GONOMALY_API=http://127.0.0.1:1"}, []string{"list"}, 1, "connection refused"},
	} {
		_, stderr, code := runCmd(t, tc.env, append([]string{"jobs"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("jobs %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	badFile := filepath.Join(dir, "bad.json")
	os.WriteFile(badFile, []byte("{\n  \"type\": \"detect\",\n  \"algorithm\": 7\n}"), 0o644)
	_, stderr, code = runCmd(t, ci, "jobs", "submit", "--file", badFile)
	if code != 2 || !strings.Contains(stderr, "line 3, column 16: algorithm: want string, got a JSON number") {
		t.Fatalf("bad job file: exit %d: %s", code, stderr)
	}
}

func TestParseParamList(t *testing.T) {
	p, err := parseParamList(" trees=200, max_samples = 64 ,,contamination=1e-2")
	if err != nil || len(p) != 3 || p["trees"] != 200 || p["max_samples"] != 64 || p["contamination"] != 0.01 {
		t.Fatalf("%v %v", p, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"trees", `entry 1 "trees": want name=number`},
		{"a=1,=2", `entry 2 "=2": want name=number`},
		{"a=1,b=NaN", `entry 2: b="NaN" is not a finite number`},
		{"a=1e999", `entry 1: a="1e999" is not a finite number`},
		{"a=1,a=2", "entry 2: a is given twice"},
	} {
		if _, err := parseParamList(tc.in); err == nil || err.Error() != tc.want {
			t.Errorf("parseParamList(%q): %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestReadJobFile(t *testing.T) {
	job, err := readJobFile(strings.NewReader(`{"type":"ensemble","detectors":[{"algorithm":"iforest","weight":2}],"combiner":"max","input":{"dataset":"ds_1","columns":["a"]},"timeout":"90s"}`))
	if err != nil || job.Type != jobs.Ensemble || job.Detectors[0].Weight != 2 || job.Input.Columns[0] != "a" || time.Duration(job.Timeout) != 90*time.Second {
		t.Fatalf("%+v %v", job, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty: want a JSON object"},
		{"{\n\"type\": \"detect\",\n\"bogus\": 1}", `line 3, column 1: unknown field "bogus"`},
		{"{\"type\": detect}", "line 1, column 10: invalid character 'd'"},
		{"{\"type\": \"detect\"", "line 1, column 18: unexpected end of JSON"},
		{"[1]", "line 1, column 1: the job: want jobs.Job, got a JSON array"},
		{"{\"input\": {\"rows\": [[1, \"a\"]]}}", "line 1, column 27: input.rows: want float64, got a JSON string"},
		{"{\"timeout\": \"soon\"}", `duration "soon"`},
		{"{} {}", "line 1, column 4: unexpected data after the job's JSON object"},
	} {
		if _, err := readJobFile(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("readJobFile(%q): %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestWriteResults(t *testing.T) {
	rows := func(yield func(jobs.ResultRow, error) bool) {
		for i := range 3 {
			if !yield(jobs.ResultRow{Row: i, Score: float64(i) / 2, IsAnomaly: i == 2}, nil) {
				return
			}
		}
	}
	var b strings.Builder
	n, err := writeResults(&b, rows, "json")
	var back []jobs.ResultRow
	if err != nil || n != 3 || json.Unmarshal([]byte(b.String()), &back) != nil || len(back) != 3 || !back[2].IsAnomaly || back[1].Score != 0.5 {
		t.Fatalf("json: %d %v %q", n, err, b.String())
	}
	b.Reset()
	n, err = writeResults(&b, rows, "ndjson")
	if err != nil || n != 3 || b.String() != "{\"row\":0,\"score\":0,\"is_anomaly\":false}\n{\"row\":1,\"score\":0.5,\"is_anomaly\":false}\n{\"row\":2,\"score\":1,\"is_anomaly\":true}\n" {
		t.Fatalf("ndjson: %d %v %q", n, err, b.String())
	}
	failing := func(yield func(jobs.ResultRow, error) bool) {
		if yield(jobs.ResultRow{}, nil) {
			yield(jobs.ResultRow{}, fmt.Errorf("page 2: boom"))
		}
	}
	if n, err := writeResults(&b, failing, "json"); n != 1 || err == nil || err.Error() != "page 2: boom" {
		t.Fatalf("failing: %d %v", n, err)
	}
}

// FuzzReadJobFile: no input panics the job file reader, and whatever it accepts survives
// a JSON round trip.
func FuzzReadJobFile(f *testing.F) {
	f.Add(`{"type":"detect","algorithm":"iforest","params":{"trees":10},"input":{"rows":[[1,2],[3,4]]}}`)
	f.Add(`{"type":"train","model":"m","input":{"records":{"series":["a"],"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}},"timeout":"1m"}`)
	f.Add("{\n\"x\":1}")
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, in string) {
		job, err := readJobFile(strings.NewReader(in))
		if err != nil {
			if !strings.Contains(err.Error(), "line ") && !strings.HasPrefix(err.Error(), "empty") && !strings.Contains(err.Error(), "duration") {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		b, err := json.Marshal(job)
		if err != nil {
			return // e.g. a params value json cannot write; the server would refuse it too
		}
		if _, err := readJobFile(strings.NewReader(string(b))); err != nil {
			t.Fatalf("round trip of %q: %v", b, err)
		}
	})
}

// FuzzParseParamList: no input panics it, and what it accepts is finite numbers by
// non-empty names that read back the same.
func FuzzParseParamList(f *testing.F) {
	f.Add("trees=100,max_samples=256")
	f.Add("a=1e308,b=-0.5, c = 3")
	f.Add("=,x")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := parseParamList(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "entry ") {
				t.Fatalf("error without its entry: %v", err)
			}
			return
		}
		var parts []string
		for k, v := range p {
			if k == "" || strings.ContainsAny(k, ",=") {
				t.Fatalf("accepted name %q from %q", k, in)
			}
			parts = append(parts, k+"="+fmt.Sprint(v))
		}
		back, err := parseParamList(strings.Join(parts, ","))
		if err != nil || len(back) != len(p) {
			t.Fatalf("round trip of %q: %v %v", in, back, err)
		}
		_ = detectors.Params(back)
	})
}

// TestJobsSubmitWaitResults: with `gonomaly worker` running, `jobs submit --wait` ends
// when the job succeeds, and `jobs results` writes every row as NDJSON or JSON.
func TestJobsSubmitWaitResults(t *testing.T) {
	_, brokerAddr := startBroker(t)
	_, base := startAPI(t, brokerAddr, nil)
	worker := startEnv(t, nil, "worker", "--brokers", brokerAddr, "--partitions", "4")
	go io.Copy(io.Discard, worker.stdout)
	select {
	case <-worker.done:
		if strings.Contains(worker.stderr.String(), "not implemented yet") {
			t.Skip("gonomaly worker is not implemented yet")
		}
		t.Fatalf("the worker exited:\n%s", worker.stderr.String())
	case <-time.After(time.Second):
	}
	env := []string{"GONOMALY_API=" + base}
	rows := make([]string, 40)
	for i := range rows {
		rows[i] = fmt.Sprintf("[%d,%d]", i%4, i%5)
	}
	rows[33] = "[90,-90]"
	jobFile := filepath.Join(t.TempDir(), "job.json")
	os.WriteFile(jobFile, []byte(`{"type":"detect","algorithm":"knn","input":{"rows":[`+strings.Join(rows, ",")+`]},"contamination":0.025}`), 0o644)
	out, stderr, code := runCmd(t, env, "jobs", "submit", "--file", jobFile, "--wait", "--poll", "50ms")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s\n%s", code, out, stderr)
	}
	m := regexp.MustCompile(`(?m)^id\s+(job_\S+)$`).FindStringSubmatch(out)
	if m == nil || !regexp.MustCompile(`(?m)^state\s+succeeded$`).MatchString(out) || !regexp.MustCompile(`(?m)^anomalies\s+1 `).MatchString(out) ||
		!strings.Contains(out, "40 rows: gonomaly jobs results "+m[1]) {
		t.Fatalf("submit --wait:\n%s", out)
	}
	id := m[1]
	out, _, code = runCmd(t, env, "jobs", "results", id)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 40 || !strings.Contains(lines[33], `"row":33`) || !strings.Contains(lines[33], `"is_anomaly":true`) {
		t.Fatalf("results as NDJSON: exit %d, %d lines:\n%s", code, len(lines), out)
	}
	outFile := filepath.Join(t.TempDir(), "results.json")
	_, stderr, code = runCmd(t, env, "jobs", "results", id, "--format", "json", "--out", outFile, "--page-size", "7")
	data, _ := os.ReadFile(outFile)
	var got []jobs.ResultRow
	if code != 0 || json.Unmarshal(data, &got) != nil || len(got) != 40 || got[39].Row != 39 || !strings.Contains(stderr, "wrote 40 rows") {
		t.Fatalf("results as JSON: exit %d %s\n%s", code, stderr, data)
	}
}
