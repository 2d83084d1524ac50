package processors

import (
	"fmt"
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/schemas"
)

// Preprocess validates records, fills missing values and scales each feature per series
// with rolling robust statistics, writing Features keyed by series.
type Preprocess struct {
	spec    *spec.Spec
	input   string
	output  string
	decoder schemas.RecordDecoder
}

// NewPreprocess builds the preprocess stage of a pipeline.
func NewPreprocess(s *spec.Spec, topics Topics) (*Preprocess, error) {
	format, err := schemas.ParseFormat(s.Input.Format)
	if err != nil {
		return nil, fmt.Errorf("input.format: %w", err)
	}
	ids := map[uint32]bool{}
	for _, id := range s.Input.SchemaIDs {
		ids[id] = true
	}
	return &Preprocess{
		spec:    s,
		input:   topics.Records,
		output:  topics.Features,
		decoder: schemas.RecordDecoder{Format: format, SchemaIDs: ids},
	}, nil
}

func (p *Preprocess) Name() string          { return "preprocess" }
func (p *Preprocess) InputTopics() []string { return []string{p.input} }

func (p *Preprocess) NewProcessor(string, int32) (Processor, error) {
	return &preprocessor{stage: p, series: map[string]*seriesScaler{}}, nil
}

type preprocessor struct {
	stage  *Preprocess
	series map[string]*seriesScaler
	rec    schemas.Record
	names  []string
}

// seriesScaler is one series' preprocessing state: per feature, the rolling window that
// scales it and the last value that fills it when missing.
type seriesScaler struct {
	features map[string]*featureScaler
}

type featureScaler struct {
	window *detectors.RollingRobust
	last   float64
	seen   bool
}

// scaledLimit bounds scaled values: a constant series that suddenly moves has MAD 0 and
// would otherwise scale to infinity.
const scaledLimit = 1e6

func (pp *preprocessor) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	st := pp.stage
	if max := st.spec.Input.MaxBytes; max > 0 && len(rec.Value) > max {
		return BadInput("oversize", fmt.Errorf("record of %d bytes exceeds input.max_bytes %d", len(rec.Value), max))
	}
	r := &pp.rec
	if err := st.decoder.Decode(rec.Value, r); err != nil {
		return BadInput("decode", err)
	}
	if r.Series == "" {
		if len(rec.Key) == 0 {
			return BadInput("invalid", fmt.Errorf("series: missing (no series field and no Kafka key)"))
		}
		r.Series = string(rec.Key)
	}
	if r.TS == 0 {
		r.TS = rec.Timestamp.UnixMilli()
	}

	names := pp.names[:0]
	if len(st.spec.Features) > 0 {
		names = append(names, st.spec.Features...)
	} else {
		for n := range r.Values {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	pp.names = names

	ss := pp.series[r.Series]
	if ss == nil {
		ss = &seriesScaler{features: make(map[string]*featureScaler, len(names))}
		pp.series[r.Series] = ss
	}
	f := schemas.Features{
		Series:   r.Series,
		TS:       r.TS,
		Names:    names,
		Scaled:   make([]float64, len(names)),
		Raw:      make([]float64, len(names)),
		Tags:     r.Tags,
		Source:   schemas.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset},
		Pipeline: st.spec.Name,
	}
	pre := st.spec.Preprocess
	for i, name := range names {
		fs := ss.features[name]
		if fs == nil {
			fs = &featureScaler{window: detectors.NewRollingRobust(pre.Window)}
			ss.features[name] = fs
		}
		x, ok := r.Values[name]
		if !ok {
			switch pre.Missing {
			case "reject":
				return BadInput("missing", fmt.Errorf("values.%s: missing", name))
			case "zero":
				x = 0
			default: // previous
				x = fs.last
			}
		}
		f.Raw[i] = x
		f.Scaled[i] = fs.scale(x, pre.Scaling)
		fs.last, fs.seen = x, true
	}
	value := schemas.AppendFeatures(make([]byte, 0, 64+24*len(names)), &f)
	key := rec.Key
	if string(key) != r.Series {
		key = []byte(r.Series) // every topic after records is keyed by series
	}
	emit(&kgo.Record{Topic: st.output, Key: key, Value: value, Timestamp: rec.Timestamp})
	return nil
}

// scale scores x against the window before adding it, so a spike is measured against
// the history it breaks from.
func (fs *featureScaler) scale(x float64, method string) float64 {
	if method == "none" {
		return x
	}
	w := fs.window
	var z float64
	if w.Len() >= 2 {
		med := w.Median()
		sd := 1.4826 * w.MAD()
		if floor := 1e-9 * (math.Abs(med) + 1); sd < floor {
			sd = floor
		}
		z = (x - med) / sd
		z = math.Max(-scaledLimit, math.Min(scaledLimit, z))
	}
	w.Add(x)
	return z
}
