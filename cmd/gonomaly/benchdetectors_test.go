package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchDetectors runs `gonomaly bench detectors` in process through bench's dispatch.
func benchDetectors(args ...string) (string, string, error) {
	return runInProcess(cmdBench, append([]string{"detectors"}, args...)...)
}

// writeBenchODDS writes a small ODDS CSV: Gaussian inliers and far-out outliers spread
// through the file, so that any split and subsample holds both classes.
func writeBenchODDS(t *testing.T, path string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 3))
	var b bytes.Buffer
	b.WriteString("a,b,c,d,label\n")
	for i := range 400 {
		label, scale := 0, 1.0
		if i%25 == 0 {
			label, scale = 1, 7
		}
		for range 4 {
			fmt.Fprintf(&b, "%.5f,", scale*rng.NormFloat64())
		}
		fmt.Fprintf(&b, "%d\n", label)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeBenchNAB writes a one-series NAB corpus: a noisy sine every 5 minutes with a
// burst of spikes inside the one labelled window. It returns the series' path.
func writeBenchNAB(t *testing.T, root string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "synthetic"), 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 8))
	start := time.Date(2014, 1, 1, 0, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	b.WriteString("timestamp,value\n")
	for i := range 1200 {
		v := 10 + math.Sin(float64(i)/20) + 0.1*rng.NormFloat64()
		if i >= 900 && i < 960 && i%3 == 0 {
			v += 6
		}
		fmt.Fprintf(&b, "%s,%.4f\n", start.Add(time.Duration(i)*5*time.Minute).Format(time.DateTime), v)
	}
	series := filepath.Join(root, "synthetic", "wave.csv")
	if err := os.WriteFile(series, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	w0, w1 := start.Add(890*5*time.Minute), start.Add(970*5*time.Minute)
	labels := fmt.Sprintf(`{"synthetic/wave.csv": [["%s.000000", "%s.000000"]]}`, w0.Format(time.DateTime), w1.Format(time.DateTime))
	if err := os.WriteFile(filepath.Join(root, "combined_windows.json"), []byte(labels), 0o644); err != nil {
		t.Fatal(err)
	}
	return series
}

func TestBenchDetectorsJSON(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "small.csv")
	writeBenchODDS(t, data)
	series := writeBenchNAB(t, filepath.Join(dir, "nab"))

	stdout, stderr, err := benchDetectors("--dataset", data, "--detectors", "iforest,ecod,hbos,knn",
		"--stream-series", series, "--param", "knn.standardize=0", "--param", "hst.trees=5", "--param", "hst.height=6",
		"--repeat", "2", "--json")
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, stderr)
	}
	var rep benchDetectorsReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if rep.Side != "gonomaly" || rep.Threads != 1 || rep.Repeat != 2 {
		t.Errorf("header: side %q threads %d repeat %d", rep.Side, rep.Threads, rep.Repeat)
	}
	var got []string
	for _, r := range rep.Batch {
		got = append(got, r.Detector)
		t.Logf("%s: fit %.5f s score %.5f s roc_auc %.3f", r.Detector, r.FitSeconds, r.ScoreSeconds, r.ROCAUC)
		if !(r.ROCAUC >= 0 && r.ROCAUC <= 1) {
			t.Errorf("%s: ROC-AUC %v out of [0, 1]", r.Detector, r.ROCAUC)
		}
		// The outliers sit 7 standard deviations out: every detector finds them.
		if r.ROCAUC < 0.9 {
			t.Errorf("%s: ROC-AUC %.3f on well-separated outliers, want > 0.9", r.Detector, r.ROCAUC)
		}
		if !(r.TotalSeconds > 0) || r.FitSeconds < 0 || r.ScoreSeconds < 0 || len(r.RunsSeconds) != 2 ||
			r.TotalSeconds != slices.Min(r.RunsSeconds) {
			t.Errorf("%s: times fit %v score %v total %v runs %v", r.Detector, r.FitSeconds, r.ScoreSeconds, r.TotalSeconds, r.RunsSeconds)
		}
		if r.TrainRows != 240 || r.TestRows != 160 || r.Cols != 4 || r.Dataset != "small" {
			t.Errorf("%s: %s %d/%d rows × %d, want small 240/160 × 4", r.Detector, r.Dataset, r.TrainRows, r.TestRows, r.Cols)
		}
	}
	if want := []string{"iforest", "ecod", "hbos", "knn"}; !slices.Equal(got, want) {
		t.Errorf("batch detectors %v, want %v", got, want)
	}
	if rep.Batch[3].Params["standardize"] != 0 {
		t.Errorf("knn params %v: the --param override was not applied", rep.Batch[3].Params)
	}
	got = got[:0]
	for _, r := range rep.Stream {
		got = append(got, r.Detector)
		t.Logf("%s: %.0f updates/s roc_auc %.3f", r.Detector, r.UpdatesPerSec, r.ROCAUC)
		if !(r.ROCAUC >= 0 && r.ROCAUC <= 1) || !(r.UpdatesPerSec > 0) || !(r.Seconds > 0) || r.Records != 1200 {
			t.Errorf("%s: %+v", r.Detector, r)
		}
	}
	if want := []string{"hst", "zscore"}; !slices.Equal(got, want) {
		t.Errorf("stream detectors %v, want %v", got, want)
	}
	if rep.Stream[0].Params["trees"] != 5 {
		t.Errorf("hst params %v: the --param override was not applied", rep.Stream[0].Params)
	}

	// The table form names every detector, and a subsample shrinks both parts.
	stdout, stderr, err = benchDetectors("--dataset", data, "--detectors", "hbos", "--subsample", "200", "--seed", "3", "--repeat", "1")
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "small[200]") || !strings.Contains(stdout, " 120 ") || !strings.Contains(stdout, " 80 ") {
		t.Errorf("subsample table:\n%s", stdout)
	}
}

// TestBenchDetectorsSplitMatchesPython pins the row ranking that scripts/peers/peers.py
// reimplements: these values were produced by its peer_split.
func TestBenchDetectorsSplitMatchesPython(t *testing.T) {
	for _, tc := range []struct {
		n, sub int
		seed   uint64
		train  int
		head   []int
	}{
		{49097, 0, 0, 29458, []int{1, 2, 4, 5, 7}},
		{286048, 50000, 7, 30000, []int{17, 39, 41, 45, 50}},
		{11, 0, 3, 7, []int{1, 2, 3, 4, 5}},
	} {
		train, test := peerSplit(tc.n, tc.sub, tc.seed)
		kept := tc.n
		if tc.sub > 0 {
			kept = tc.sub
		}
		if len(train) != tc.train || len(train)+len(test) != kept || !slices.Equal(train[:5], tc.head) {
			t.Errorf("peerSplit(%d, %d, %d): train %d (head %v), test %d; want train %d (head %v) of %d",
				tc.n, tc.sub, tc.seed, len(train), train[:5], len(test), tc.train, tc.head, kept)
		}
		if !slices.IsSorted(train) || !slices.IsSorted(test) {
			t.Errorf("peerSplit(%d, …): parts are not in file order", tc.n)
		}
	}
}

func TestBenchDetectorsUsage(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "small.csv")
	writeBenchODDS(t, data)
	series := writeBenchNAB(t, filepath.Join(dir, "nab"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--dataset"},
		{[]string{"--dataset", data, "--detectors", "iforest,nosuch"}, `"nosuch"`},
		{[]string{"--dataset", data, "--detectors", "hst"}, `unknown batch detector "hst"`},
		{[]string{"--dataset", data, "--detectors", "hbos,hbos"}, "twice"},
		{[]string{"--stream-series", series, "--stream-detectors", "iforest"}, `unknown streaming detector "iforest"`},
		{[]string{"--dataset", data, "--subsample", "-5"}, "--subsample -5"},
		{[]string{"--dataset", data, "--subsample", "401"}, "--subsample 401"},
		{[]string{"--dataset", data, "--repeat", "0"}, "--repeat 0"},
		{[]string{"--dataset", data, "--param", "iforest.trees"}, "--param"},
		{[]string{"--dataset", data, "--param", "iforest.nosuch=1"}, "nosuch"},
		{[]string{"--dataset", data, "--param", "iforest.trees=0"}, "trees"},
		{[]string{"--dataset", data, "--detectors", "hbos", "--param", "knn.n_neighbors=3"}, "knn"},
		{[]string{"--dataset", data, "--labels", "x.json"}, "--labels"},
		{[]string{"--dataset", data, "--bogus"}, "bogus"},
		{[]string{"--dataset", data, "--detectors", ""}, "nothing to time"},
		{[]string{"--stream-series", filepath.Join(dir, "nab", "synthetic", "other.csv")}, "other.csv"},
	} {
		_, _, err := benchDetectors(tc.args...)
		if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error mentioning %s", tc.args, err, tc.want)
		}
	}
	// A missing file is not a usage error but must name the file.
	_, _, err := benchDetectors("--dataset", filepath.Join(dir, "absent.csv"))
	if err == nil || !strings.Contains(err.Error(), "absent.csv") {
		t.Errorf("missing dataset: %v", err)
	}
}
