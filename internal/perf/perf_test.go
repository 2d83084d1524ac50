package perf

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		values []float64
		q      float64
		want   float64
	}{
		{[]float64{1, 2, 3, 4}, 0.5, 2.5}, // the mean of the middle two, as numpy
		{[]float64{1, 2, 3, 4}, 0, 1},
		{[]float64{1, 2, 3, 4}, 1, 4},
		{ten, 0.9, 9.1},
		{ten, 0.99, 9.91},
		{ten, 0.25, 3.25},
		{[]float64{7}, 0.99, 7},
		{ten, 1.5, 10}, // clamped
		{ten, -1, 1},
	} {
		if got := Percentile(tc.values, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.values, tc.q, got, tc.want)
		}
	}
	if got := Percentile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("Percentile of nothing = %v, want NaN", got)
	}
}

func TestSummarize(t *testing.T) {
	values := []float64{5, 1, 4, 2, 3, 100}
	d := Summarize(values)
	if d.N != 6 || d.Max != 100 || d.P50 != 3.5 || math.Abs(d.Mean-115.0/6) > 1e-9 {
		t.Errorf("Summarize = %+v", d)
	}
	if !slices.IsSorted(values) {
		t.Errorf("Summarize did not sort in place: %v", values)
	}
	if d := Summarize(nil); d.N != 0 {
		t.Errorf("Summarize(nil) = %+v", d)
	}
}

func TestLogBins(t *testing.T) {
	values := []float64{0.1, 0.1, 1, 1, 1, 10, 10, 100, 0, -3}
	edges, counts := LogBins(values, 3)
	if len(edges) != 4 || len(counts) != 3 {
		t.Fatalf("LogBins: %d edges, %d counts", len(edges), len(counts))
	}
	for i, want := range []float64{0.1, 1, 10, 100} {
		if math.Abs(edges[i]-want)/want > 1e-9 {
			t.Errorf("edge %d = %v, want %v", i, edges[i], want)
		}
	}
	// Non-positive values count in the first bin; a value on an inner edge in the bin
	// above it; the maximum in the last.
	if want := []int{4, 3, 3}; !slices.Equal(counts, want) {
		t.Errorf("counts = %v, want %v", counts, want)
	}
	if e, c := LogBins(nil, 5); e != nil || c != nil {
		t.Errorf("LogBins(nil) = %v, %v", e, c)
	}
	if _, c := LogBins([]float64{2, 2, 2}, 4); c[0] != 3 {
		t.Errorf("constant values: counts %v, want all in the first bin", c)
	}
}

func TestAttribute(t *testing.T) {
	const (
		kgoProduce = "github.com/twmb/franz-go/pkg/kgo.(*Client).Produce"
		runner     = "github.com/gonomaly/gonomaly/processors.(*partitionWorker).processBatch"
		detectProc = "github.com/gonomaly/gonomaly/processors.(*detector).Process"
		ensProc    = "github.com/gonomaly/gonomaly/processors.(*ensembler).Process"
		preProc    = "github.com/gonomaly/gonomaly/processors.(*preprocessor).Process"
		goexit     = "runtime.goexit"
	)
	stage := func(s string) map[string][]string { return map[string][]string{labelStage: {s}} }
	load := map[string][]string{labelRole: {"load"}}
	for _, tc := range []struct {
		name   string
		stack  []string
		labels map[string][]string
		want   string
	}{
		{"detector code under the detect processor", []string{"github.com/gonomaly/gonomaly/detectors.(*rrcfForest).insert", detectProc, runner, goexit}, stage("detect"), PartDetect},
		{"allocation in the detect processor", []string{"runtime.mallocgc", "github.com/gonomaly/gonomaly/schemas.DecodeFeatures", detectProc, runner, goexit}, nil, PartDetect},
		{"calibration code called by the ensemble", []string{"github.com/gonomaly/gonomaly/detectors.lowerBound", "github.com/gonomaly/gonomaly/detectors.(*POT).Score", ensProc, runner}, stage("ensemble"), PartEnsemble},
		{"preprocess decoding", []string{"github.com/gonomaly/gonomaly/schemas.(*jsonScanner).timestamp", preProc, runner}, stage("preprocess"), PartPreprocess},
		{"a stage's produce is the client's", []string{"runtime.memmove", kgoProduce, "github.com/gonomaly/gonomaly/processors.(*partitionWorker).produce", detectProc}, stage("detect"), PartKafka},
		{"compression inside the client", []string{"github.com/klauspost/compress/s2.encodeBlock", "github.com/twmb/franz-go/pkg/kgo.(*recBatch).appendTo"}, stage("detect"), PartKafka},
		{"stdlib under the client", []string{"bytes.growSlice", "github.com/twmb/franz-go/pkg/kbin.AppendVarintBytes"}, nil, PartKafka},
		{"stage code the client calls back", []string{"github.com/gonomaly/gonomaly/detectors.NewECDFCalibrator", "github.com/gonomaly/gonomaly/processors.(*Ensemble).NewProcessor", "github.com/twmb/franz-go/pkg/kgo.(*groupConsumer).assign"}, nil, PartEnsemble},
		{"runner code is its stage's by label", []string{runner, goexit}, stage("detect"), PartDetect},
		{"GC assist on a stage goroutine", []string{"runtime.gcAssistAlloc", "runtime.mallocgc", runner}, stage("preprocess"), PartPreprocess},
		{"the broker, whoever calls it", []string{"runtime.memmove", "github.com/twmb/franz-go/pkg/kfake.(*Cluster).handleProduce"}, load, PartBroker},
		{"the producer's client by label", []string{kgoProduce, "github.com/gonomaly/gonomaly/producers.(*Publisher).Run"}, load, PartLoad},
		{"the producer without labels", []string{"runtime.mallocgc", "github.com/gonomaly/gonomaly/producers.(*Synthetic).Next"}, nil, PartLoad},
		{"GC worker", []string{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker", goexit}, nil, PartRuntime},
		{"unknown label value", []string{"encoding/json.Marshal"}, stage("sink"), PartOther},
		{"HTTP serving", []string{"net/http.(*conn).serve"}, nil, PartOther},
		{"empty stack", nil, nil, PartOther},
	} {
		if got := Attribute(tc.stack, tc.labels); got != tc.want {
			t.Errorf("%s: Attribute = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// fakeProfile builds a CPU profile whose samples have the given stacks (innermost
// first), values and labels.
func fakeProfile(samples []struct {
	stack  []string
	value  int64
	labels map[string][]string
}) *profile.Profile {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	funcs := map[string]*profile.Function{}
	for _, s := range samples {
		var locs []*profile.Location
		for _, name := range s.stack {
			fn := funcs[name]
			if fn == nil {
				fn = &profile.Function{ID: uint64(len(funcs) + 1), Name: name}
				funcs[name] = fn
				p.Function = append(p.Function, fn)
			}
			loc := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn}}}
			p.Location = append(p.Location, loc)
			locs = append(locs, loc)
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: locs, Value: []int64{1, s.value}, Label: s.labels})
	}
	return p
}

func TestBreakdown(t *testing.T) {
	det := map[string][]string{labelStage: {"detect"}}
	p := fakeProfile([]struct {
		stack  []string
		value  int64
		labels map[string][]string
	}{
		{[]string{"github.com/gonomaly/gonomaly/detectors.(*rrcfForest).insert", "github.com/gonomaly/gonomaly/processors.(*detector).Process"}, 50, det},
		{[]string{"runtime.asyncPreempt", "github.com/gonomaly/gonomaly/detectors.(*rrcfForest).insert", "github.com/gonomaly/gonomaly/processors.(*detector).Process"}, 10, det},
		{[]string{"runtime.memmove", "github.com/gonomaly/gonomaly/processors.(*partitionWorker).processBatch"}, 20, det},
		{[]string{"github.com/twmb/franz-go/pkg/kgo.(*Client).Produce"}, 15, nil},
		{[]string{"runtime.gcBgMarkWorker"}, 5, nil},
		{[]string{"runtime.gcBgMarkWorker"}, 0, nil}, // empty samples are left out
	})
	parts, total, err := Breakdown(p, "cpu", 2)
	if err != nil {
		t.Fatal(err)
	}
	if total != 100 {
		t.Errorf("total = %d, want 100", total)
	}
	got := map[string]PartShare{}
	var order []string
	for _, ps := range parts {
		got[ps.Part] = ps
		order = append(order, ps.Part)
	}
	if want := []string{PartDetect, PartKafka, PartRuntime}; !slices.Equal(order, want) {
		t.Fatalf("parts %v, want %v in Parts order", order, want)
	}
	d := got[PartDetect]
	if d.Value != 80 || len(d.Top) != 2 {
		t.Fatalf("detect = %+v, want 80 with its top 2 functions", d)
	}
	// asyncPreempt marks preemption: its samples count for the function preempted.
	if d.Top[0].Name != "github.com/gonomaly/gonomaly/detectors.(*rrcfForest).insert" || d.Top[0].Flat != 60 || d.Top[1].Name != "runtime.memmove" {
		t.Errorf("detect's top functions = %+v", d.Top)
	}
	if _, _, err := Breakdown(p, "alloc_space", 3); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("unknown sample type: %v, want an error listing the profile's types", err)
	}
}

func TestHotspots(t *testing.T) {
	p := fakeProfile([]struct {
		stack  []string
		value  int64
		labels map[string][]string
	}{
		{[]string{"leaf", "mid", "root"}, 30, nil},
		{[]string{"mid", "root"}, 10, nil},
		{[]string{"rec", "rec", "root"}, 5, nil}, // recursion counts once in cum
	})
	rep, err := Hotspots(p, "cpu")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int64{"leaf": {30, 30}, "mid": {10, 40}, "root": {0, 45}, "rec": {5, 5}}
	for _, h := range rep.Funcs {
		if w := want[h.Name]; h.Flat != w[0] || h.Cum != w[1] {
			t.Errorf("%s: flat %d cum %d, want %v", h.Name, h.Flat, h.Cum, w)
		}
	}
	if rep.Total != 45 || rep.Funcs[0].Name != "leaf" {
		t.Errorf("total %d, first %s; want 45 and leaf (by flat)", rep.Total, rep.Funcs[0].Name)
	}
	rep.Sort(true)
	if rep.Funcs[0].Name != "root" {
		t.Errorf("by cum, first is %s, want root", rep.Funcs[0].Name)
	}
}

func TestParseTypes(t *testing.T) {
	all, err := ParseTypes("all")
	if err != nil || !slices.Equal(all, Types) {
		t.Errorf("all = %v, %v; want %v", all, err, Types)
	}
	got, err := ParseTypes(" Scalability,queue,queue ")
	if err != nil || !slices.Equal(got, []string{TypeQueue, TypeScalability}) {
		t.Errorf("scalability,queue = %v, %v; want both once, in run order", got, err)
	}
	for _, bad := range []string{"throughput", "queue,nope", "", " , "} {
		_, err := ParseTypes(bad)
		if err == nil {
			t.Errorf("ParseTypes(%q): no error", bad)
			continue
		}
		for _, want := range append(slices.Clone(Types), "all") {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseTypes(%q): %v; want the valid types listed", bad, err)
				break
			}
		}
		if name := strings.Trim(strings.TrimPrefix(bad, "queue,"), " ,"); name != "" && !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("ParseTypes(%q): %v; want the bad type named", bad, err)
		}
	}
}

func TestAPIBase(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":                  "http://127.0.0.1:8080",
		"http://api.local:8080/":          "http://api.local:8080",
		"https://api.example/api/v1":      "https://api.example",
		"http://h:1/gonomaly/api/v1/?x=1": "http://h:1/gonomaly",
	} {
		if got, err := APIBase(in); err != nil || got != want {
			t.Errorf("APIBase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := APIBase("ftp://x"); err == nil {
		t.Error("APIBase(ftp://x): no error")
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -25000: "-25,000"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
	if got := perSeriesText(-61); got != "≈ 0" {
		t.Errorf("perSeriesText(-61) = %q", got)
	}
	if got := bytesText(4.9 * 1024); got != "4.9 KiB" {
		t.Errorf("bytesText = %q", got)
	}
	for in, want := range map[string]string{
		"github.com/twmb/franz-go/pkg/kgo.ensureLen[go.shape.[]github.com/x.Record,go.shape.struct { Key []uint8 }]": "kgo.ensureLen[…]",
		"github.com/gonomaly/gonomaly/detectors.(*rrcfForest).insert":                                                "detectors.(*rrcfForest).insert",
		"runtime.mallocgc": "runtime.mallocgc",
	} {
		if got := shortFunc(in); got != want {
			t.Errorf("shortFunc(%q) = %q, want %q", in, got, want)
		}
	}
	var b bytes.Buffer
	tb := newTable("a", "b")
	tb.add("x|y", "1")
	tb.write(&b)
	if !strings.Contains(b.String(), "| a | b |\n|---|---|\n| x\\|y | 1 |") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestTicks(t *testing.T) {
	var got []string
	for _, tk := range ticks125(7, 60) {
		got = append(got, tk.Label)
	}
	if want := []string{"10", "20", "50"}; !slices.Equal(got, want) {
		t.Errorf("ticks125(7, 60) = %v, want %v", got, want)
	}
	for x, want := range map[float64]string{1: "1", 8: "8", 3000: "3k", 1e6: "1M", 1500: "1500"} {
		if got := tickLabel(x); got != want {
			t.Errorf("tickLabel(%v) = %q, want %q", x, got, want)
		}
	}
}
