package processors

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/schemas"
)

// Detect runs the spec's detectors over Features and writes each detector's raw score.
// Each partition owns its detectors; series-scoped ones keep per-series state inside.
type Detect struct {
	spec         *spec.Spec
	input        string
	output       string
	infos        []detectors.Info
	modelVersion string
}

// NewDetect builds the detect stage; detector names and parameters were validated with
// the spec.
func NewDetect(s *spec.Spec, topics Topics) (*Detect, error) {
	d := &Detect{spec: s, input: topics.Features, output: topics.Scores, modelVersion: SpecVersion(s)}
	for i, ds := range s.Detectors {
		info, err := detectors.Lookup(ds.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("detectors[%d]: %w", i, err)
		}
		if info.NewStreaming == nil {
			return nil, fmt.Errorf("detectors[%d]: %s is a batch detector; the streaming pipeline needs a streaming one", i, ds.Algorithm)
		}
		d.infos = append(d.infos, info)
	}
	return d, nil
}

// SpecVersion names the detector configuration a result came from: a short hash of the
// detectors and their parameters, so results from different configurations differ.
func SpecVersion(s *spec.Spec) string {
	h := sha256.New()
	for _, d := range s.Detectors {
		fmt.Fprintf(h, "%s|%s|%v|%v;", d.Name, d.Algorithm, sortedParams(d.Params), d.Weight)
	}
	return "spec-" + hex.EncodeToString(h.Sum(nil)[:6])
}

func (d *Detect) Name() string          { return "detect" }
func (d *Detect) InputTopics() []string { return []string{d.input} }

func (d *Detect) NewProcessor(topic string, partition int32) (Processor, error) {
	p := &detector{stage: d}
	for i, ds := range d.spec.Detectors {
		params, err := d.infos[i].Resolve(ds.Params)
		if err != nil {
			return nil, err
		}
		// Seeded by pipeline, detector and partition: a partition's models are the same
		// whichever process owns it.
		seed := fnv.New64a()
		fmt.Fprintf(seed, "%s/%s/%d", d.spec.Name, ds.Name, partition)
		det, err := d.infos[i].NewStreaming(params, seed.Sum64())
		if err != nil {
			return nil, fmt.Errorf("detector %s: %w", ds.Name, err)
		}
		p.dets = append(p.dets, det)
		ta, _ := det.(detectors.TimeAware) // seasonal detectors want the record's time
		p.timed = append(p.timed, ta)
	}
	return p, nil
}

type detector struct {
	stage   *Detect
	dets    []detectors.Streaming
	timed   []detectors.TimeAware // per detector: non-nil when it takes timestamps
	in      schemas.Features
	contrib []float64
	sum     []float64
}

func (p *detector) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	f := &p.in
	if err := schemas.DecodeFeatures(rec.Value, f); err != nil {
		return BadInput("decode", err)
	}
	n := len(f.Names)
	if n != len(f.Scaled) || n != len(f.Raw) {
		return BadInput("invalid", fmt.Errorf("features: %d names but %d scaled and %d raw values", n, len(f.Scaled), len(f.Raw)))
	}
	p.contrib = growZero(p.contrib, n)
	p.sum = growZero(p.sum, n)
	out := schemas.Scores{
		Series:       f.Series,
		TS:           f.TS,
		Names:        f.Names,
		Raw:          f.Raw,
		Tags:         f.Tags,
		Source:       f.Source,
		Pipeline:     f.Pipeline,
		ModelVersion: p.stage.modelVersion,
		Detectors:    make(map[string]float64, len(p.dets)),
	}
	attributed := false
	for i, det := range p.dets {
		clear(p.contrib)
		var score float64
		if ta := p.timed[i]; ta != nil {
			score = ta.ScoreLearnAt(f.Series, f.TS, f.Scaled, p.contrib)
		} else {
			score = det.ScoreLearn(f.Series, f.Scaled, p.contrib)
		}
		out.Detectors[p.stage.spec.Detectors[i].Name] = score
		for j, c := range p.contrib {
			if c != 0 {
				p.sum[j] += c
				attributed = true
			}
		}
	}
	if attributed {
		total := 0.0
		for _, c := range p.sum {
			total += c
		}
		out.Contributions = make(map[string]float64, n)
		for j, name := range f.Names {
			out.Contributions[name] = p.sum[j] / total
		}
	}
	value := schemas.AppendScores(make([]byte, 0, 128+32*n), &out)
	emit(&kgo.Record{Topic: p.stage.output, Key: rec.Key, Value: value, Timestamp: rec.Timestamp})
	return nil
}

func growZero(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

func sortedParams(p map[string]float64) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%v,", k, p[k])
	}
	return b.String()
}
