package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

// kafkaSeries sums the values of a metric family per client_id label.
func kafkaSeries(t *testing.T, reg prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var client string
			for _, l := range m.GetLabel() {
				if l.GetName() == "client_id" {
					client = l.GetValue()
				}
			}
			out[client] += m.GetCounter().GetValue()
		}
	}
	return out
}

func TestKafkaMetrics(t *testing.T) {
	brokers := testkit.Brokers(t)
	topic := testkit.Prefix(t) + "kprom"
	ctx := context.Background()
	if _, err := kadm.NewClient(testkit.Client(t, brokers)).CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	opt := KafkaMetrics(reg, KafkaNamespace)
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	// Two clients from one option slice (as a stage and its state client are) and a
	// third with a clashing id: no panic, one set of metrics.
	a := newClient(opt, kgo.ClientID("stage"))
	b := newClient(opt, kgo.ClientID("stage"))
	c := newClient(KafkaMetrics(reg, KafkaNamespace), kgo.ClientID("stage"))
	api := newClient(KafkaMetrics(reg, KafkaNamespace), kgo.ClientID("api"))
	for _, cl := range []*kgo.Client{a, b, c, api} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The batch hook runs after the produce promise: the counts may lag a moment.
	var records map[string]float64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if records = kafkaSeries(t, reg, "gonomaly_kafka_produce_records_total"); records["stage"] >= 2 && records["api"] == 1 {
			break
		}
	}
	if records["stage"] < 2 || records["api"] != 1 {
		t.Fatalf("produce_records_total by client = %v, want stage >= 2 (a and b), api 1", records)
	}
	if got := kafkaSeries(t, reg, "gonomaly_kafka_connects_total"); got["stage"] < 1 || got["api"] < 1 {
		t.Fatalf("connects_total by client = %v", got)
	}

	// Closing the clashing client must not take the others' metrics with it, nor
	// closing one of the two sharing clients.
	c.Close()
	b.Close()
	if got := kafkaSeries(t, reg, "gonomaly_kafka_produce_records_total"); got["stage"] < 2 {
		t.Fatalf("after closing b and c: %v", got)
	}
	a.Close()
	api.Close()
	if got := kafkaSeries(t, reg, "gonomaly_kafka_produce_records_total"); len(got) != 0 {
		t.Fatalf("after every client closed: %v, want unregistered", got)
	}
	// The option can serve a new client after all closed.
	d := newClient(opt, kgo.ClientID("stage"))
	defer d.Close()
	if err := d.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); kafkaSeries(t, reg, "gonomaly_kafka_produce_records_total")["stage"] < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no produce_records_total of the reopened client")
		}
	}
}
