package telemetry

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaNamespace is the metric prefix of the Kafka client metrics gonomaly exports
// (gonomaly_kafka_connects_total, gonomaly_kafka_request_duration_e2e_seconds, …).
const KafkaNamespace = "gonomaly_kafka"

// KafkaMetrics returns a client option that exports franz-go's client metrics (kprom:
// connections, bytes and records read and written per broker and topic, request
// latency, buffered records) to reg under namespace, labelled with the client's id.
//
// Give every client its own KafkaMetrics option and its own kgo.ClientID: clients with
// the same id in one registry would export the same series, so the later one's metrics
// are dropped rather than panicking. Clients built from the same option slice (a stage
// and its state client) share one set of metrics, labelled with the first one's id; the
// metrics are registered while at least one of them is open.
func KafkaMetrics(reg prometheus.Registerer, namespace string) kgo.Opt {
	var own prometheus.Registerer // nil: counted but not exported (tests)
	if reg != nil {
		own = &ownedRegisterer{reg: reg, own: map[prometheus.Collector]bool{}}
	}
	m := kprom.NewMetrics(namespace,
		kprom.Registerer(own),
		kprom.WithClientLabel(),
		kprom.Histograms(kprom.RequestDurationE2E),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.UncompressedBytes, kprom.ConsistentNaming),
	)
	return kgo.WithHooks(&sharedKafkaHooks{Metrics: m})
}

// sharedKafkaHooks lets one kprom.Metrics serve several clients. kprom registers its
// collectors on every OnNewClient and unregisters them on every OnClientClosed, which
// panics for a second client and unregisters the first one's metrics when the second
// closes; here only the first open and the last close get through.
type sharedKafkaHooks struct {
	*kprom.Metrics
	mu   sync.Mutex
	open int
}

func (h *sharedKafkaHooks) OnNewClient(cl *kgo.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open++; h.open == 1 {
		h.Metrics.OnNewClient(cl)
	}
}

func (h *sharedKafkaHooks) OnClientClosed(cl *kgo.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open--; h.open == 0 {
		h.Metrics.OnClientClosed(cl)
	}
}

// ownedRegisterer registers into reg without panicking on duplicates and unregisters
// only what it registered itself: a Registry unregisters by descriptor, so a client
// whose metrics collided would otherwise remove the other client's on close.
type ownedRegisterer struct {
	reg prometheus.Registerer
	mu  sync.Mutex
	own map[prometheus.Collector]bool
}

func (r *ownedRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.own[c] = true
	r.mu.Unlock()
	return nil
}

func (r *ownedRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		var dup prometheus.AlreadyRegisteredError
		if err := r.Register(c); err != nil && !errors.As(err, &dup) {
			panic(err) // an invalid metric: a programming error, as in MustRegister
		}
	}
}

func (r *ownedRegisterer) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	owned := r.own[c]
	delete(r.own, c)
	r.mu.Unlock()
	return owned && r.reg.Unregister(c)
}
