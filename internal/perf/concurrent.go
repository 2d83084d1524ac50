package perf

import (
	"context"
	"fmt"
	"runtime"
)

// concurrentProcesses is how many processes (or in-process instances) the process model
// runs: one per core, what a deployment on this machine would use.
func concurrentProcesses() int { return max(2, runtime.NumCPU()) }

func (r *run) cfgCores() int { return runtime.NumCPU() }

// runConcurrent compares the stages' concurrency models on the same load and 8
// partitions: the runner's goroutine per partition, one loop per stage, and several
// processes in each stage's group.
func runConcurrent(ctx context.Context, r *run) error {
	records, series := int64(500_000), 1000
	if r.cfg.Short {
		records, series = 8_000, 200
	}
	nProc := concurrentProcesses()
	procMode, procLabel := ModeProcesses, fmt.Sprintf("%d processes", nProc)
	procNote := fmt.Sprintf("child processes (`%s process`, all three stages each)", r.cfg.Executable)
	if r.cfg.Executable == "" {
		procMode, procLabel = ModeClients, fmt.Sprintf("%d in-process instances", nProc)
		procNote = "instances of the three stages in this process, each with its own Kafka clients and group members, standing in " +
			"for processes (no gonomaly executable to re-run: a test binary)"
	}
	models := []struct {
		label, mode string
		instances   int
	}{
		{"goroutine per partition (the runner)", ModeGoroutines, 1},
		{"single loop per stage", ModeSingleLoop, 1},
		{procLabel, procMode, nProc},
	}
	t := newTable("model", "records/s", "vs goroutines", "CPU per record", "p50 latency", "p99 latency")
	var labels []string
	var values []float64
	var base float64
	for _, m := range models {
		r.progress("%s", m.label)
		res, err := runPipeline(ctx, pipeConfig{Records: records, Series: series, Partitions: 8, Instances: m.instances,
			Mode: m.mode, Executable: r.cfg.Executable, Logger: r.log})
		if err != nil {
			return fmt.Errorf("%s: %w", m.label, err)
		}
		if base == 0 {
			base = res.RecordsPerSec
		}
		t.add(m.label, num(res.RecordsPerSec), fmt.Sprintf("%.2f×", res.RecordsPerSec/base), usText(res.CPUPerRecordUs), ms(res.Latency.P50), ms(res.Latency.P99))
		labels, values = append(labels, m.label), append(values, res.RecordsPerSec)
		r.sec.Summary = append(r.sec.Summary, Row{TypeConcurrent, "records/s, " + m.label, fmt.Sprintf("%s (%s CPU per record)", num(res.RecordsPerSec), usText(res.CPUPerRecordUs))})
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "The same load (%s records of %d series, default spec, 8 partitions, a fresh embedded broker per run, uncapped "+
		"producer) through three ways of running the stages:\n\n"+
		"- **goroutine per partition**: the product's runner (`processors.Runner`), one instance of each stage; each assigned "+
		"partition has its own goroutine, with up to 8 batches awaiting acks while it processes the next.\n"+
		"- **single loop per stage**: one goroutine per stage polls up to 10,000 records of all its partitions, processes them in "+
		"turn, produces, waits for every ack, commits, and polls again (`internal/perf/singleloop.go`).\n"+
		"- **%s**: %s, each a member of every stage's group, so each owns a share of the partitions.\n\n"+
		"The broker, producer and results reader run in this process throughout; child processes add their own runtime and "+
		"clients on the same %d cores. CPU per record is the CPU time of this process and the child processes during the "+
		"load, divided by the records: on a shared machine a steadier measure of each model's cost than records/s, because "+
		"a model with more runnable threads or processes also takes a larger share of a contended machine.\n", num(float64(records)), series, procLabel, procNote, runtime.NumCPU())
	t.write(b)
	r.plot("concurrent_throughput.png", func(path string) error {
		return barPlot(path, "Pipeline throughput by concurrency model (8 partitions)", "records/s", labels, values)
	})
	return nil
}
