package detectors

import (
	"math"
	"strings"
	"testing"
)

func TestStreamingDetectorsRegistered(t *testing.T) {
	for _, name := range []string{"zscore", "ewma", "hst", "windowed_gaussian"} {
		info, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Kind != KindStreaming || info.NewStreaming == nil || info.Doc == "" {
			t.Fatalf("%s: kind %q, constructor %v, doc %q", name, info.Kind, info.NewStreaming != nil, info.Doc)
		}
		for _, p := range info.Params {
			if p.Doc == "" || p.Default < p.Min || p.Default > p.Max {
				t.Fatalf("%s.%s: undocumented or default %v outside [%v, %v]", name, p.Name, p.Default, p.Min, p.Max)
			}
		}
		p, err := info.Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := info.NewStreaming(p, 1); err != nil {
			t.Fatalf("%s with defaults: %v", name, err)
		}
	}
}

// TestResolveRejects: bad values fail with a message naming the parameter and its range.
func TestResolveRejects(t *testing.T) {
	for _, tc := range []struct {
		detector string
		given    Params
		want     []string
	}{
		{"zscore", Params{"window": 4}, []string{"window", "[8, 100000]"}},
		{"zscore", Params{"window": 200000}, []string{"window", "[8, 100000]"}},
		{"zscore", Params{"window": 64.5}, []string{"window", "whole number"}},
		{"zscore", Params{"min_samples": 0}, []string{"min_samples", "[1, 100000]"}},
		{"zscore", Params{"alpha": 0.1}, []string{`"alpha"`, "window, min_samples"}},
		{"ewma", Params{"alpha": 0}, []string{"alpha", "[0.0001, 1]"}},
		{"ewma", Params{"alpha": 1.5}, []string{"alpha", "[0.0001, 1]"}},
		{"ewma", Params{"alpha": math.NaN()}, []string{"alpha"}},
		{"hst", Params{"trees": 0}, []string{"trees", "[1, 500]"}},
		{"hst", Params{"height": 30}, []string{"height", "[2, 25]"}},
		{"hst", Params{"window": 5}, []string{"window", "[10, 1e+06]"}},
		{"hst", Params{"limit": -1}, []string{"limit"}},
	} {
		info, err := Lookup(tc.detector)
		if err != nil {
			t.Fatal(err)
		}
		_, err = info.Resolve(tc.given)
		if err == nil {
			t.Errorf("%s %v: accepted", tc.detector, tc.given)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s %v: error %q does not mention %q", tc.detector, tc.given, err, w)
			}
		}
	}
}

// TestNewStreamingRejectsInconsistentParams: ranges alone cannot catch these.
func TestNewStreamingRejectsInconsistentParams(t *testing.T) {
	for _, tc := range []struct {
		detector string
		given    Params
		want     string
	}{
		{"zscore", Params{"window": 16, "min_samples": 17}, "min_samples"},
		{"windowed_gaussian", Params{"window": 16, "min_samples": 17}, "min_samples"},
		{"hst", Params{"trees": 500, "height": 25}, "height"},
	} {
		info, _ := Lookup(tc.detector)
		p, err := info.Resolve(tc.given)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := info.NewStreaming(p, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: error %v, want one naming %s", tc.detector, tc.given, err, tc.want)
		}
	}
}

// TestStreamingContract runs every registered streaming detector through the Streaming
// contract: finite non-negative scores, contributions summing to 1 or all 0, and the same
// scores for the same seed.
// warmupLimit is the record by which every detector at its defaults has left warm-up
// (hst needs one window of 250).
const warmupLimit = 300

func TestStreamingContract(t *testing.T) {
	stream := normalRows(1500, 3, 11)
	for i := 300; i < len(stream); i += 97 {
		stream[i][i%3] = 25 // spikes, clipped by hst
	}
	stream[400] = []float64{1e300, -1e300, 0}
	stream[401] = []float64{math.NaN(), 0, math.Inf(1)}
	for _, info := range List() {
		if info.Kind != KindStreaming {
			continue
		}
		t.Run(info.Name, func(t *testing.T) {
			p, err := info.Resolve(nil)
			if err != nil {
				t.Fatal(err)
			}
			run := func() []float64 {
				d, err := info.NewStreaming(p, 99)
				if err != nil {
					t.Fatal(err)
				}
				out := make([]float64, 0, len(stream))
				contrib := make([]float64, 3)
				for i, x := range stream {
					series := "a"
					if i%2 == 1 {
						series = "b"
					}
					s := d.ScoreLearn(series, x, contrib)
					if math.IsNaN(s) && i < warmupLimit {
						out = append(out, s)
						continue // warming up: no judgement yet
					}
					if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
						t.Fatalf("record %d %v: score %v", i, x, s)
					}
					sum := 0.0
					for _, c := range contrib {
						if !(c >= 0 && c <= 1) {
							t.Fatalf("record %d: contribution %v", i, contrib)
						}
						sum += c
					}
					if sum != 0 && math.Abs(sum-1) > 1e-9 {
						t.Fatalf("record %d: contributions %v sum to %v", i, contrib, sum)
					}
					out = append(out, s)
				}
				return out
			}
			a, b := run(), run()
			for i := range a {
				if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
					t.Fatalf("record %d: %v then %v for the same seed", i, a[i], b[i])
				}
			}
		})
	}
}

// TestSpikeOnFlatSeriesScoresHighest: on a flat series, and on one with a little noise, a
// single spike must get the strictly highest score of every streaming detector.
func TestSpikeOnFlatSeriesScoresHighest(t *testing.T) {
	noise := normals(600, 5)
	for _, tc := range []struct {
		name  string
		noise float64
	}{{"flat", 0}, {"noisy", 0.1}} {
		for _, info := range List() {
			if info.Kind != KindStreaming {
				continue
			}
			t.Run(tc.name+"/"+info.Name, func(t *testing.T) {
				p, _ := info.Resolve(nil)
				d, err := info.NewStreaming(p, 1)
				if err != nil {
					t.Fatal(err)
				}
				const spikeAt = 550 // after hst's first window
				spike, top := 0.0, 0.0
				for i := range 600 {
					x := 1 + tc.noise*noise[i]
					if i == spikeAt {
						x = 3
					}
					s := d.ScoreLearn("s", []float64{x, 1}, nil)
					if i == spikeAt {
						spike = s
					} else if s > top { // false for warm-up NaN
						top = s
					}
				}
				if !(spike > top) {
					t.Fatalf("spike scored %v, another point %v", spike, top)
				}
			})
		}
	}
}
