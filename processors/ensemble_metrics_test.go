package processors_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/schemas"
)

func TestEnsembleMetrics(t *testing.T) {
	s := spec.Default()
	s.Detectors = []spec.Detector{{Name: "zscore", Algorithm: "zscore", Weight: 1}}
	reg := prometheus.NewPedanticRegistry()
	ens, err := processors.NewEnsemble(s, topics, processors.EnsembleRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	// A second stage of the same pipeline in the same registry shares the metrics.
	if _, err := processors.NewEnsemble(s, topics, processors.EnsembleRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	ep, err := ens.NewProcessor(topics.Scores, 0)
	if err != nil {
		t.Fatal(err)
	}
	series, raw, _, _ := burstInput()
	produced := time.Now().Add(-2 * time.Second) // every record produced two seconds ago
	bySeverity := map[string]float64{}
	for i, x := range raw {
		sc := schemas.Scores{
			Series: series[i], TS: int64(i), Names: []string{"v"}, Raw: []float64{x},
			Source: schemas.Source{Topic: topics.Records, Offset: int64(i)}, Pipeline: s.Name,
			Detectors: map[string]float64{"zscore": x},
		}
		var out []*kgo.Record
		rec := &kgo.Record{Topic: topics.Scores, Key: []byte(series[i]), Value: schemas.AppendScores(nil, &sc), Offset: int64(i), Timestamp: produced}
		if err := ep.Process(rec, func(r *kgo.Record) { out = append(out, r) }); err != nil {
			t.Fatal(err)
		}
		var res schemas.Result
		if err := schemas.DecodeResult(out[0].Value, &res); err != nil {
			t.Fatal(err)
		}
		bySeverity[res.Severity]++
	}
	if bySeverity["warning"]+bySeverity["critical"] == 0 {
		t.Fatalf("no anomalies in the input (%v): the test checks nothing", bySeverity)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var count uint64
	var sum float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pipeline"] != s.Name {
				t.Errorf("%s: pipeline label %q, want %q", mf.GetName(), labels["pipeline"], s.Name)
			}
			switch mf.GetName() {
			case "gonomaly_anomalies_total":
				got[labels["severity"]] = m.GetCounter().GetValue()
			case "gonomaly_record_latency_seconds":
				count, sum = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	for _, sev := range []string{"warning", "critical"} {
		if got[sev] != bySeverity[sev] {
			t.Errorf("anomalies_total{severity=%q} = %v, results say %v", sev, got[sev], bySeverity[sev])
		}
	}
	if count != uint64(len(raw)) {
		t.Errorf("latency observations = %d, want %d (one per record)", count, len(raw))
	}
	if mean := sum / float64(count); mean < 2 || mean > 10 {
		t.Errorf("mean latency %.3fs, want about 2s (records produced 2s ago; their event time is 1970)", mean)
	}
	if n := testutil.CollectAndCount(reg, "gonomaly_anomalies_total"); n != 2 {
		t.Errorf("%d anomalies_total series, want 2 (warning, critical)", n)
	}
}
