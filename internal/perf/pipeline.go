package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/producers"
)

// How a pipeline run's stages are run.
const (
	// ModeGoroutines is the product: processors.Runner, one goroutine per assigned
	// partition, all three stages in one instance (app.RunStages).
	ModeGoroutines = "goroutines per partition"
	// ModeSingleLoop runs each stage as one goroutine that polls, processes every
	// partition's records in turn, produces, waits for the acks and commits.
	ModeSingleLoop = "single loop"
	// ModeProcesses runs each instance as a `gonomaly process` child process.
	ModeProcesses = "processes"
	// ModeClients is ModeProcesses in this process: each instance its own clients and
	// group members, sharing the process's cores, heap and GC.
	ModeClients = "in-process clients"
)

// pipeConfig sizes one pipeline run on a fresh embedded broker.
type pipeConfig struct {
	Records    int64
	Series     int
	Partitions int32
	Rate       float64 // producer cap in records/s; 0: as fast as possible
	// Instances is how many members each stage's consumer group has.
	Instances int
	Mode      string
	// Executable is the gonomaly binary ModeProcesses runs.
	Executable string
	// Label runs each stage under a pprof label (its own app.RunStages per stage), so
	// that CPU samples can be attributed to stages.
	Label bool
	// Loaded, if set, is called when the load starts and again when the last result is
	// in, while the pipeline still runs (to start and stop profiles).
	Loaded func(started bool)
	Spec   *spec.Spec
	Logger *slog.Logger
}

// pipeResult is what one run measured.
type pipeResult struct {
	Records       int64
	Seconds       float64
	RecordsPerSec float64
	// Latency is from the producer handing a record to its client (the Kafka timestamp,
	// carried by every stage) to its result being read back from the results topic.
	Latency Dist
	// Ready is how long the stages took to join their groups and get every partition.
	Ready time.Duration
	// CPUPerRecordUs is the CPU time of this process (broker, producer and results reader
	// included) and of the stage processes it started, per record, during the load.
	CPUPerRecordUs float64
}

var runSeq atomic.Int64

// runPipeline starts an embedded broker and the stages as cfg says, publishes the
// synthetic stream and reads the results topic until every record has its result.
func runPipeline(ctx context.Context, cfg pipeConfig) (pipeResult, error) {
	if cfg.Spec == nil {
		cfg.Spec = spec.Default()
	}
	if cfg.Instances < 1 {
		cfg.Instances = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k, err := bench.StartKafka(ctx, cluster.Config{Partitions: cfg.Partitions, Prefix: fmt.Sprintf("perf%d.", runSeq.Add(1)), Logger: log})
	if err != nil {
		return pipeResult{}, err
	}
	defer k.Close()
	c := k.Cluster
	topics := processors.PipelineTopics(c.Prefix, cfg.Spec)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4*cfg.Instances+4)
	var kids children
	var stages sync.WaitGroup
	defer func() {
		cancel()
		stages.Wait() // before the broker closes: the stages leave their groups cleanly
	}()
	launch := func(fn func(ctx context.Context) error) {
		stages.Go(func() {
			if err := fn(runCtx); err != nil && runCtx.Err() == nil {
				errc <- err
			}
		})
	}
	for i := range cfg.Instances {
		switch cfg.Mode {
		case ModeGoroutines, ModeClients, "":
			if !cfg.Label {
				launch(func(ctx context.Context) error {
					return app.RunStages(ctx, app.StagesConfig{Cluster: c, Spec: cfg.Spec, Logger: log})
				})
				continue
			}
			for _, st := range app.StageNames {
				launch(func(ctx context.Context) (err error) {
					pprof.Do(ctx, pprof.Labels(labelStage, st), func(ctx context.Context) {
						err = app.RunStages(ctx, app.StagesConfig{Cluster: c, Spec: cfg.Spec, Stages: []string{st}, Logger: log})
					})
					return err
				})
			}
		case ModeSingleLoop:
			for _, st := range app.StageNames {
				launch(func(ctx context.Context) error { return singleLoop(ctx, c, cfg.Spec, st, topics) })
			}
		case ModeProcesses:
			if cfg.Executable == "" {
				return pipeResult{}, errors.New("process mode needs the gonomaly executable")
			}
			launch(func(ctx context.Context) error { return runProcess(ctx, cfg.Executable, c, i, &kids) })
		default:
			return pipeResult{}, fmt.Errorf("unknown mode %q", cfg.Mode)
		}
	}

	// The results reader: a plain consumer of every partition, so it needs no group.
	var (
		mu        sync.Mutex
		latencies = make([]float64, 0, cfg.Records)
		last      time.Time
		finished  = make(chan struct{})
	)
	readerErr := make(chan error, 1)
	var reader *kgo.Client
	pprof.Do(ctx, pprof.Labels(labelRole, "load"), func(context.Context) {
		reader, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ConsumeTopics(topics.Results),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	})
	if err != nil {
		return pipeResult{}, err
	}
	defer reader.Close()
	go pprof.Do(runCtx, pprof.Labels(labelRole, "load"), func(ctx context.Context) {
		for {
			fetches := reader.PollFetches(ctx)
			if ctx.Err() != nil || fetches.IsClientClosed() {
				return
			}
			if err := fetches.Err0(); err != nil {
				readerErr <- fmt.Errorf("results reader: %w", err)
				return
			}
			now := time.Now()
			mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) {
				latencies = append(latencies, float64(now.Sub(r.Timestamp).Microseconds())/1000)
			})
			last = now
			done := int64(len(latencies)) >= cfg.Records
			mu.Unlock()
			if done {
				close(finished)
				return
			}
		}
	})

	readyStart := time.Now()
	groups := make([]string, len(app.StageNames))
	for i, st := range app.StageNames {
		groups[i] = app.GroupName(c.Prefix, cfg.Spec.Name, st)
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	err = waitAssigned(readyCtx, kadm.NewClient(k.Admin), int(cfg.Partitions), errc, groups...)
	readyCancel()
	if err != nil {
		return pipeResult{}, err
	}
	res := pipeResult{Records: cfg.Records, Ready: time.Since(readyStart)}

	var prod *kgo.Client
	pprof.Do(ctx, pprof.Labels(labelRole, "load"), func(context.Context) {
		prod, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	})
	if err != nil {
		return pipeResult{}, err
	}
	defer prod.Close()
	pub, err := producers.NewPublisher(prod, topics.Records, producers.PublisherOptions{Rate: cfg.Rate})
	if err != nil {
		return pipeResult{}, err
	}
	if cfg.Loaded != nil {
		cfg.Loaded(true)
	}
	start, cpuStart := time.Now(), kids.cpu()
	go pprof.Do(runCtx, pprof.Labels(labelRole, "load"), func(ctx context.Context) {
		gen := producers.NewSynthetic(producers.SyntheticConfig{Series: cfg.Series, Count: cfg.Records, Seed: 1})
		if _, err := pub.Run(ctx, gen); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("producer: %w", err)
		}
	})
	// A run that stalls (a stage lost, the machine swapping) fails rather than hangs.
	stall := time.NewTimer(10 * time.Minute)
	defer stall.Stop()
	select {
	case <-finished:
	case err := <-errc:
		return pipeResult{}, err
	case err := <-readerErr:
		return pipeResult{}, err
	case <-ctx.Done():
		return pipeResult{}, ctx.Err()
	case <-stall.C:
		mu.Lock()
		n := len(latencies)
		mu.Unlock()
		return pipeResult{}, fmt.Errorf("pipeline stalled: %d of %d results after 10 minutes", n, cfg.Records)
	}
	cpu := kids.cpu() - cpuStart
	if cfg.Loaded != nil {
		cfg.Loaded(false)
	}
	res.CPUPerRecordUs = float64(cpu.Microseconds()) / float64(cfg.Records)
	mu.Lock()
	elapsed := last.Sub(start)
	res.Latency = Summarize(latencies)
	mu.Unlock()
	res.Seconds = elapsed.Seconds()
	if res.Seconds > 0 {
		res.RecordsPerSec = float64(cfg.Records) / res.Seconds
	}
	return res, nil
}

// waitAssigned is cluster.WaitAssigned that also gives up when a stage fails first.
func waitAssigned(ctx context.Context, adm *kadm.Client, partitions int, errc chan error, groups ...string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cluster.WaitAssigned(ctx, adm, partitions, groups...) }()
	select {
	case err := <-done:
		return err
	case err := <-errc:
		return err
	}
}

// runProcess runs `gonomaly process` (every stage) against c until ctx ends, then stops
// it with SIGTERM, as Kubernetes would.
func runProcess(ctx context.Context, exe string, c cluster.Config, n int, kids *children) error {
	cmd := exec.CommandContext(ctx, exe, "process", "--brokers", c.Brokers[0], "--topic-prefix", c.Prefix,
		"--partitions", strconv.Itoa(int(c.Partitions)), "--create-topics=false")
	cmd.Env = append(cmd.Environ(), "GONOMALY_LOG_LEVEL=warn")
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 4096}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Start()
	if err == nil {
		kids.add(cmd.Process.Pid)
		err = cmd.Wait()
	}
	if ctx.Err() != nil {
		return nil // stopped by us
	}
	return fmt.Errorf("process %d (%s process) exited: %v: %s", n, exe, err, bytes.TrimSpace(stderr.Bytes()))
}

// limitedBuffer keeps the first max bytes written to it, so a chatty child cannot grow
// memory without bound.
type limitedBuffer struct {
	mu  sync.Mutex
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
