package perf

import (
	"context"
	"fmt"
	"time"
)

// runScalability runs the pipeline with 1, 2, 4 and 8 members in every stage's group
// and as many partitions, so that each member owns one partition of each topic.
func runScalability(ctx context.Context, r *run) error {
	records, series := int64(500_000), 1000
	if r.cfg.Short {
		records, series = 8_000, 200
	}
	counts := []int{1, 2, 4, 8}
	var xs, ys, ideal []float64
	t := newTable("consumers per stage", "partitions", "records/s", "vs 1 consumer", "efficiency", "CPU per record", "p50 latency", "p99 latency", "groups ready after")
	var base float64
	for _, n := range counts {
		r.progress("%s per stage, %s", plural(n, "consumer"), plural(n, "partition"))
		res, err := runPipeline(ctx, pipeConfig{Records: records, Series: series, Partitions: int32(n), Instances: n, Mode: ModeGoroutines, Logger: r.log})
		if err != nil {
			return fmt.Errorf("%s: %w", plural(n, "consumer"), err)
		}
		if base == 0 {
			base = res.RecordsPerSec
		}
		rel := res.RecordsPerSec / base
		t.add(fmt.Sprint(n), fmt.Sprint(n), num(res.RecordsPerSec), fmt.Sprintf("%.2f×", rel), fmt.Sprintf("%.0f%%", 100*rel/float64(n)), usText(res.CPUPerRecordUs),
			ms(res.Latency.P50), ms(res.Latency.P99), res.Ready.Round(10*time.Millisecond).String())
		xs, ys, ideal = append(xs, float64(n)), append(ys, res.RecordsPerSec), append(ideal, base*float64(n))
		r.sec.Summary = append(r.sec.Summary, Row{TypeScalability, "records/s, " + plural(n, "consumer") + " per stage", fmt.Sprintf("%s (%.2f× of 1)", num(res.RecordsPerSec), rel)})
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "The pipeline (default spec) on a fresh embedded broker per run, %s records of %d series produced as fast as the "+
		"producer goes; N consumers per stage are N instances of the three stages (`app.RunStages`, each its own Kafka clients and "+
		"group members) in this process, on N partitions. Efficiency is the speed-up over one consumer divided by N. Latency is "+
		"from produce to the result read back, under the backlog an uncapped producer builds, so it measures the backlog more "+
		"than the pipeline. Everything (broker, producer, stages, results reader) shares this machine's %d cores.\n",
		num(float64(records)), series, r.cfgCores())
	t.write(b)
	r.plot("scalability_throughput.png", func(path string) error {
		return linePlot(path, "Pipeline throughput by consumers per stage (partitions = consumers)", "consumers per stage (log scale)", "records/s",
			[]xySeries{{Name: "measured", X: xs, Y: ys}, {Name: "linear from 1 consumer", X: xs, Y: ideal, Dashed: true}}, true, false)
	})
	return nil
}
