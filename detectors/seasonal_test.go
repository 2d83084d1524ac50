package detectors

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var seasonalDefaults = SeasonalConfig{BinsPerDay: 24, Weekly: true, Alpha: 0.1, MinSamples: 4, StepSeconds: 300}

func newSeasonal(t testing.TB, cfg SeasonalConfig) *Seasonal {
	t.Helper()
	s, err := NewSeasonal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSeasonalBinHandComputed follows one bin: running means while warming up, then
// forgetting with alpha and a residual clipped at three spreads.
func TestSeasonalBinHandComputed(t *testing.T) {
	s := newSeasonal(t, SeasonalConfig{BinsPerDay: 1, Alpha: 0.25, MinSamples: 3, StepSeconds: 1})
	var b seasonalBin
	for _, v := range []float64{10, 12, 8} {
		s.learn(&b, v)
	}
	// Level: 10, then 11, then 10. Spread: 0, then (0 + 2)/2 = 1, then 1 + (3 − 1)/3.
	if b.level != 10 || math.Abs(b.spread-5.0/3) > 1e-15 || b.n != 3 {
		t.Fatalf("after warm-up: %+v, want level 10, spread 5/3, n 3", b)
	}
	s.learn(&b, 1000) // clipped at 3·5/3 = 5
	if want := 10 + 0.25*5; b.level != want {
		t.Fatalf("after a spike: level %v, want %v", b.level, want)
	}
	if want := 5.0/3 + 0.25*(5-5.0/3); math.Abs(b.spread-want) > 1e-15 {
		t.Fatalf("after a spike: spread %v, want %v", b.spread, want)
	}
}

func TestSeasonalBins(t *testing.T) {
	day := int64(msPerDay)
	for _, tc := range []struct {
		name      string
		offset    float64
		ts        int64
		day, week int
	}{
		{"epoch is Thursday 00:00", 0, 0, 1, 1 + 24 + 3*24},
		{"Thursday 13:30", 0, 13*3_600_000 + 1_800_000, 1 + 13, 1 + 24 + 3*24 + 13},
		{"Monday 00:00", 0, 4 * day, 1, 1 + 24},
		{"Sunday 23:59", 0, 4*day - 60_000, 1 + 23, 1 + 24 + 6*24 + 23},
		{"before the epoch: Wednesday 23:00", 0, -3_600_000, 1 + 23, 1 + 24 + 2*24 + 23},
		{"UTC+2: 22:00 UTC is Friday 00:00", 2, 22 * 3_600_000, 1, 1 + 24 + 4*24},
		{"UTC-5.5: 03:00 UTC is Wednesday 21:30", -5.5, 3 * 3_600_000, 1 + 21, 1 + 24 + 2*24 + 21},
	} {
		s := newSeasonal(t, SeasonalConfig{BinsPerDay: 24, Weekly: true, Alpha: 0.1, MinSamples: 4, StepSeconds: 60, UTCOffsetHours: tc.offset})
		if d, w := s.binsAt(tc.ts); d != tc.day || w != tc.week {
			t.Errorf("%s: bins %d, %d, want %d, %d", tc.name, d, w, tc.day, tc.week)
		}
	}
	ts := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC) // a Friday
	s := newSeasonal(t, seasonalDefaults)
	if d, w := s.binsAt(ts.UnixMilli()); d != 1+7 || w != 1+24+4*24+7 {
		t.Errorf("Friday 07:00: bins %d, %d", d, w)
	}
}

// dailyValue is a daily cycle peaking at noon, higher on weekdays, with noise.
func dailyValue(ts int64, rng *rand.Rand) float64 {
	tm := time.UnixMilli(ts).UTC()
	h := float64(tm.Hour()) + float64(tm.Minute())/60
	v := 50 + 30*math.Sin(2*math.Pi*(h-6)/24)
	if wd := tm.Weekday(); wd == time.Saturday || wd == time.Sunday {
		v -= 25
	}
	return v + 2*rng.NormFloat64()
}

// TestSeasonalFindsContextualAnomalies: after four weeks of 5-minute data, a weekday's noon
// value at 03:00, and on a Sunday, is ordinary overall but anomalous for its time; it must
// outscore every normal record of the last week, which the overall level cannot do.
func TestSeasonalFindsContextualAnomalies(t *testing.T) {
	s := newSeasonal(t, seasonalDefaults)
	rng := rand.New(rand.NewPCG(1, 2))
	const step = 300_000
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixMilli() // a Monday
	n := 5 * 7 * 288
	weekdayNoon := 80.0
	var normalTop float64
	var odd []float64
	for i := range n {
		ts := start + int64(i)*step
		v := dailyValue(ts, rng)
		tm := time.UnixMilli(ts).UTC()
		anomaly := i > 4*7*288 && tm.Minute() == 0 && ((tm.Hour() == 3 && tm.Weekday() == time.Wednesday) ||
			(tm.Hour() == 12 && tm.Weekday() == time.Sunday))
		if anomaly {
			v = weekdayNoon
		}
		sc := s.ScoreLearnAt("s", ts, []float64{v}, nil)
		switch {
		case anomaly:
			odd = append(odd, sc)
		case i > 4*7*288:
			normalTop = max(normalTop, sc)
		}
	}
	if len(odd) != 2 {
		t.Fatalf("%d anomalies injected, want 2", len(odd))
	}
	t.Logf("anomalies scored %v; normal records of the last week at most %v", odd, normalTop)
	for _, sc := range odd {
		if !(sc > normalTop) {
			t.Fatalf("anomaly scored %v, a normal record %v", sc, normalTop)
		}
	}
}

// TestSeasonalScoreLearnSteps: without timestamps, records are step_seconds apart from the
// epoch, exactly as if stamped so.
func TestSeasonalScoreLearnSteps(t *testing.T) {
	a, b := newSeasonal(t, seasonalDefaults), newSeasonal(t, seasonalDefaults)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 5000 {
		x := []float64{dailyValue(int64(i)*300_000, rng), rng.NormFloat64()}
		sa := a.ScoreLearn("s", x, nil)
		sb := b.ScoreLearnAt("s", int64(i)*300_000, x, nil)
		if math.Float64bits(sa) != math.Float64bits(sb) {
			t.Fatalf("record %d: ScoreLearn %v, ScoreLearnAt %v", i, sa, sb)
		}
	}
	// After a timestamp, steps continue from it.
	a.ScoreLearnAt("t", 1_000_000, []float64{1}, nil)
	a.ScoreLearn("t", []float64{1}, nil)
	if got := a.series["t"].lastMs; got != 1_300_000 {
		t.Fatalf("step after a timestamp: %d, want 1300000", got)
	}
}

// TestSeasonalRobustToSpikes: a spike hardly moves the profile, so the records after it
// score as they would have without it.
func TestSeasonalRobustToSpikes(t *testing.T) {
	run := func(spike bool) []float64 {
		s := newSeasonal(t, seasonalDefaults)
		rng := rand.New(rand.NewPCG(5, 6))
		var out []float64
		for i := range 3000 {
			v := 10 + rng.NormFloat64()
			if spike && i == 2000 {
				v = 1e6
			}
			sc := s.ScoreLearn("s", []float64{v}, nil)
			if i > 2000 {
				out = append(out, sc)
			}
		}
		return out
	}
	clean, spiked := run(false), run(true)
	for i := range clean {
		if math.Abs(clean[i]-spiked[i]) > 0.5 {
			t.Fatalf("record %d after the spike: %v, %v without it", 2001+i, spiked[i], clean[i])
		}
	}
}

func TestSeasonalContributionsAndWarmup(t *testing.T) {
	s := newSeasonal(t, seasonalDefaults)
	rows := normalRows(2000, 3, 9)
	contrib := make([]float64, 3)
	for i, r := range rows {
		sc := s.ScoreLearn("s", r, contrib)
		if i < seasonalDefaults.MinSamples {
			if !math.IsNaN(sc) {
				t.Fatalf("record %d scored %v while warming up", i, sc)
			}
			continue
		}
		if math.IsNaN(sc) {
			t.Fatalf("record %d: NaN after warm-up", i)
		}
	}
	x := slices.Clone(rows[0])
	x[1] = 30
	s.ScoreLearn("s", x, contrib)
	if !(contrib[1] > 0.9) || math.Abs(contrib[0]+contrib[1]+contrib[2]-1) > 1e-9 {
		t.Fatalf("contributions %v, want most on feature 1", contrib)
	}
	if s.Len() != 1 {
		t.Fatalf("%d series, want 1", s.Len())
	}
	s.Forget("s")
	if s.Len() != 0 {
		t.Fatal("Forget did not drop the series")
	}
}

func TestSeasonalOddInputs(t *testing.T) {
	s := newSeasonal(t, SeasonalConfig{BinsPerDay: 4, Alpha: 0.5, MinSamples: 2, StepSeconds: 3600})
	contrib := []float64{9, 9}
	for i := range 50 {
		x := []float64{math.MaxFloat64, -math.MaxFloat64}
		if i%3 == 0 {
			x = []float64{math.NaN(), math.Inf(1)}
		}
		sc := s.ScoreLearnAt("s", math.MinInt64/2+int64(i), x, contrib)
		if !(sc >= 0 && sc <= scoreCap || math.IsNaN(sc)) {
			t.Fatalf("score %v for %v", sc, x)
		}
		if c := contrib[0] + contrib[1]; c != 0 && math.Abs(c-1) > 1e-9 {
			t.Fatalf("contributions %v", contrib)
		}
	}
	if sc := s.ScoreLearn("s", nil, nil); !math.IsNaN(sc) {
		t.Fatalf("empty record scored %v", sc)
	}
	for _, cfg := range []SeasonalConfig{
		{BinsPerDay: 0, Alpha: 0.1, MinSamples: 4, StepSeconds: 1},
		{BinsPerDay: 24, Alpha: 0, MinSamples: 4, StepSeconds: 1},
		{BinsPerDay: 24, Alpha: 0.1, MinSamples: 0, StepSeconds: 1},
		{BinsPerDay: 24, Alpha: 0.1, MinSamples: 4, StepSeconds: 0},
		{BinsPerDay: 24, Alpha: 0.1, MinSamples: 4, StepSeconds: 1, UTCOffsetHours: math.NaN()},
	} {
		if _, err := NewSeasonal(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestSeasonalNoAllocsSteadyState(t *testing.T) {
	s := newSeasonal(t, seasonalDefaults)
	rows := normalRows(512, 4, 1)
	contrib := make([]float64, 4)
	for _, r := range rows {
		s.ScoreLearn("s", r, contrib)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() { s.ScoreLearn("s", rows[i%512], contrib); i++ }); a != 0 {
		t.Fatalf("ScoreLearn allocates %v times per call for a known series, want 0", a)
	}
}

func BenchmarkSeasonal(b *testing.B) {
	s := newSeasonal(b, seasonalDefaults)
	rows := normalRows(4096, 10, 1)
	contrib := make([]float64, 10)
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		s.ScoreLearnAt("s", int64(i)*300_000, rows[i&4095], contrib)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
