package processors

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkEnsembleMetrics is the per-record cost of the ensemble stage's metrics
// (latency histogram and anomaly counter; issue 6 asks for under 50 ns).
func BenchmarkEnsembleMetrics(b *testing.B) {
	m := newEnsembleMetrics(prometheus.NewRegistry(), "default")
	now := time.Now()
	ts := now.Add(-30 * time.Millisecond)
	severities := [4]string{"none", "none", "none", "warning"}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			m.observe(now, ts, severities[i&3])
		}
	})
	// One goroutine per partition shares the metrics: the contended case.
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				m.observe(now, ts, severities[i&3])
			}
		})
	})
}
