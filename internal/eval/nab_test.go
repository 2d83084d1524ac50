package eval

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/internal/spec"
)

// readmeCase is the worked example of data/README.md: rows 1..180 (0-based here), no
// probation, windows [22,28], [77,83], [147,153], detections at rows 18, 25, 96, 150.
func readmeCase() (NABLabels, []float64) {
	l := NABLabels{Name: "readme", Rows: 180, Windows: []NABWindow{{21, 27}, {76, 82}, {146, 152}}}
	scores := make([]float64, 180)
	for _, row := range []int{18, 25, 96, 150} {
		scores[row-1] = 1
	}
	return l, scores
}

func TestNABRawScoreReadmeCase(t *testing.T) {
	l, scores := readmeCase()
	want := map[string]float64{"standard": 0.5869384, "reward_low_fp": 0.3669427, "reward_low_fn": -0.4130616}
	for _, p := range NABProfiles {
		got := NABRawScore(&l, func(i int) bool { return scores[i] >= 1 }, p)
		if math.Abs(got-want[p.Name]) > 1e-6 {
			t.Errorf("%s: raw score %.7f, want %.7f", p.Name, got, want[p.Name])
		}
	}
	// The sweep must find the same: threshold 1 is the best there is for this detector.
	res, err := ScoreNAB([]NABLabels{l}, [][]float64{scores}, NABProfiles)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Threshold != 1 || math.Abs(r.Raw-want[r.Profile]) > 1e-6 {
			t.Errorf("%s: sweep chose threshold %v with raw %.7f, want 1 and %.7f", r.Profile, r.Threshold, r.Raw, want[r.Profile])
		}
		if r.Detected != 2 || r.FalsePositives != 2 || r.Windows != 3 {
			t.Errorf("%s: %d/%d windows and %d FPs, want 2/3 and 2", r.Profile, r.Detected, r.Windows, r.FalsePositives)
		}
	}
}

func TestNABPerfectAndNullDetectors(t *testing.T) {
	labels := []NABLabels{
		{Name: "a", Rows: 1000, Probation: NABProbation(1000), Windows: []NABWindow{{300, 340}, {700, 760}}},
		{Name: "b", Rows: 500, Probation: NABProbation(500), Windows: []NABWindow{{100, 110}}},
		{Name: "c", Rows: 400, Probation: NABProbation(400)},
	}
	perfect := make([][]float64, len(labels))
	null := make([][]float64, len(labels))
	for f, l := range labels {
		perfect[f] = make([]float64, l.Rows)
		null[f] = make([]float64, l.Rows)
		for _, w := range l.Windows {
			perfect[f][w.Start] = 1
		}
	}
	for name, c := range map[string]struct {
		scores [][]float64
		want   float64
	}{"perfect": {perfect, 100}, "null": {null, 0}} {
		res, err := ScoreNAB(labels, c.scores, NABProfiles)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if math.Abs(r.Normalized-c.want) > 1e-9 {
				t.Errorf("%s detector, %s: %v, want %v", name, r.Profile, r.Normalized, c.want)
			}
		}
	}
}

// TestNABSweepMatchesBruteForce: the one-pass sweep finds the same best raw score as
// scoring every distinct threshold from scratch.
func TestNABSweepMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 15 {
		var labels []NABLabels
		var scores [][]float64
		for f := range 1 + rng.IntN(4) {
			n := 50 + rng.IntN(300)
			l := NABLabels{Name: string(rune('a' + f)), Rows: n, Probation: rng.IntN(n / 4)}
			for at := rng.IntN(n / 3); at < n; {
				w := 1 + rng.IntN(20)
				if at+w > n {
					break
				}
				l.Windows = append(l.Windows, NABWindow{at, at + w - 1})
				at += w + 1 + rng.IntN(n/2)
			}
			s := make([]float64, n)
			for i := range s {
				s[i] = math.Round(rng.Float64()*40) / 40 // ties, as calibrated scores have
			}
			labels, scores = append(labels, l), append(scores, s)
		}
		if slices.IndexFunc(labels, func(l NABLabels) bool { return len(l.Windows) > 0 }) < 0 {
			continue
		}
		res, err := ScoreNAB(labels, scores, NABProfiles)
		if err != nil {
			t.Fatal(err)
		}
		for pi, p := range NABProfiles {
			best := math.Inf(-1)
			for _, th := range append(slices.Concat(scores...), 2) {
				raw := 0.0
				for f := range labels {
					raw += NABRawScore(&labels[f], func(i int) bool { return scores[f][i] >= th }, p)
				}
				best = max(best, raw)
			}
			if math.Abs(res[pi].Raw-best) > 1e-9 {
				t.Fatalf("trial %d, %s: sweep %.9f, brute force %.9f", trial, p.Name, res[pi].Raw, best)
			}
		}
	}
}

func TestNABRowValues(t *testing.T) {
	l := NABLabels{Rows: 100, Windows: []NABWindow{{10, 19}, {50, 50}}}
	next := 0
	value := func(i int) (int, float64) { return nabRowValue(&l, i, &next) }
	if k, v := value(5); k != -1 || v != -1 {
		t.Errorf("before the first window: %d, %v; want -1, -1", k, v)
	}
	if k, v := value(10); k != 0 || math.Abs(v-1) > 1e-12 {
		t.Errorf("first row of a window: %d, %v; want 0, 1", k, v)
	}
	_, mid := value(15)
	_, last := value(19)
	if !(1 > mid && mid > last && last > 0) {
		t.Errorf("true positives should fall from 1 towards 0: middle %v, last %v", mid, last)
	}
	k, soon := value(20)
	_, later := value(30)
	if k != -1 || !(0 > soon && soon > later && later > -1) {
		t.Errorf("after a window: %d, %v then %v; want -1 and costs growing towards -1", k, soon, later)
	}
	if _, v := value(49); v != -1 {
		t.Errorf("three widths after a window: %v, want -1", v)
	}
	if _, v := value(51); v != -1 {
		t.Errorf("after a one-row window: %v, want -1 (its width − 1 is 0)", v)
	}
}

// writeCorpus lays out files (name → CSV text) and a labels file in a temp dir.
func writeCorpus(t *testing.T, files map[string]string, labels string) (dir, labelsPath string) {
	t.Helper()
	dir = t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	labelsPath = filepath.Join(dir, "combined_windows.json")
	if err := os.WriteFile(labelsPath, []byte(labels), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, labelsPath
}

const nabCSV = "timestamp,value\n" +
	"2014-07-01 00:00:00,1\n2014-07-01 00:05:00,2\n2014-07-01 00:10:00,3\n" +
	"2014-07-01 00:15:00,4\n2014-07-01 00:20:00,5\n2014-07-01 00:25:00,6\n"

func TestLoadNABMapsWindowsToRows(t *testing.T) {
	dir, labels := writeCorpus(t, map[string]string{"cat/a.csv": nabCSV, "cat/b.csv": nabCSV, "LICENSE.csv": "not a series"}, `{
  "cat/a.csv": [["2014-07-01 00:12:00.000000", "2014-07-01 00:20:00.000000"], ["2014-07-01 00:00:00.000000", "2014-07-01 00:00:00.000000"]],
  "cat/b.csv": [],
  "other/c.csv": [["2014-07-01 00:00:00.000000", "2014-07-01 00:05:00.000000"]]
}`)
	c, err := LoadNAB(dir, labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Series) != 2 || c.Series[0].Name != "cat/a.csv" || c.Series[1].Name != "cat/b.csv" {
		t.Fatalf("series %v, want cat/a.csv and cat/b.csv", c.Series)
	}
	a := c.Series[0]
	if want := []NABWindow{{0, 0}, {3, 4}}; !slices.Equal(a.Windows, want) {
		t.Errorf("windows %v, want %v (sorted; first row ≥ start to last row ≤ end)", a.Windows, want)
	}
	if a.Rows != 6 || a.Values[5] != 6 || a.Probation != 0 {
		t.Errorf("rows %d, last value %v, probation %d", a.Rows, a.Values[5], a.Probation)
	}
	if !slices.Equal(c.Unmatched, []string{"other/c.csv"}) {
		t.Errorf("unmatched labels %v, want [other/c.csv]", c.Unmatched)
	}
}

func TestLoadNABErrorsNameFileAndLine(t *testing.T) {
	ok := `{"cat/a.csv": []}`
	for name, c := range map[string]struct {
		csv, labels string
		want        []string
	}{
		"unlabelled file":  {nabCSV, `{"cat/b.csv": []}`, []string{"cat/a.csv", "no windows"}},
		"header":           {"time,value\n2014-07-01 00:00:00,1\n", ok, []string{"a.csv:1", "header"}},
		"value":            {"timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,x\n", ok, []string{"a.csv:3", `"x"`}},
		"infinite value":   {"timestamp,value\n2014-07-01 00:00:00,Inf\n", ok, []string{"a.csv:2", "finite"}},
		"timestamp":        {"timestamp,value\n07/01/2014,1\n", ok, []string{"a.csv:2", "07/01/2014"}},
		"columns":          {"timestamp,value\n2014-07-01 00:00:00,1,2\n", ok, []string{"a.csv", "line 2"}},
		"no rows":          {"timestamp,value\n", ok, []string{"a.csv", "no rows"}},
		"labels syntax":    {nabCSV, "{\n\"cat/a.csv\": [\n}", []string{"combined_windows.json:3"}},
		"window shape":     {nabCSV, "{\n\"cat/a.csv\": [\n[\"2014-07-01 00:00:00\"]]}", []string{"combined_windows.json:3", "window 1"}},
		"window backwards": {nabCSV, `{"cat/a.csv": [["2014-07-01 00:10:00", "2014-07-01 00:00:00"]]}`, []string{"combined_windows.json:1", "ends"}},
		"empty window":     {nabCSV, `{"cat/a.csv": [["2014-07-02 00:00:00", "2014-07-02 01:00:00"]]}`, []string{"a.csv", "covers no row"}},
		"overlap": {nabCSV, `{"cat/a.csv": [["2014-07-01 00:00:00", "2014-07-01 00:10:00"],
			["2014-07-01 00:10:00", "2014-07-01 00:20:00"]]}`, []string{"a.csv", "window 2", "overlaps"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir, labels := writeCorpus(t, map[string]string{"cat/a.csv": c.csv}, c.labels)
			_, err := LoadNAB(dir, labels)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestRunNABOnRealSeries streams a few real NAB series through the default pipeline and
// one detector: scores are per row, in [0,1], and the corpus scores are finite.
func TestRunNABOnRealSeries(t *testing.T) {
	const root = "../../../shared/data/nab"
	all, err := os.ReadFile(filepath.Join(root, "combined_windows.json"))
	if err != nil {
		t.Skipf("NAB data not available: %v", err)
	}
	var windows map[string]json.RawMessage
	if err := json.Unmarshal(all, &windows); err != nil {
		t.Fatal(err)
	}
	names := []string{"artificialWithAnomaly/art_daily_jumpsup.csv", "realKnownCause/ambient_temperature_system_failure.csv", "realAdExchange/exchange-2_cpc_results.csv"}
	dir := t.TempDir()
	subset := map[string]json.RawMessage{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(root, n))
		if err != nil {
			t.Skipf("NAB data not available: %v", err)
		}
		writeFile(t, filepath.Join(dir, n), data)
		subset[n] = windows[n]
	}
	labels, _ := json.Marshal(subset)
	writeFile(t, filepath.Join(dir, "labels.json"), labels)

	c, err := LoadNAB(dir, filepath.Join(dir, "labels.json"))
	if err != nil {
		t.Fatal(err)
	}
	configs, err := NABConfigs(spec.Default(), []string{"zscore", NABEnsemble})
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunNAB(context.Background(), configs, c, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		for _, p := range r.Profiles {
			t.Logf("%s %s: %.1f (threshold %.6g, %d/%d windows, %d FPs)", r.Detector, p.Profile, p.Normalized, p.Threshold, p.Detected, p.Windows, p.FalsePositives)
			if math.IsNaN(p.Normalized) || p.Normalized < 0 || p.Normalized > 100 || p.Windows != c.Windows() {
				t.Errorf("%s %s: %+v", r.Detector, p.Profile, p)
			}
		}
	}
	scores, err := RunNABSeries(configs[1].Spec, c.Series[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != c.Series[0].Rows || slices.ContainsFunc(scores, func(s float64) bool { return !(s >= 0 && s <= 1) }) {
		t.Errorf("%d scores for %d rows, want one in [0,1] each", len(scores), c.Series[0].Rows)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkScoreNAB is the full NAB corpus's size: 58 series of 6,000 rows, two windows
// each, every score distinct (348k thresholds), all three profiles.
func BenchmarkScoreNAB(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	labels := make([]NABLabels, 58)
	scores := make([][]float64, 58)
	for f := range labels {
		labels[f] = NABLabels{Rows: 6000, Probation: NABProbation(6000), Windows: []NABWindow{{2000, 2300}, {4500, 4800}}}
		scores[f] = make([]float64, 6000)
		for i := range scores[f] {
			scores[f][i] = rng.Float64()
		}
	}
	for b.Loop() {
		if _, err := ScoreNAB(labels, scores, NABProfiles); err != nil {
			b.Fatal(err)
		}
	}
}
