package producers

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"maps"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/schemas"
)

// drain reads n records (all, when n < 0) and returns deep copies; any error but
// io.EOF fails the test.
func drain(t testing.TB, src Source, n int) []schemas.Record {
	t.Helper()
	var out []schemas.Record
	var r schemas.Record
	for n < 0 || len(out) < n {
		err := src.Next(&r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", len(out), err)
		}
		out = append(out, copyRecord(&r))
	}
	return out
}

// drainLenient reads src to the end, collecting records and the bad lines' errors.
func drainLenient(t testing.TB, src Source) (recs []schemas.Record, bad []string) {
	t.Helper()
	var r schemas.Record
	for {
		err := src.Next(&r)
		if errors.Is(err, io.EOF) {
			return recs, bad
		}
		var ie *InputError
		if errors.As(err, &ie) {
			bad = append(bad, err.Error())
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, copyRecord(&r))
	}
}

// copyRecord deep-copies r: sources reuse the maps of the record they fill.
func copyRecord(r *schemas.Record) schemas.Record {
	c := *r
	c.Values = maps.Clone(r.Values)
	c.Tags = maps.Clone(r.Tags)
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	return c
}

func TestSyntheticDeterministic(t *testing.T) {
	cfg := SyntheticConfig{Series: 5, Features: 3, Count: 20000, Seed: 42, AnomalyRate: 0.01}
	a, b := NewSynthetic(cfg), NewSynthetic(cfg)
	ra, rb := drain(t, a, -1), drain(t, b, -1)
	if len(ra) != 20000 {
		t.Fatalf("got %d records, want 20000", len(ra))
	}
	if !reflect.DeepEqual(ra, rb) {
		t.Fatal("same seed gave different records")
	}
	if !reflect.DeepEqual(a.Labels(), b.Labels()) {
		t.Fatal("same seed gave different labels")
	}
	if len(a.Labels()) == 0 {
		t.Fatal("no labels at rate 0.01")
	}

	cfg.Seed = 43
	c := NewSynthetic(cfg)
	rc := drain(t, c, -1)
	if reflect.DeepEqual(ra, rc) {
		t.Fatal("different seeds gave the same records")
	}
	if reflect.DeepEqual(a.Labels(), c.Labels()) {
		t.Fatal("different seeds gave the same labels")
	}
}

// A series' data depends on the seed and its index only, so adding series does not
// change the existing ones (handy when scaling a demo up).
func TestSyntheticSeriesIndependent(t *testing.T) {
	one := drain(t, NewSynthetic(SyntheticConfig{Series: 1, Count: 500, Seed: 7}), -1)
	three := drain(t, NewSynthetic(SyntheticConfig{Series: 3, Count: 1500, Seed: 7}), -1)
	for i, r := range one {
		if !reflect.DeepEqual(r, three[3*i]) {
			t.Fatalf("point %d of series-0000 differs: %+v vs %+v", i, r, three[3*i])
		}
	}
}

func TestSyntheticShape(t *testing.T) {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	g := NewSynthetic(SyntheticConfig{Series: 3, Features: 2, Count: 3000, Seed: 1, Start: start, Step: 5 * time.Minute, AnomalyRate: 0.02})
	recs := drain(t, g, -1)
	for i, r := range recs {
		wantSeries := []string{"series-0000", "series-0001", "series-0002"}[i%3]
		if r.Series != wantSeries {
			t.Fatalf("record %d: series %q, want %q", i, r.Series, wantSeries)
		}
		if want := start.Add(time.Duration(i/3) * 5 * time.Minute).UnixMilli(); r.TS != want {
			t.Fatalf("record %d: ts %d, want %d", i, r.TS, want)
		}
		if len(r.Values) != 2 {
			t.Fatalf("record %d: values %v, want f0 and f1", i, r.Values)
		}
		for k, v := range r.Values {
			if k != "f0" && k != "f1" {
				t.Fatalf("record %d: unexpected feature %q", i, k)
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("record %d: %s = %v", i, k, v)
			}
		}
	}
	one := drain(t, NewSynthetic(SyntheticConfig{Count: 1}), -1)
	if _, ok := one[0].Values["value"]; !ok || len(one[0].Values) != 1 {
		t.Fatalf("one feature: values %v, want just \"value\"", one[0].Values)
	}
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(); one[0].TS != want {
		t.Fatalf("default start: ts %d, want %d", one[0].TS, want)
	}
}

// Values stay finite over a long run with extreme settings: many features, a high
// anomaly rate and a 100-year span of event time for the trend to grow in.
func TestSyntheticFinite(t *testing.T) {
	g := NewSynthetic(SyntheticConfig{Series: 2, Features: 4, Count: 200000, Seed: 9, AnomalyRate: 0.05, Step: 8 * time.Hour})
	var r schemas.Record
	for i := 0; ; i++ {
		if err := g.Next(&r); err == io.EOF {
			break
		}
		for k, v := range r.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("record %d: %s = %v", i, k, v)
			}
		}
	}
}

func TestSyntheticAnomalyRate(t *testing.T) {
	for _, rate := range []float64{0.002, 0.01} {
		const series, perSeries, warmup = 10, 30000, 200
		g := NewSynthetic(SyntheticConfig{Series: series, Count: series * perSeries, Seed: 3, AnomalyRate: rate})
		drain(t, g, -1)
		eligible := float64(series * (perSeries - warmup))
		got := float64(len(g.Labels())) / eligible
		if math.Abs(got-rate)/rate > 0.15 {
			t.Errorf("rate %v: got %.5f anomalies per record (%d labels)", rate, got, len(g.Labels()))
		}
		kinds := map[string]int{}
		for _, l := range g.Labels() {
			kinds[l.Kind]++
		}
		for _, k := range []string{KindSpike, KindLevelShift, KindDrift} {
			if kinds[k] < len(g.Labels())/5 {
				t.Errorf("rate %v: kind %s only %d of %d", rate, k, kinds[k], len(g.Labels()))
			}
		}
	}
	g := NewSynthetic(SyntheticConfig{Count: 50000, AnomalyRate: -1})
	drain(t, g, -1)
	if n := len(g.Labels()); n != 0 {
		t.Errorf("negative rate: %d labels, want none", n)
	}
}

func TestSyntheticLabels(t *testing.T) {
	for _, warmup := range []int{0, 500} {
		const series = 4
		step := time.Minute
		g := NewSynthetic(SyntheticConfig{Series: series, Count: 80000, Seed: 11, AnomalyRate: 0.01, WarmupPoints: warmup, Step: step})
		recs := drain(t, g, -1)
		wantWarmup := int64(warmup)
		if warmup == 0 {
			wantWarmup = 200
		}
		labels := g.Labels()
		if len(labels) == 0 {
			t.Fatal("no labels")
		}
		lastEnd := map[string]int64{}
		seriesEnd := map[string]int64{}
		for _, r := range recs {
			seriesEnd[r.Series] = r.TS
		}
		for _, l := range labels {
			if point := l.Index / series; point < wantWarmup {
				t.Errorf("warm-up %d: anomaly at point %d of %s", wantWarmup, point, l.Series)
			}
			r := recs[l.Index]
			if r.Series != l.Series || r.TS != l.TS {
				t.Errorf("label %+v does not match record %d (%s at %d)", l, l.Index, r.Series, r.TS)
			}
			switch l.Kind {
			case KindSpike:
				if l.End != l.TS {
					t.Errorf("spike %+v: End != TS", l)
				}
			case KindLevelShift, KindDrift:
				n := (l.End-l.TS)/step.Milliseconds() + 1
				lo, hi := int64(20), int64(60)
				if l.Kind == KindDrift {
					lo, hi = 30, 80
				}
				truncated := l.End == seriesEnd[l.Series] // cut short by Count
				if n > hi || n < lo && !truncated {
					t.Errorf("%s %+v spans %d points, want %d..%d", l.Kind, l, n, lo, hi)
				}
			default:
				t.Errorf("label %+v: unknown kind", l)
			}
			if l.TS <= lastEnd[l.Series] {
				t.Errorf("label %+v overlaps the previous window of its series", l)
			}
			lastEnd[l.Series] = l.End
			if l.End > seriesEnd[l.Series] {
				t.Errorf("label %+v ends after the data", l)
			}
		}
	}
}

// Injected anomalies must stand out from the clean signal (level + trend + season) by
// more than noise could: spikes at the point, level shifts on average over the window.
func TestSyntheticAnomaliesStandOut(t *testing.T) {
	const series = 2
	g := NewSynthetic(SyntheticConfig{Series: series, Count: 100000, Seed: 5, AnomalyRate: 0.005})
	recs := drain(t, g, -1)
	startMS := g.startMS
	// deviation of record i from its series' clean signal, in noise sds
	deviation := func(i int64) float64 {
		r := recs[i]
		ft := g.series[i%series].feats[0]
		sin, cos := math.Sincos(2 * math.Pi * float64(r.TS%86_400_000) / 86_400_000)
		clean := ft.level + ft.slope*float64(r.TS-startMS) + ft.amp*(sin*ft.cosPhase+cos*ft.sinPhase)
		return (r.Values["value"] - clean) / ft.sd
	}
	checked := map[string]int{}
	for _, l := range g.Labels() {
		switch l.Kind {
		case KindSpike:
			if d := math.Abs(deviation(l.Index)); d < 6 {
				t.Errorf("spike %+v is only %.1f sd off", l, d)
			}
		case KindLevelShift:
			n := (l.End-l.TS)/g.stepMS + 1
			var sum float64
			for k := range n {
				sum += deviation(l.Index + k*series)
			}
			if mean := math.Abs(sum / float64(n)); mean < 5 {
				t.Errorf("level shift %+v is only %.1f sd off on average", l, mean)
			}
		case KindDrift:
			n := (l.End-l.TS)/g.stepMS + 1
			if d := math.Abs(deviation(l.Index + (n-1)*series)); n >= 30 && d < 4 {
				t.Errorf("drift %+v ends only %.1f sd off", l, d)
			}
		}
		checked[l.Kind]++
	}
	if len(checked) != 3 {
		t.Fatalf("checked %v, want all three kinds", checked)
	}
}

func TestSyntheticWriteLabels(t *testing.T) {
	g := NewSynthetic(SyntheticConfig{Series: 2, Count: 20000, Seed: 2, AnomalyRate: 0.01})
	drain(t, g, -1)
	var buf bytes.Buffer
	if err := g.WriteLabels(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := rows[0]; !reflect.DeepEqual(got, []string{"series", "ts", "kind", "end_ts"}) {
		t.Fatalf("header %q", got)
	}
	labels := g.Labels()
	if len(rows)-1 != len(labels) {
		t.Fatalf("%d rows for %d labels", len(rows)-1, len(labels))
	}
	for i, row := range rows[1:] {
		l := labels[i]
		ts, err1 := time.Parse(time.RFC3339, row[1])
		end, err2 := time.Parse(time.RFC3339, row[3])
		if err1 != nil || err2 != nil {
			t.Fatalf("row %d %q: %v %v", i+1, row, err1, err2)
		}
		if row[0] != l.Series || ts.UnixMilli() != l.TS || row[2] != l.Kind || end.UnixMilli() != l.End {
			t.Fatalf("row %d %q does not match %+v", i+1, row, l)
		}
	}
	if ts := rows[1][1]; len(ts) != len("2026-01-01T00:00:00Z") || ts[len(ts)-1] != 'Z' {
		t.Errorf("time %q, want RFC 3339 UTC in seconds", ts)
	}
}

// Next reuses the caller's maps and clears stale keys.
func TestSyntheticReusesMaps(t *testing.T) {
	g := NewSynthetic(SyntheticConfig{Count: 2})
	r := schemas.Record{Values: map[string]float64{"stale": 1}, Tags: map[string]string{"old": "x"}}
	values := reflect.ValueOf(r.Values).Pointer()
	if err := g.Next(&r); err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(r.Values).Pointer() != values {
		t.Error("Values map replaced, want reused")
	}
	if _, ok := r.Values["stale"]; ok || len(r.Tags) != 0 {
		t.Errorf("stale entries kept: %v %v", r.Values, r.Tags)
	}
}

func BenchmarkSynthetic(b *testing.B) {
	for _, features := range []int{1, 8} {
		b.Run(map[int]string{1: "features=1", 8: "features=8"}[features], func(b *testing.B) {
			g := NewSynthetic(SyntheticConfig{Series: 100, Features: features, Seed: 1})
			var r schemas.Record
			b.ReportAllocs()
			for b.Loop() {
				if err := g.Next(&r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
