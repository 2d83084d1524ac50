package perf

import (
	"cmp"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
)

// The parts of the process a profile sample is attributed to.
const (
	PartPreprocess = "preprocess"
	PartDetect     = "detect"
	PartEnsemble   = "ensemble"
	PartKafka      = "kafka client"
	PartBroker     = "broker"
	PartRuntime    = "runtime"
	PartLoad       = "load generator"
	PartOther      = "other"
)

// Parts lists the parts in report order.
var Parts = []string{PartPreprocess, PartDetect, PartEnsemble, PartKafka, PartBroker, PartRuntime, PartLoad, PartOther}

// Profile labels the harness sets (pprof.Do) on the goroutines it starts; goroutines
// inherit them, so a stage's runner, its Kafka client and their helpers all carry
// their stage.
const (
	labelStage = "perf.stage" // preprocess, detect or ensemble
	labelRole  = "perf.role"  // "load": the producer and the results reader
)

// stageFrames are the functions that belong to one stage whoever calls them: the
// processors' per-partition types and the stages that build them.
var stageFrames = []struct{ prefix, part string }{
	{"github.com/gonomaly/gonomaly/processors.(*preprocessor)", PartPreprocess},
	{"github.com/gonomaly/gonomaly/processors.(*Preprocess)", PartPreprocess},
	{"github.com/gonomaly/gonomaly/processors.(*detector)", PartDetect},
	{"github.com/gonomaly/gonomaly/processors.(*Detect)", PartDetect},
	{"github.com/gonomaly/gonomaly/processors.(*ensembler)", PartEnsemble},
	{"github.com/gonomaly/gonomaly/processors.(*Ensemble)", PartEnsemble},
}

// Attribute names the part of the process a sample belongs to, from its stack
// (innermost frame first) and its goroutine labels, by the first rule that applies:
//
//  1. the embedded broker (kfake) anywhere on the stack: broker, whoever called it;
//  2. the load generator's label: load generator (its Kafka client included);
//  3. the innermost frame outside the standard library and runtime is the Kafka client
//     (franz-go, or the compression libraries it calls): kafka client, so a stage's
//     produce and fetch work shows as the client's, while stage code the client calls
//     back (a partition assigned) stays the stage's;
//  4. the outermost stage frame (preprocessor, detector, ensembler, or the stage that
//     builds them): that stage, so the detectors package's calibration code called by
//     the ensemble counts for ensemble;
//  5. the goroutine's stage label: that stage (the runner, and GC assists on its
//     goroutines);
//  6. the producer or the harness (heap profiles carry no labels): load generator;
//  7. a gonomaly detectors frame: detect;
//  8. only runtime frames: runtime (GC workers, scheduler, idle);
//  9. anything else: other.
func Attribute(stack []string, labels map[string][]string) string {
	for _, f := range stack {
		if strings.HasPrefix(f, "github.com/twmb/franz-go/pkg/kfake") {
			return PartBroker
		}
	}
	if slices.Contains(labels[labelRole], "load") {
		return PartLoad
	}
	for _, f := range stack {
		if !thirdParty(f) {
			continue
		}
		for _, k := range kafkaPrefixes {
			if strings.HasPrefix(f, k) {
				return PartKafka
			}
		}
		break
	}
	for i := len(stack) - 1; i >= 0; i-- {
		for _, sf := range stageFrames {
			if strings.HasPrefix(stack[i], sf.prefix) {
				return sf.part
			}
		}
	}
	if st := labels[labelStage]; len(st) > 0 && slices.Contains([]string{PartPreprocess, PartDetect, PartEnsemble}, st[0]) {
		return st[0]
	}
	runtimeOnly := len(stack) > 0
	detect := false
	for _, f := range stack {
		switch {
		case strings.HasPrefix(f, "github.com/gonomaly/gonomaly/producers."), strings.HasPrefix(f, "github.com/gonomaly/gonomaly/internal/perf."):
			return PartLoad
		case strings.HasPrefix(f, "github.com/gonomaly/gonomaly/detectors."):
			detect = true
		}
		if !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "runtime/") && !strings.HasPrefix(f, "internal/runtime/") {
			runtimeOnly = false
		}
	}
	switch {
	case detect:
		return PartDetect
	case runtimeOnly:
		return PartRuntime
	}
	return PartOther
}

// kafkaPrefixes are the Kafka client and the compression libraries it calls.
var kafkaPrefixes = []string{"github.com/twmb/franz-go/", "github.com/klauspost/compress/", "github.com/pierrec/lz4/", "github.com/golang/snappy"}

// thirdParty reports whether a function is outside the standard library and runtime:
// by Go's convention, only such import paths have a dot in their first element.
func thirdParty(fn string) bool {
	first, _, _ := strings.Cut(fn, "/")
	return strings.Contains(first, ".") && strings.Contains(fn, "/")
}

// leafFunc is the function a sample was taken in: its innermost frame, skipping
// runtime.asyncPreempt, which only marks a goroutine being preempted in the frame
// below it.
func leafFunc(stack []string) string {
	for _, f := range stack {
		if f != "runtime.asyncPreempt" {
			return f
		}
	}
	return ""
}

// PartShare is one part's share of a profile, with its hottest functions (flat).
type PartShare struct {
	Part  string
	Value int64
	Top   []Hotspot
}

// Breakdown attributes every sample of one sample type to a part (Attribute) and
// returns the parts in Parts order with the total, each with its top functions by flat
// value (the innermost frame's function).
func Breakdown(p *profile.Profile, sampleType string, top int) ([]PartShare, int64, error) {
	idx, err := sampleIndex(p, sampleType)
	if err != nil {
		return nil, 0, err
	}
	values := map[string]int64{}
	flat := map[string]map[string]int64{}
	var total int64
	var stack []string
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v == 0 {
			continue
		}
		stack = stack[:0]
		frames(s, func(name string) { stack = append(stack, name) })
		part := Attribute(stack, s.Label)
		values[part] += v
		total += v
		if flat[part] == nil {
			flat[part] = map[string]int64{}
		}
		if leaf := leafFunc(stack); leaf != "" {
			flat[part][leaf] += v
		}
	}
	var out []PartShare
	for _, part := range Parts {
		if values[part] == 0 {
			continue
		}
		ps := PartShare{Part: part, Value: values[part]}
		for name, v := range flat[part] {
			ps.Top = append(ps.Top, Hotspot{Name: name, Flat: v})
		}
		slices.SortFunc(ps.Top, func(a, b Hotspot) int {
			return cmp.Or(cmp.Compare(b.Flat, a.Flat), strings.Compare(a.Name, b.Name))
		})
		ps.Top = ps.Top[:min(top, len(ps.Top))]
		out = append(out, ps)
	}
	return out, total, nil
}
