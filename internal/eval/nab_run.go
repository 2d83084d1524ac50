package eval

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/schemas"
)

// NABEnsemble is the name under which the whole default pipeline is reported.
const NABEnsemble = "ensemble"

// NABConfig is one detector configuration to put through NAB: a pipeline spec whose
// result score is the detector's score.
type NABConfig struct {
	Name string
	Spec *spec.Spec
}

// NABConfigs returns the configurations named (NABEnsemble or streaming detectors of the
// registry) over base; with no names, every registered streaming detector and then the
// ensemble. A single detector runs as base with only that detector, so it goes through
// the same preprocessing and calibration as in the ensemble.
func NABConfigs(base *spec.Spec, names []string) ([]NABConfig, error) {
	if len(names) == 0 {
		for _, info := range detectors.List() {
			if info.NewStreaming != nil {
				names = append(names, info.Name)
			}
		}
		names = append(names, NABEnsemble)
	}
	var out []NABConfig
	for _, n := range names {
		if n == NABEnsemble {
			out = append(out, NABConfig{Name: n, Spec: base.Clone()})
			continue
		}
		info, err := detectors.Lookup(n)
		if err != nil {
			return nil, err
		}
		if info.NewStreaming == nil {
			return nil, fmt.Errorf("%s is a batch detector; NAB needs a streaming one", n)
		}
		out = append(out, NABConfig{Name: n, Spec: SingleDetectorSpec(base, n)})
	}
	return out, nil
}

// SingleDetectorSpec is base with algorithm as its only detector. Its parameters are
// those base gives the algorithm, if base has it, else the registry's defaults.
func SingleDetectorSpec(base *spec.Spec, algorithm string) *spec.Spec {
	s := base.Clone()
	d := spec.Detector{Name: algorithm, Algorithm: algorithm, Weight: 1}
	for _, bd := range base.Detectors {
		if bd.Algorithm == algorithm {
			d.Params = bd.Params
			break
		}
	}
	s.Detectors = []spec.Detector{d}
	return s.Clone()
}

// RunNABSeries streams one series through a fresh pipeline built from s — the real
// preprocess, detect and ensemble stages of partition 0, fed in-memory records — and
// returns the result score of every row. Fresh stages per series because NAB scores
// each file on its own: no state may carry over from another file.
func RunNABSeries(s *spec.Spec, series *NABSeries) ([]float64, error) {
	topics := processors.PipelineTopics("nab.", s)
	pre, err := processors.NewPreprocess(s, topics)
	if err != nil {
		return nil, err
	}
	det, err := processors.NewDetect(s, topics)
	if err != nil {
		return nil, err
	}
	ens, err := processors.NewEnsemble(s, topics)
	if err != nil {
		return nil, err
	}
	var stages [3]processors.Processor
	for i, st := range []processors.Stage{pre, det, ens} {
		if stages[i], err = st.NewProcessor(st.InputTopics()[0], 0); err != nil {
			return nil, fmt.Errorf("%s stage: %w", st.Name(), err)
		}
	}

	scores := make([]float64, series.Rows)
	key := []byte(series.Name)
	rec := schemas.Record{Series: series.Name, Values: map[string]float64{"value": 0}}
	var res schemas.Result
	var out []*kgo.Record
	collect := func(r *kgo.Record) { out = append(out, r) }
	for i := range series.Rows {
		rec.TS = series.TS[i]
		rec.Values["value"] = series.Values[i]
		// A fresh buffer per row, as a consumer would get: decoders may keep views of it.
		in := &kgo.Record{
			Topic: topics.Records, Key: key, Value: schemas.AppendRecordJSON(nil, &rec), Offset: int64(i),
			Timestamp: time.UnixMilli(series.TS[i]),
		}
		for j, p := range stages {
			out = out[:0]
			if err := p.Process(in, collect); err != nil {
				return nil, fmt.Errorf("%s row %d: stage %d: %w", series.Name, i+1, j+1, err)
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%s row %d: stage %d emitted nothing", series.Name, i+1, j+1)
			}
			in = out[0] // the ensemble's first output is the result; the anomaly copy follows
		}
		if in.Topic != topics.Results {
			return nil, fmt.Errorf("%s row %d: ensemble wrote %s before %s", series.Name, i+1, in.Topic, topics.Results)
		}
		if err := schemas.DecodeResult(in.Value, &res); err != nil {
			return nil, fmt.Errorf("%s row %d: result: %w", series.Name, i+1, err)
		}
		scores[i] = res.Score
	}
	return scores, nil
}

// NABDetectorScore is one configuration's result under every profile.
type NABDetectorScore struct {
	Detector string
	Profiles []NABScore // in the order of NABProfiles
}

// RunNAB streams every series through every configuration with workers goroutines
// (NumCPU when < 1) and scores each configuration on the corpus. progress, if not nil,
// is called after each (configuration, series) pair, from any goroutine.
func RunNAB(ctx context.Context, configs []NABConfig, corpus *NABCorpus, workers int, progress func(done, total int)) ([]NABDetectorScore, error) {
	if workers < 1 {
		workers = runtime.NumCPU()
	}
	nf := len(corpus.Series)
	scores := make([][][]float64, len(configs))
	for c := range scores {
		scores[c] = make([][]float64, nf)
	}
	total := len(configs) * nf
	jobs := make(chan int)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var done atomic.Int64
	for range min(workers, total) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				c, f := j/nf, j%nf
				s, err := RunNABSeries(configs[c].Spec, corpus.Series[f])
				if err != nil {
					cancel(fmt.Errorf("%s: %w", configs[c].Name, err))
					continue
				}
				scores[c][f] = s
				if progress != nil {
					progress(int(done.Add(1)), total)
				}
			}
		}()
	}
feed:
	for j := range total {
		select {
		case jobs <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}

	labels := corpus.Labels()
	out := make([]NABDetectorScore, len(configs))
	for c, cfg := range configs {
		ps, err := ScoreNAB(labels, scores[c], NABProfiles)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Name, err)
		}
		out[c] = NABDetectorScore{Detector: cfg.Name, Profiles: ps}
	}
	return out, nil
}
