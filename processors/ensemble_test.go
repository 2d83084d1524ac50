package processors_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/schemas"
)

// ensembleRun feeds raw zscore scores per series through an ensemble stage of s and
// returns each record's result.
func ensembleRun(t *testing.T, s *spec.Spec, series []string, raw []float64) []schemas.Result {
	t.Helper()
	s.Detectors = []spec.Detector{{Name: "zscore", Algorithm: "zscore", Weight: 1}}
	ens, err := processors.NewEnsemble(s, topics)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := ens.NewProcessor(topics.Scores, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]schemas.Result, len(raw))
	for i, x := range raw {
		sc := schemas.Scores{
			Series: series[i], TS: int64(i), Names: []string{"v"}, Raw: []float64{x},
			Source: schemas.Source{Topic: topics.Records, Offset: int64(i)}, Pipeline: "default",
			Detectors: map[string]float64{"zscore": x},
		}
		res, err := runOne(t, ep, series[i], schemas.AppendScores(nil, &sc), int64(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.DecodeResult(res[0].Value, &out[i]); err != nil {
			t.Fatal(err)
		}
		if out[i].IsAnomaly != (len(res) == 2) {
			t.Fatalf("record %d: is_anomaly %v but %d outputs", i, out[i].IsAnomaly, len(res))
		}
	}
	return out
}

// burstInput is two interleaved series of noise; series a has a burst of three high
// scores, the middle one lower, then a higher one 10 records later, and b one spike.
func burstInput() (series []string, raw []float64, a []int, b int) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		series = append(series, []string{"a", "b"}[i%2])
		raw = append(raw, rng.ExpFloat64()) // a detector's usual scores: a light tail
	}
	// Far enough into the tail to be anomalies, not so far that calibration rounds
	// them all to 1.
	a = []int{2000, 2002, 2004, 2024}
	for k, v := range []float64{9, 8, 9, 11} {
		raw[a[k]] = v
	}
	b = 2001
	raw[b] = 9
	return series, raw, a, b
}

func TestEnsembleSuppressesRepeatsPerSeries(t *testing.T) {
	series, raw, a, b := burstInput()
	s := spec.Default()
	s.Ensemble.Suppress = 25
	got := ensembleRun(t, s, series, raw)
	for k, want := range []bool{true, false, false, true} {
		if got[a[k]].IsAnomaly != want {
			t.Errorf("series a, burst record %d: is_anomaly %v (score %v), want %v", k, got[a[k]].IsAnomaly, got[a[k]].Score, want)
		}
	}
	if !got[b].IsAnomaly {
		t.Errorf("series b's spike was suppressed by series a's burst: score %v", got[b].Score)
	}
	// A suppressed record's score is capped below the threshold, not dropped.
	if r := got[a[1]]; !(r.Score > 0.9 && r.Score < s.Ensemble.Threshold) || r.Severity != "none" {
		t.Errorf("suppressed record: score %v severity %s", r.Score, r.Severity)
	}

	if r := got[a[1]]; !(r.Score < r.Detectors["zscore"]) {
		t.Errorf("suppressed record: score %v not below its calibrated score %v", r.Score, r.Detectors["zscore"])
	}

	// Without suppression the score is the combined calibrated score, untouched.
	s.Ensemble.Suppress = 0
	got = ensembleRun(t, s, series, raw)
	for k := range a {
		if r := got[a[k]]; r.Score != r.Detectors["zscore"] {
			t.Errorf("without suppression, burst record %d: score %v, calibrated %v", k, r.Score, r.Detectors["zscore"])
		}
	}
	if !got[a[0]].IsAnomaly || !got[a[3]].IsAnomaly {
		t.Errorf("without suppression the burst's peaks are not anomalies: %v, %v", got[a[0]].Score, got[a[3]].Score)
	}
}

func TestEnsembleLikelihood(t *testing.T) {
	series, raw, a, _ := burstInput()
	s := spec.Default()
	s.Ensemble.Suppress = 0
	s.Ensemble.Likelihood = spec.Likelihood{Short: 3, Long: 1000}
	got := ensembleRun(t, s, series, raw)
	// The burst lifts a's short-term mean above anything its noise did.
	noise := 0.0
	for i, r := range got {
		if r.Score < 0 || r.Score > 1 {
			t.Fatalf("record %d: likelihood %v outside [0,1]", i, r.Score)
		}
		if i < a[0] && series[i] == "a" {
			noise = max(noise, r.Score)
		}
	}
	if r := got[a[2]]; !(r.Score > 0.998 && r.Score > noise) {
		t.Errorf("likelihood after the burst %v, want > 0.998 and above the noise's highest %v", r.Score, noise)
	}
}

func TestNewEnsembleRejectsBadPostProcessing(t *testing.T) {
	s := spec.Default()
	s.Ensemble.Suppress = -1
	if _, err := processors.NewEnsemble(s, topics); err == nil {
		t.Error("suppress -1 accepted")
	}
	s = spec.Default()
	s.Ensemble.Likelihood = spec.Likelihood{Short: 5, Long: 0}
	if _, err := processors.NewEnsemble(s, topics); err == nil {
		t.Error("likelihood long 0 accepted")
	}
}
