package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/google/pprof/profile"
)

// runProfiling runs the pipeline at full speed with each stage under a profile label,
// takes a CPU profile of the load and a heap profile at its end (the stages' state
// still live), and attributes both to the parts of the process.
func runProfiling(ctx context.Context, r *run) error {
	records, series := int64(1_000_000), 1000
	if r.cfg.Short {
		records, series = 15_000, 200
	}
	r.progress("pipeline, %s records of %d series on 8 partitions, CPU profile of the load", num(float64(records)), series)
	var cpu, heap bytes.Buffer
	var profErr error
	profiling := false
	defer func() {
		if profiling { // the run failed during the load: the next user of the profiler needs it free
			pprof.StopCPUProfile()
		}
	}()
	res, err := runPipeline(ctx, pipeConfig{
		Records: records, Series: series, Partitions: 8, Instances: 1, Label: true, Logger: r.log,
		Loaded: func(started bool) {
			if started {
				if err := pprof.StartCPUProfile(&cpu); err != nil {
					profErr = fmt.Errorf("CPU profile: %w (is the process already being profiled? --skip-profiling leaves this type out)", err)
				}
				profiling = profErr == nil
				return
			}
			if profiling {
				pprof.StopCPUProfile()
				profiling = false
			}
			runtime.GC() // the heap profile's in-use figures are as of the last GC
			if err := pprof.Lookup("heap").WriteTo(&heap, 0); err != nil {
				profErr = errors.Join(profErr, fmt.Errorf("heap profile: %w", err))
			}
		},
	})
	if err != nil {
		if profErr == nil && cpu.Len() == 0 {
			return err
		}
		return errors.Join(err, profErr)
	}
	if profErr != nil {
		return profErr
	}
	for name, data := range map[string][]byte{"cpu.pprof": cpu.Bytes(), "heap.pprof": heap.Bytes()} {
		if err := os.WriteFile(r.path(name), data, 0o644); err != nil {
			return err
		}
	}
	cpuProf, err := profile.ParseData(cpu.Bytes())
	if err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	heapProf, err := profile.ParseData(heap.Bytes())
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "The pipeline (embedded broker, preprocess → detect → ensemble with the default spec, one runner per stage, 8 partitions) "+
		"processed %s records of %d series at **%s records/s** while profiled (%s of CPU per record; p50 latency %s: a backlog, the producer is not capped). "+
		"The stages, the producer, the results reader and the broker share this process, so the profile shows all of them. "+
		"Raw profiles: `cpu.pprof`, `heap.pprof` (`go tool pprof -tags cpu.pprof` shows the stage labels).\n\n",
		num(float64(records)), series, num(res.RecordsPerSec), usText(res.CPUPerRecordUs), ms(res.Latency.P50))
	fmt.Fprintln(b, "Samples are attributed to parts by `perf.Attribute`: the embedded broker (kfake frames), the load generator "+
		"(its goroutines' label), the Kafka client (any franz-go frame, so a stage's produce and fetch count here), a stage "+
		"(its processor's frames, or its goroutines' label: runner code and GC assists), the Go runtime (GC workers, scheduler), other.")

	cpuParts, cpuTotal, err := Breakdown(cpuProf, "cpu", 5)
	if err != nil {
		return err
	}
	if cpuTotal == 0 {
		return errors.New("the CPU profile has no samples")
	}
	fmt.Fprintf(b, "\n### CPU by part (%s of CPU in %s of load)\n", formatValue("nanoseconds", cpuTotal), formatValue("nanoseconds", cpuProf.DurationNanos))
	writeParts(b, cpuParts, cpuTotal, "nanoseconds")
	labels := make([]string, len(cpuParts))
	shares := make([]float64, len(cpuParts))
	for i, p := range cpuParts {
		labels[i], shares[i] = p.Part, 100*float64(p.Value)/float64(cpuTotal)
	}
	r.plot("profile_cpu_by_part.png", func(path string) error {
		return barPlot(path, "CPU by part of the process under pipeline load", "% of CPU samples", labels, shares)
	})
	fmt.Fprintln(b, "\n### Top CPU hotspots per part (flat: the function itself)")
	writeHotspots(b, cpuParts, cpuTotal, "nanoseconds")

	for _, st := range []struct{ sample, title string }{
		{"inuse_space", "Heap in use at the end of the load, by part"},
		{"alloc_space", "Bytes allocated since the start of the process, by part"},
	} {
		parts, total, err := Breakdown(heapProf, st.sample, 3)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "\n### %s (%s)\n", st.title, formatValue("bytes", total))
		writeParts(b, parts, total, "bytes")
		if st.sample == "inuse_space" {
			hl := make([]string, len(parts))
			hv := make([]float64, len(parts))
			for i, p := range parts {
				hl[i], hv[i] = p.Part, float64(p.Value)/(1<<20)
			}
			r.plot("profile_heap_by_part.png", func(path string) error {
				return barPlot(path, "Heap in use at the end of the pipeline load, by part", "MiB", hl, hv)
			})
		}
	}

	r.sec.Summary = append(r.sec.Summary, Row{TypeProfiling, "pipeline records/s while profiled", num(res.RecordsPerSec)})
	for _, p := range cpuParts {
		if p.Part == PartPreprocess || p.Part == PartDetect || p.Part == PartEnsemble || p.Part == PartBroker || p.Part == PartKafka {
			top := "-"
			if len(p.Top) > 0 {
				top = shortFunc(p.Top[0].Name)
			}
			r.sec.Summary = append(r.sec.Summary, Row{TypeProfiling, "CPU share: " + p.Part,
				fmt.Sprintf("%.1f%% (top: %s)", 100*float64(p.Value)/float64(cpuTotal), top)})
		}
	}
	return nil
}

func writeParts(b io.Writer, parts []PartShare, total int64, unit string) {
	t := newTable("part", "value", "share", "hottest functions (flat)")
	for _, p := range parts {
		var top []string
		for _, h := range p.Top[:min(3, len(p.Top))] {
			top = append(top, fmt.Sprintf("`%s` %.1f%%", shortFunc(h.Name), 100*float64(h.Flat)/float64(total)))
		}
		t.add(p.Part, formatValue(unit, p.Value), fmt.Sprintf("%.1f%%", 100*float64(p.Value)/float64(total)), joinOr(top, "; ", "-"))
	}
	t.write(b)
}

func writeHotspots(b io.Writer, parts []PartShare, total int64, unit string) {
	t := newTable("part", "function", "flat", "share", "hint")
	for _, p := range parts {
		for _, h := range p.Top {
			t.add(p.Part, "`"+shortFunc(h.Name)+"`", formatValue(unit, h.Flat), fmt.Sprintf("%.1f%%", 100*float64(h.Flat)/float64(total)), HotspotHint(h.Name))
		}
	}
	t.write(b)
}
