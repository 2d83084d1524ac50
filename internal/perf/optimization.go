package perf

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/schemas"
)

// benchResult is one side of a pair, per unit of work (a point, a record, a row).
type benchResult struct {
	Name        string
	NsPerUnit   float64
	AllocsPerOp int64
	BytesPerOp  int64
	N           int
}

// microBench runs fn with testing.Benchmark; units is how many units one op is.
func microBench(name string, units int, fn func(b *testing.B)) benchResult {
	res := testing.Benchmark(fn)
	out := benchResult{Name: name, AllocsPerOp: res.AllocsPerOp(), BytesPerOp: res.AllocedBytesPerOp(), N: res.N}
	if res.N > 0 {
		out.NsPerUnit = float64(res.T.Nanoseconds()) / float64(res.N) / float64(units)
	}
	return out
}

var benchTimeMu sync.Mutex

// withBenchTime runs fn with testing.Benchmark's run time set to d: testing.Benchmark
// reads it from the -test.benchtime flag, which testing.Init registers outside `go
// test` (and which a test binary already has).
func withBenchTime(d time.Duration, fn func()) {
	benchTimeMu.Lock()
	defer benchTimeMu.Unlock()
	testing.Init()
	f := flag.Lookup("test.benchtime")
	if f == nil {
		fn()
		return
	}
	old := f.Value.String()
	f.Value.Set(d.String())
	defer f.Value.Set(old)
	fn()
}

// pair is an optimisation: the code's way (after) and the alternative (before).
type pair struct {
	Name, Where, Unit string
	After, Before     benchResult
	Extra             []benchResult // other variants, for context
}

func (p pair) speedup() float64 { return p.Before.NsPerUnit / p.After.NsPerUnit }

// benchSpec is one benchmark: units is how many units of work one op is.
type benchSpec struct {
	name  string
	units int
	fn    func(b *testing.B)
}

// pairSpec builds a pair's benchmarks: after, before, then any variants for context.
// setup runs once per round, so that state that grows (a broker's log) starts afresh.
type pairSpec struct {
	Name, Where, Unit string
	setup             func() (specs []benchSpec, teardown func(), err error)
}

// run runs every benchmark of the pair rounds times, in turn, and keeps each one's
// fastest round.
func (ps pairSpec) run(rounds int) (pair, error) {
	var best []benchResult
	for range rounds {
		specs, teardown, err := ps.setup()
		if err != nil {
			return pair{}, err
		}
		for i, sp := range specs {
			res := microBench(sp.name, sp.units, sp.fn)
			if res.N == 0 {
				teardown()
				return pair{}, fmt.Errorf("%s failed", sp.name)
			}
			if i >= len(best) {
				best = append(best, res)
			} else if res.NsPerUnit < best[i].NsPerUnit {
				best[i] = res
			}
		}
		teardown()
	}
	if len(best) < 2 {
		return pair{}, fmt.Errorf("a pair needs two benchmarks, got %d", len(best))
	}
	return pair{Name: ps.Name, Where: ps.Where, Unit: ps.Unit, After: best[0], Before: best[1], Extra: best[2:]}, nil
}

// Sinks keep the compiler from dropping the benchmarked work.
var (
	sinkFloat    float64
	sinkFeatures *schemas.Features
)

func runOptimization(ctx context.Context, r *run) error {
	benchTime, rounds := time.Second, 3
	if r.cfg.Short {
		benchTime, rounds = 20*time.Millisecond, 1
	}
	var pairs []pair
	var err error
	withBenchTime(benchTime, func() {
		for _, ps := range []pairSpec{hstPair(), decodePair(), producePair(ctx), scoringPair()} {
			if err = ctx.Err(); err != nil {
				return
			}
			r.progress("%s, %d rounds", ps.Name, rounds)
			var p pair
			if p, err = ps.run(rounds); err != nil {
				err = fmt.Errorf("%s: %w", ps.Name, err)
				return
			}
			pairs = append(pairs, p)
		}
	})
	if err != nil {
		return err
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "Each figure is the fastest of %d rounds of `testing.Benchmark` (%s each), the two sides alternating, so that "+
		"another job's burst on the shared machine slows one round rather than one side; the speed-up is before ÷ after. "+
		"The code uses no `sync.Pool`: its buffer optimisation is reuse per partition (decode targets and scratch owned by the "+
		"partition's goroutine), measured against fresh buffers and, for context, against a `sync.Pool`.\n", rounds, benchTime)
	t := newTable("optimisation", "after: what the code does", "before: the alternative", "after", "before", "speed-up", "allocs/op after → before")
	for _, p := range pairs {
		t.add(p.Name, p.After.Name, p.Before.Name, perUnit(p.After.NsPerUnit, p.Unit), perUnit(p.Before.NsPerUnit, p.Unit),
			fmt.Sprintf("%.2f×", p.speedup()), fmt.Sprintf("%d → %d", p.After.AllocsPerOp, p.Before.AllocsPerOp))
	}
	t.write(b)
	fmt.Fprintln(b, "Where each is in the code, and other variants measured:")
	fmt.Fprintln(b)
	for _, p := range pairs {
		fmt.Fprintf(b, "- **%s**: %s", p.Name, p.Where)
		for _, e := range p.Extra {
			fmt.Fprintf(b, " %s: %s (%d allocs/op).", e.Name, perUnit(e.NsPerUnit, p.Unit), e.AllocsPerOp)
		}
		fmt.Fprintln(b)
	}
	labels := make([]string, len(pairs))
	ups := make([]float64, len(pairs))
	for i, p := range pairs {
		labels[i], ups[i] = p.Short(), p.speedup()
		r.sec.Summary = append(r.sec.Summary, Row{TypeOptimization, "speed-up: " + p.Name,
			fmt.Sprintf("%.2f× (%s vs %s)", p.speedup(), perUnit(p.After.NsPerUnit, p.Unit), perUnit(p.Before.NsPerUnit, p.Unit))})
	}
	r.plot("optimization_speedups.png", func(path string) error {
		return barPlot(path, "Speed-up of each optimisation over its alternative (before ÷ after)", "speed-up (×)", labels, ups)
	})
	return nil
}

// Short is the pair's label in plots.
func (p pair) Short() string {
	switch p.Unit {
	case "point":
		return "float32 nodes"
	case "record (decode)":
		return "reused buffers"
	case "record":
		return "batched produce"
	}
	return "vectorised scoring"
}

func perUnit(ns float64, unit string) string {
	if unit == "record (decode)" {
		unit = "record"
	}
	switch {
	case ns != ns:
		return "-"
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms/%s", ns/1e6, unit)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs/%s", ns/1e3, unit)
	}
	return fmt.Sprintf("%.0f ns/%s", ns, unit)
}

// hstNodeOf is the Half-Space Trees node with splits of type T: float32 makes it 16
// bytes (four to a cache line), float64 24.
type hstNodeOf[T float32 | float64] struct {
	split T
	r, l  uint32
	dim   uint16
	epoch uint16
}

// hstKernel replicates the hst detector's learning walk (detectors/hst.go: flat
// level-by-level node array, lazy window swap, branch-free descent) with the split type
// as a parameter, so that only the storage width differs between the two sides.
type hstKernel[T float32 | float64] struct {
	trees, height int
	nodes         []hstNodeOf[T]
	xs            []T
	locs          []uint32
	trail         []uint64
	lo, hi        float64
	epoch         uint16
}

func newHSTKernel[T float32 | float64](trees, height, d int, limit float64, seed uint64) *hstKernel[T] {
	k := &hstKernel[T]{trees: trees, height: height, nodes: make([]hstNodeOf[T], trees*(1<<(height+1)-1)),
		xs: make([]T, d), locs: make([]uint32, trees), trail: make([]uint64, trees*(height+1)), lo: -limit, hi: limit, epoch: 1}
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	blo, bhi := make([]float64, d), make([]float64, d)
	width := k.hi - k.lo
	for t := range trees {
		for q := range d {
			s := rng.Float64() * width
			blo[q], bhi[q] = k.lo-s, k.hi+width-s
		}
		k.build(rng, 0, t, d, blo, bhi)
	}
	return k
}

func (k *hstKernel[T]) level(d int) []hstNodeOf[T] {
	return k.nodes[k.trees*(1<<d-1) : k.trees*(1<<(d+1)-1)]
}

func (k *hstKernel[T]) build(rng *rand.Rand, depth, q, d int, blo, bhi []float64) {
	if depth == k.height {
		return
	}
	dim := rng.IntN(d)
	lo, hi := blo[dim], bhi[dim]
	mid := lo + (hi-lo)/2
	n := &k.level(depth)[q]
	n.dim, n.split = uint16(dim), T(mid)
	bhi[dim] = mid
	k.build(rng, depth+1, 2*q, d, blo, bhi)
	bhi[dim], blo[dim] = hi, mid
	k.build(rng, depth+1, 2*q+1, d, blo, bhi)
	blo[dim] = lo
}

func (k *hstKernel[T]) learn(x []float64) uint64 {
	for q, v := range x {
		k.xs[q] = T(min(max(v, k.lo), k.hi))
	}
	epoch, prev := k.epoch, k.epoch-1
	xs, locs, trees := k.xs, k.locs, k.trees
	for t := range locs {
		locs[t] = uint32(t)
	}
	for depth := 0; depth <= k.height; depth++ {
		level := k.level(depth)
		trail := k.trail[depth*trees : (depth+1)*trees]
		for t := range trail {
			q := locs[t]
			n := &level[q]
			if n.epoch != epoch {
				r := n.l
				if n.epoch != prev {
					r = 0
				}
				n.r, n.l, n.epoch = r, 0, epoch
			}
			n.l++
			trail[t] = uint64(n.r)<<16 | uint64(n.dim)
			var right uint32
			if xs[n.dim] >= n.split {
				right = 1
			}
			locs[t] = 2*q + right
		}
	}
	return k.trail[len(k.trail)-1]
}

// points is a fixed stream of d-dimensional standard normal points, cycled through.
func points(n, d int) [][]float64 {
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, d)
		for j := range out[i] {
			out[i][j] = rng.NormFloat64()
		}
	}
	return out
}

func hstPair() pairSpec {
	// The detector's defaults: 25 trees of height 15, work space [-4, 4]; 4 features.
	const trees, height, d = 25, 15, 4
	n32, n64 := unsafe.Sizeof(hstNodeOf[float32]{}), unsafe.Sizeof(hstNodeOf[float64]{})
	nodes := float64(trees * (1<<(height+1) - 1))
	pts := points(4096, d)
	run := func(learn func([]float64) uint64) func(b *testing.B) {
		return func(b *testing.B) {
			var s uint64
			for i := range b.N {
				s += learn(pts[i&4095])
			}
			sinkFloat = float64(s)
		}
	}
	return pairSpec{
		Name: "float32 vs float64 feature storage",
		Where: fmt.Sprintf("`detectors/hst.go` stores node splits and the clipped point as float32, so a node is %d bytes instead of %d "+
			"(a forest of %d trees of height %d: %.0f MiB instead of %.0f MiB per partition and feature count). Both sides run a "+
			"replica of its learning walk over 4 features that differs only in the split type.",
			n32, n64, trees, height, nodes*float64(n32)/(1<<20), nodes*float64(n64)/(1<<20)),
		Unit: "point",
		setup: func() ([]benchSpec, func(), error) {
			f32 := newHSTKernel[float32](trees, height, d, 4, 1)
			f64 := newHSTKernel[float64](trees, height, d, 4, 1)
			hst, err := detectors.NewHalfSpaceTrees(detectors.HSTConfig{Trees: trees, Height: height, Window: 250, Limit: 4}, 1)
			if err != nil {
				return nil, nil, err
			}
			return []benchSpec{
				{fmt.Sprintf("float32 nodes (%d B)", n32), 1, run(f32.learn)},
				{fmt.Sprintf("float64 nodes (%d B)", n64), 1, run(f64.learn)},
				{"The hst detector's own ScoreLearn (learn and score)", 1, run(func(x []float64) uint64 { return uint64(hst.ScoreLearn("", x, nil)) })},
			}, func() {}, nil
		},
	}
}

func decodePair() pairSpec {
	f := schemas.Features{
		Series: "series-0042", TS: 1_790_000_000_000, Names: []string{"cpu", "mem", "disk", "net"},
		Scaled: []float64{0.1, -0.4, 1.3, 0.02}, Raw: []float64{0.93, 0.41, 0.77, 12.5},
		Tags: map[string]string{"dc": "eu-1"}, Source: schemas.Source{Topic: "gonomaly.records", Partition: 3, Offset: 123456},
		Pipeline: "default",
	}
	value := schemas.AppendFeatures(nil, &f)
	return pairSpec{
		Name: "reused vs fresh buffers",
		Where: "the detect stage decodes every Features record into one `schemas.Features` per partition " +
			"(`processors/detect.go`; `schemas.DecodeFeatures` reuses its slices, map and unchanged strings), and keeps its " +
			"contribution scratch per partition too. Measured on a 4-feature record.",
		Unit: "record (decode)",
		setup: func() ([]benchSpec, func(), error) {
			var reused schemas.Features
			pool := sync.Pool{New: func() any { return new(schemas.Features) }}
			return []benchSpec{
				{"one decode target per partition, reused", 1, func(b *testing.B) {
					for range b.N {
						if err := schemas.DecodeFeatures(value, &reused); err != nil {
							b.Fatal(err)
						}
					}
					sinkFeatures = &reused
				}},
				{"a fresh decode target per record", 1, func(b *testing.B) {
					for range b.N {
						t := new(schemas.Features)
						if err := schemas.DecodeFeatures(value, t); err != nil {
							b.Fatal(err)
						}
						sinkFeatures = t
					}
				}},
				{"A sync.Pool of decode targets", 1, func(b *testing.B) {
					for range b.N {
						t := pool.Get().(*schemas.Features)
						if err := schemas.DecodeFeatures(value, t); err != nil {
							b.Fatal(err)
						}
						sinkFeatures = t
						pool.Put(t)
					}
				}},
			}, func() {}, nil
		},
	}
}

func producePair(ctx context.Context) pairSpec {
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte("series-" + strconv.Itoa(i))
	}
	// A typical input record: the JSON of the design's example, about 100 bytes.
	value := []byte(`{"series":"host-17","ts":"2026-11-27T07:00:00Z","values":{"cpu":0.93,"mem":0.41},"tags":{"dc":"eu-1"}}`)
	return pairSpec{
		Name: "batched vs per-record produce",
		Where: "the runner (`processors/runner.go`) and the publisher (`producers/publisher.go`) hand every output to " +
			"the client asynchronously and wait for acks per batch, so the client packs many records per partition into " +
			"one request. Against the embedded broker over loopback (a fresh one per round: it keeps every record in " +
			"memory), 8 partitions, keys spread over 1,000 series.",
		Unit: "record",
		// A fresh broker per round: it keeps every record produced in memory.
		setup: func() ([]benchSpec, func(), error) {
			b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 8})
			if err != nil {
				return nil, nil, err
			}
			const topic = "perf-produce"
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic))
			if err != nil {
				b.Close()
				return nil, nil, err
			}
			teardown := func() { cl.Close(); b.Close() }
			if _, err := kadm.NewClient(cl).CreateTopic(ctx, 8, -1, nil, topic); err != nil {
				teardown()
				return nil, nil, fmt.Errorf("create %s: %w", topic, err)
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: keys[0], Value: value}).FirstErr(); err != nil {
				teardown()
				return nil, nil, fmt.Errorf("warm-up produce: %w", err)
			}
			var failed atomic.Pointer[error]
			promise := func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
			return []benchSpec{
				{"async Produce, acks awaited per batch (Flush)", 1, func(bb *testing.B) {
					for i := range bb.N {
						cl.Produce(ctx, &kgo.Record{Key: keys[i%len(keys)], Value: value}, promise)
					}
					if err := cl.Flush(ctx); err != nil {
						bb.Fatal(err)
					}
					if err := failed.Load(); err != nil {
						bb.Fatal(*err)
					}
				}},
				{"ProduceSync, one record per request", 1, func(bb *testing.B) {
					for i := range bb.N {
						if err := cl.ProduceSync(ctx, &kgo.Record{Key: keys[i%len(keys)], Value: value}).FirstErr(); err != nil {
							bb.Fatal(err)
						}
					}
				}},
			}, teardown, nil
		},
	}
}

func scoringPair() pairSpec {
	const rows, d = 4096, 4
	return pairSpec{
		Name: "vectorised vs scalar scoring",
		Where: "`detectors/iforest.go` scores a matrix in blocks of rows, each tree scoring the whole block before the " +
			"next, so the tree stays in L1 and the descents of different rows overlap; the alternative scores one row at a " +
			"time (a 1-row matrix per call, as the detect stage does for a trained model per record). 100 trees fitted on " +
			"4,096 rows of 4 features, scoring those rows, one goroutine.",
		Unit: "row",
		setup: func() ([]benchSpec, func(), error) {
			info, err := detectors.Lookup("iforest")
			if err != nil {
				return nil, nil, err
			}
			params, err := info.Resolve(detectors.Params{"trees": 100})
			if err != nil {
				return nil, nil, err
			}
			det, err := info.NewBatch(params, 1)
			if err != nil {
				return nil, nil, err
			}
			X := detectors.NewMatrix(rows, d)
			for i, p := range points(rows, d) {
				copy(X.Row(i), p)
			}
			if err := det.Fit(X); err != nil {
				return nil, nil, err
			}
			par, _ := det.(detectors.Parallel)
			setWorkers := func(n int) {
				if par != nil {
					par.SetWorkers(n)
				}
			}
			out := make([]float64, rows)
			whole := func(workers int) func(b *testing.B) {
				return func(b *testing.B) {
					setWorkers(workers)
					for range b.N {
						if err := det.Score(X, out); err != nil {
							b.Fatal(err)
						}
					}
					if math.IsNaN(out[0]) {
						b.Fatal("iforest scored NaN")
					}
					sinkFloat = out[0]
				}
			}
			specs := []benchSpec{
				{"Score on the whole matrix", rows, whole(1)},
				{"Score row by row", rows, func(b *testing.B) {
					setWorkers(1)
					for range b.N {
						for i := range rows {
							if err := det.Score(detectors.Matrix{Rows: 1, Cols: d, Data: X.Row(i)}, out[i:i+1]); err != nil {
								b.Fatal(err)
							}
						}
					}
					sinkFloat = out[0]
				}},
			}
			if par != nil && runtime.NumCPU() > 1 {
				specs = append(specs, benchSpec{fmt.Sprintf("Score on the whole matrix with SetWorkers(%d)", runtime.NumCPU()), rows, whole(runtime.NumCPU())})
			}
			return specs, func() {}, nil
		},
	}
}
