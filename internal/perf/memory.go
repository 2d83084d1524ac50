package perf

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/schemas"
)

// memPerSeries records fed to each series before its state is measured: the first
// creates it, the second shows whether learning grows it.
const memPerSeries = 2

// heapInUse is the live heap after two collections (the second frees what the first's
// finalizers released).
func heapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

// stateSize is what a piece of state costs: fixed (created with its first series) and
// per further series.
type stateSize struct {
	Name, Scope      string
	Fixed, PerSeries float64
	Series           int
	NsPerRecord      float64
}

// measureState builds state with create and feeds n series (memPerSeries records
// each) through feed(series index, record index); the heap before, after the first
// series and after all of them give its fixed and per-series size.
func measureState(n int, create func() error, feed func(series, k int) error) (fixed, perSeries, nsPerRecord float64, err error) {
	before := heapInUse()
	if err := create(); err != nil {
		return 0, 0, 0, err
	}
	for k := range memPerSeries {
		if err := feed(0, k); err != nil {
			return 0, 0, 0, err
		}
	}
	first := heapInUse()
	start := time.Now()
	for i := 1; i < n; i++ {
		for k := range memPerSeries {
			if err := feed(i, k); err != nil {
				return 0, 0, 0, err
			}
		}
	}
	elapsed := time.Since(start)
	all := heapInUse()
	fixed = first - before
	if n > 1 {
		perSeries = (all - first) / float64(n-1)
		nsPerRecord = float64(elapsed.Nanoseconds()) / float64((n-1)*memPerSeries)
	}
	return fixed, perSeries, nsPerRecord, nil
}

func seriesName(i int) string { return "series-" + strconv.Itoa(1_000_000 + i)[1:] }

// memValue is a series' k-th value: around a level of its own, so that scalers and
// detectors see ordinary data.
func memValue(i, k int) float64 {
	return float64(i%97) + 0.1*float64(k) + 0.01*float64((i*31+k*7)%13)
}

func runMemory(ctx context.Context, r *run) error {
	nDet, nStage := 50_000, 5_000
	checkpoints := []int{1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000}
	if r.cfg.Short {
		nDet, nStage = 2_000, 300
		checkpoints = []int{1_000, 2_000, 5_000, 10_000}
	}
	b := &r.sec.Body
	var sizes []stateSize
	tsBase := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for _, info := range detectors.List() {
		if info.NewStreaming == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.progress("detector %s, %s series", info.Name, num(float64(nDet)))
		params, err := info.Resolve(nil)
		if err != nil {
			return err
		}
		var det detectors.Streaming
		x := make([]float64, 1)
		fixed, per, ns, err := measureState(nDet,
			func() (err error) { det, err = info.NewStreaming(params, 1); return err },
			func(i, k int) error {
				x[0] = memValue(i, k)
				if ta, ok := det.(detectors.TimeAware); ok {
					ta.ScoreLearnAt(seriesName(i), tsBase+int64(k)*60_000, x, nil)
				} else {
					det.ScoreLearn(seriesName(i), x, nil)
				}
				return nil
			})
		if err != nil {
			return fmt.Errorf("%s: %w", info.Name, err)
		}
		runtime.KeepAlive(det)
		sizes = append(sizes, stateSize{Name: info.Name, Scope: scopeOf(per, fixed), Fixed: fixed, PerSeries: per, Series: nDet, NsPerRecord: ns})
	}

	stageSizes, err := measureStages(ctx, r, nStage)
	if err != nil {
		return err
	}

	fmt.Fprintf(b, "Each streaming detector, with its default parameters and one feature, was fed %d records for each of N series "+
		"(the first creates a series' state, the second shows whether learning grows it); the live heap (after GC) before, "+
		"after the first series and after all N gives its fixed cost and its cost per further series. The stages were measured "+
		"the same way with the default spec, each on its own input as the previous stage writes it, one partition.\n",
		memPerSeries)
	t := newTable("state", "scope (from the figures)", "fixed", "per series", "N series", "time per record (a series' first two)")
	for _, s := range append(sizes, stageSizes...) {
		t.add(s.Name, s.Scope, bytesText(s.Fixed), perSeriesText(s.PerSeries), num(float64(s.Series)), perUnit(s.NsPerRecord, "record"))
	}
	t.write(b)
	labels := make([]string, 0, len(sizes)+len(stageSizes))
	values := make([]float64, 0, len(sizes)+len(stageSizes))
	for _, s := range append(sizes, stageSizes...) {
		labels, values = append(labels, strings.Replace(s.Name, " stage", "\nstage", 1)), append(values, max(s.PerSeries, 0)/1024)
		r.sec.Summary = append(r.sec.Summary, Row{TypeMemory, "bytes per series: " + s.Name, perSeriesText(s.PerSeries)})
	}
	r.plot("memory_bytes_per_series.png", func(path string) error {
		return barPlot(path, "State per series (1 feature, default parameters)", "KiB per series", labels, values)
	})

	// RSS as series grow, in the detect stage (the preprocess stage's 2,000-value windows
	// would need tens of GB at a million series: see its row above).
	r.progress("RSS of the detect stage as series grow to %s", num(float64(checkpoints[len(checkpoints)-1])))
	points, err := rssGrowth(ctx, checkpoints)
	if err != nil {
		return err
	}
	fmt.Fprintf(b, "\n### RSS as series grow\nOne detect-stage partition (default spec: %s), fed %d records for each new series; at each "+
		"point the heap is collected and returned to the OS (`debug.FreeOSMemory`) before VmRSS is read from /proc/self/status, "+
		"so RSS counts the live state plus the process's baseline (code, runtime, whatever earlier test types left mapped).\n",
		detectorNames(spec.Default()), memPerSeries)
	t = newTable("series", "VmRSS", "Go heap in use", "RSS growth per series since the previous point")
	xs, rss, heap := make([]float64, len(points)), make([]float64, len(points)), make([]float64, len(points))
	for i, p := range points {
		growth := "-"
		if i > 0 {
			growth = bytesText((p.RSS - points[i-1].RSS) * (1 << 20) / float64(p.Series-points[i-1].Series))
		}
		t.add(num(float64(p.Series)), fmt.Sprintf("%.0f MiB", p.RSS), fmt.Sprintf("%.0f MiB", p.Heap), growth)
		xs[i], rss[i], heap[i] = float64(p.Series), p.RSS, p.Heap
	}
	t.write(b)
	last := points[len(points)-1]
	r.sec.Summary = append(r.sec.Summary, Row{TypeMemory, fmt.Sprintf("detect-stage RSS at %s series", num(float64(last.Series))), fmt.Sprintf("%.0f MiB (heap %.0f MiB)", last.RSS, last.Heap)})
	r.plot("memory_rss_vs_series.png", func(path string) error {
		return linePlot(path, "Memory of one detect-stage partition as series grow", "series (log scale)", "MiB (log scale)",
			[]xySeries{{Name: "VmRSS", X: xs, Y: rss}, {Name: "Go heap in use", X: xs, Y: heap}}, true, true)
	})
	return nil
}

// perSeriesText formats a per-series size; below 32 bytes the heap's noise (a few
// hundred bytes over N series) dominates, so it reads as nothing.
func perSeriesText(v float64) string {
	if v < 32 {
		return "≈ 0"
	}
	return bytesText(v)
}

// scopeOf tells series-scoped state (it grows with series) from partition-scoped
// state (fixed, shared by the partition's series) by the measured sizes.
func scopeOf(perSeries, fixed float64) string {
	if perSeries > 64 {
		return "per series"
	}
	if fixed > 0 {
		return "per partition"
	}
	return "none measurable"
}

func detectorNames(s *spec.Spec) string {
	var names []string
	for _, d := range s.Detectors {
		names = append(names, d.Name)
	}
	return joinOr(names, ", ", "-")
}

// stageInputs runs the three stages of the default spec in memory over n series and
// keeps what each stage reads: records, then features, then scores.
func stageInputs(s *spec.Spec, topics processors.Topics, n int) (map[string][]*kgo.Record, error) {
	procs := map[string]processors.Processor{}
	for _, name := range app.StageNames {
		st, err := app.BuildStage(name, s, topics, nil)
		if err != nil {
			return nil, err
		}
		if procs[name], err = st.NewProcessor("", 0); err != nil {
			return nil, err
		}
	}
	inputs := map[string][]*kgo.Record{}
	tsBase := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var rec schemas.Record
	rec.Values = map[string]float64{}
	for i := range n {
		for k := range memPerSeries {
			rec.Series = seriesName(i)
			rec.TS = tsBase.Add(time.Duration(k) * time.Minute).UnixMilli()
			rec.Values["value"] = memValue(i, k)
			in := &kgo.Record{Topic: topics.Records, Key: []byte(rec.Series), Value: schemas.AppendRecordJSON(nil, &rec), Timestamp: tsBase}
			for _, name := range app.StageNames {
				inputs[name] = append(inputs[name], in)
				var out *kgo.Record
				if err := procs[name].Process(in, func(o *kgo.Record) {
					if o.Topic != topics.Anomalies {
						out = o
					}
				}); err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				if out == nil {
					break
				}
				out.Value = slices.Clone(out.Value) // processors may reuse their buffers
				in = out
			}
		}
	}
	return inputs, nil
}

func measureStages(ctx context.Context, r *run, n int) ([]stateSize, error) {
	s := spec.Default()
	topics := processors.PipelineTopics("perf.", s)
	r.progress("stages' state, %s series", num(float64(n)))
	inputs, err := stageInputs(s, topics, n)
	if err != nil {
		return nil, err
	}
	var out []stateSize
	for _, name := range app.StageNames {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		recs := inputs[name]
		if len(recs) != n*memPerSeries {
			return nil, fmt.Errorf("stage %s got %d inputs for %d series", name, len(recs), n)
		}
		st, err := app.BuildStage(name, s, topics, nil)
		if err != nil {
			return nil, err
		}
		var p processors.Processor
		fixed, per, ns, err := measureState(n,
			func() (err error) { p, err = st.NewProcessor("", 0); return err },
			func(i, k int) error { return p.Process(recs[i*memPerSeries+k], func(*kgo.Record) {}) })
		if err != nil {
			return nil, fmt.Errorf("stage %s: %w", name, err)
		}
		runtime.KeepAlive(p)
		out = append(out, stateSize{Name: name + " stage", Scope: scopeOf(per, fixed), Fixed: fixed, PerSeries: per, Series: n, NsPerRecord: ns})
	}
	return out, nil
}

type rssPoint struct {
	Series    int
	RSS, Heap float64 // MiB
}

// rssGrowth feeds one detect-stage processor new series up to each checkpoint and reads
// RSS and heap at each.
func rssGrowth(ctx context.Context, checkpoints []int) ([]rssPoint, error) {
	s := spec.Default()
	st, err := app.BuildStage("detect", s, processors.PipelineTopics("perf.", s), nil)
	if err != nil {
		return nil, err
	}
	p, err := st.NewProcessor("", 0)
	if err != nil {
		return nil, err
	}
	tsBase := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	f := schemas.Features{Names: []string{"value"}, Scaled: make([]float64, 1), Raw: make([]float64, 1), Pipeline: s.Name}
	rec := &kgo.Record{}
	var buf []byte
	rng := rand.New(rand.NewPCG(3, 3))
	discard := func(*kgo.Record) {}
	var out []rssPoint
	next := 0
	for _, cp := range checkpoints {
		for ; next < cp; next++ {
			if next%10_000 == 0 && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			f.Series = seriesName(next)
			for k := range memPerSeries {
				f.TS = tsBase + int64(k)*60_000
				f.Raw[0] = memValue(next, k)
				f.Scaled[0] = rng.NormFloat64()
				buf = schemas.AppendFeatures(buf[:0], &f)
				rec.Value = buf
				if err := p.Process(rec, discard); err != nil {
					return nil, err
				}
			}
		}
		debug.FreeOSMemory()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		rss := RSSMB()
		if rss == 0 {
			return nil, errors.New("VmRSS is not readable from /proc/self/status on this system")
		}
		out = append(out, rssPoint{Series: cp, RSS: rss, Heap: float64(m.HeapAlloc) / (1 << 20)})
	}
	runtime.KeepAlive(p)
	return out, nil
}
