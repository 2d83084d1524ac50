package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeNABCorpus lays out a tiny NAB-style corpus: two categories, three series of noisy
// daily cycles, two of them with a large spike inside their one labelled window.
func writeNABCorpus(t *testing.T) (dir, labels string) {
	t.Helper()
	dir = t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	start := time.Date(2014, 7, 1, 0, 0, 0, 0, time.UTC)
	const rows = 800
	windows := map[string][][2]string{}
	for _, s := range []struct {
		name  string
		spike int // row of the spike, 0 for none
	}{{"catA/one.csv", 500}, {"catA/two.csv", 650}, {"catB/three.csv", 0}} {
		var b strings.Builder
		b.WriteString("timestamp,value\n")
		for i := range rows {
			v := 10 + 3*math.Sin(2*math.Pi*float64(i)/288) + rng.NormFloat64()*0.3
			if i == s.spike {
				v += 25
			}
			fmt.Fprintf(&b, "%s,%.4f\n", start.Add(time.Duration(i)*5*time.Minute).Format(time.DateTime), v)
		}
		p := filepath.Join(dir, filepath.FromSlash(s.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		windows[s.name] = [][2]string{}
		if s.spike > 0 {
			at := func(row int) string {
				return start.Add(time.Duration(row)*5*time.Minute).Format(time.DateTime) + ".000000"
			}
			windows[s.name] = append(windows[s.name], [2]string{at(s.spike - 20), at(s.spike + 20)})
		}
	}
	data, err := json.Marshal(windows)
	if err != nil {
		t.Fatal(err)
	}
	labels = filepath.Join(dir, "labels.json")
	if err := os.WriteFile(labels, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, labels
}

// TestEvalNABOnSyntheticCorpus runs the command in process: a detector that sees the
// spikes scores well above the null detector's 0, and the output has every profile.
func TestEvalNABOnSyntheticCorpus(t *testing.T) {
	dir, labels := writeNABCorpus(t)
	var stdout, stderr bytes.Buffer
	env := &environment{stdout: &stdout, stderr: &stderr}
	code := run([]string{"eval", "nab", "--data", dir, "--labels", labels, "--detectors", "zscore,ensemble", "--workers", "2", "--json"}, env)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var out struct {
		Results []struct {
			Detector       string
			Standard       float64
			RewardLowFP    float64 `json:"reward_low_fp"`
			RewardLowFN    float64 `json:"reward_low_fn"`
			Thresholds     map[string]float64
			Detected       int
			Windows        int
			FalsePositives int `json:"false_positives"`
		} `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if len(out.Results) != 2 || out.Results[0].Detector != "zscore" || out.Results[1].Detector != "ensemble" {
		t.Fatalf("results %+v, want zscore then ensemble", out.Results)
	}
	for _, r := range out.Results {
		t.Logf("%+v", r)
		if r.Windows != 2 || r.Detected != 2 {
			t.Errorf("%s: %d/%d windows detected, want 2/2", r.Detector, r.Detected, r.Windows)
		}
		if r.Standard < 80 || r.RewardLowFP < 70 || r.RewardLowFN < 80 {
			t.Errorf("%s: %v / %v / %v, want a spike detector far above the null detector's 0", r.Detector, r.Standard, r.RewardLowFP, r.RewardLowFN)
		}
		if len(r.Thresholds) != 3 {
			t.Errorf("%s: thresholds %v, want one per profile", r.Detector, r.Thresholds)
		}
	}
	if !strings.Contains(stderr.String(), "3 series") {
		t.Errorf("stderr does not report the corpus:\n%s", stderr.String())
	}

	// The table names the published scores to read ours against.
	stdout.Reset()
	if code := run([]string{"eval", "nab", "--data", dir, "--labels", labels, "--detectors", "zscore"}, env); code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"zscore", "Random Cut Forest (AWS)", "51.7"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestEvalNABUsageErrors(t *testing.T) {
	dir, labels := writeNABCorpus(t)
	for _, args := range [][]string{
		{"eval", "nab"},
		{"eval", "nab", "--data", dir, "--labels", labels, "--detectors", "nope"},
		{"eval", "nab", "--data", dir, "--labels", labels, "--workers", "0"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &environment{stdout: &stdout, stderr: &stderr}); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, stderr.String())
		}
	}
}
