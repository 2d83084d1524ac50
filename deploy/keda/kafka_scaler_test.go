package keda

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-logr/logr"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	"k8s.io/client-go/tools/events"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// partitions is every topic's partition count in the deploy (GONOMALY_PARTITIONS=8) and
// in docs/scaling.md's examples.
const partitions = 8

// The deploy's groups and topics with the default prefix and pipeline (docs/scaling.md).
const (
	preprocessGroup = "gonomaly.default.preprocess"
	detectGroup     = "gonomaly.default.detect"
	ensembleGroup   = "gonomaly.default.ensemble"
	workersGroup    = "gonomaly.workers"
	recordsTopic    = "gonomaly.records"
	featuresTopic   = "gonomaly.features"
	scoresTopic     = "gonomaly.scores"
	trainTopic      = "gonomaly.jobs.train"
	detectQueue     = "gonomaly.jobs.detect"
)

// The scaler logs through controller-runtime's global logger; unset, it complains after
// 30 s on stderr.
var setLogger = sync.OnceFunc(func() { logf.SetLogger(logr.Discard()) })

// deployment is one of our ScaledObjects as each kustomization renders it (base, dev,
// prod), with KEDA's scaler built from the base's trigger on the test broker.
type deployment struct {
	name     string
	variants map[string]*kedav1alpha1.ScaledObject
	scaler   scalers.Scaler
	metric   string // the external metric name KEDA registers with the HPA
	target   int64  // the HPA's averageValue target in milli-units (lagThreshold × 1000)
}

// newDeployment builds KEDA's Kafka scaler for the first trigger of the named
// ScaledObject of the base, with bootstrapServers pointed at addr.
func newDeployment(t *testing.T, addr, name string, variants map[string]rendered) *deployment {
	t.Helper()
	d := &deployment{name: name, variants: map[string]*kedav1alpha1.ScaledObject{}}
	for v, r := range variants {
		so := r.scaledObjects[name]
		if so == nil {
			t.Fatalf("%s: no ScaledObject %s", v, name)
		}
		d.variants[v] = so
	}
	so := d.variants["base"]
	s, unmatched, err := newKafkaScaler(so, addr, variants["base"].authParams(t, so))
	if err != nil {
		t.Fatalf("%s: NewKafkaScaler: %v", name, err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	for _, u := range unmatched {
		t.Errorf("%s: %s", name, u)
	}
	specs := s.GetMetricSpecForScaling(context.Background())
	if len(specs) != 1 || specs[0].External == nil || specs[0].External.Target.AverageValue == nil {
		t.Fatalf("%s: metric spec %+v, want one external AverageValue metric", name, specs)
	}
	d.scaler, d.metric, d.target = s, specs[0].External.Metric.Name, specs[0].External.Target.AverageValue.MilliValue()
	if want, _ := strconv.ParseInt(so.Spec.Triggers[0].Metadata["lagThreshold"], 10, 64); d.target != want*1000 {
		t.Errorf("%s: HPA target %dm, want lagThreshold %d", name, d.target, want)
	}
	t.Logf("%s: external metric %s, HPA target averageValue %s", name, d.metric, specs[0].External.Target.AverageValue)
	return d
}

// newKafkaScaler builds KEDA's Kafka scaler as KEDA's scale handler does for the first
// trigger of so, with bootstrapServers replaced by addr. unmatched are the warnings KEDA
// records for trigger metadata keys the scaler does not read (a misspelt key is
// otherwise silently replaced by its default).
func newKafkaScaler(so *kedav1alpha1.ScaledObject, addr string, auth map[string]string) (s scalers.Scaler, unmatched []string, err error) {
	setLogger()
	trig := so.Spec.Triggers[0]
	if trig.Type != "kafka" {
		return nil, nil, fmt.Errorf("trigger type %q, want kafka", trig.Type)
	}
	meta := maps.Clone(trig.Metadata)
	meta["bootstrapServers"] = addr
	rec := events.NewFakeRecorder(100)
	cfg := &scalersconfig.ScalerConfig{
		ScalableObjectName:      so.Name,
		ScalableObjectNamespace: "gonomaly",
		ScalableObjectType:      "ScaledObject",
		GlobalHTTPTimeout:       10 * time.Second,
		TriggerName:             trig.Name,
		TriggerType:             trig.Type,
		TriggerMetadata:         meta,
		AuthParams:              auth,
		ResolvedEnv:             map[string]string{},
		TriggerIndex:            0,
		TriggerUniqueKey:        "gonomaly/" + so.Name + "/0",
		MetricType:              trig.MetricType,
		Recorder:                rec,
		ScaledObject:            so,
	}
	s, err = scalers.NewKafkaScaler(context.Background(), cfg)
	close(rec.Events)
	for e := range rec.Events {
		if strings.Contains(e, "Unmatched input property") {
			unmatched = append(unmatched, e)
		}
	}
	return s, unmatched, err
}

// reading is one poll of KEDA's scaler.
type reading struct {
	lag    int64 // the metric value: KEDA's (possibly capped) total lag
	milli  int64
	active bool
}

func (d *deployment) read(t *testing.T) reading {
	t.Helper()
	r, err := d.tryRead()
	if err != nil {
		t.Fatalf("%s: GetMetricsAndActivity: %v", d.name, err)
	}
	return r
}

func (d *deployment) tryRead() (reading, error) {
	vals, active, err := d.scaler.GetMetricsAndActivity(context.Background(), d.metric)
	if err != nil {
		return reading{}, err
	}
	if len(vals) != 1 {
		return reading{}, fmt.Errorf("%d metric values, want 1", len(vals))
	}
	m := vals[0].Value.MilliValue()
	return reading{lag: m / 1000, milli: m, active: active}, nil
}

// replicas is what KEDA and the HPA make of a reading for one variant of the
// ScaledObject, once things settle: KEDA itself scales an inactive target with
// minReplicaCount 0 to zero (after cooldownPeriod) and an active one from zero to one;
// otherwise the HPA KEDA created sets ceil(metric / averageValue target) within its
// minReplicas (KEDA: minReplicaCount, at least 1) and maxReplicas. The HPA's 10 %
// tolerance and behavior policies only change how fast it gets there.
func (d *deployment) replicas(variant string, r reading) int32 {
	so := d.variants[variant]
	if !r.active && so.Spec.MinReplicaCount != nil && *so.Spec.MinReplicaCount == 0 {
		return 0
	}
	desired := int32(math.Ceil(float64(r.milli) / float64(d.target)))
	return min(max(desired, *so.GetHPAMinReplicas()), so.GetHPAMaxReplicas())
}

// docReplicas is docs/scaling.md's formula ("The formula") applied to the lag as the
// doc defines it (Σ end − committed, from the offsets), independently of KEDA's code.
func (d *deployment) docReplicas(variant string, totalLag int64) int32 {
	so := d.variants[variant]
	trig := so.Spec.Triggers[0].Metadata
	threshold, _ := strconv.ParseInt(trig["lagThreshold"], 10, 64)
	activation, _ := strconv.ParseInt(trig["activationLagThreshold"], 10, 64)
	minR, maxR := int64(1), int64(100)
	if so.Spec.MinReplicaCount != nil {
		minR = int64(*so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount != nil {
		maxR = int64(*so.Spec.MaxReplicaCount)
	}
	if totalLag <= activation && minR == 0 {
		return 0
	}
	desired := (totalLag + threshold - 1) / threshold
	desired = min(desired, partitions)
	desired = min(max(desired, minR, 1), maxR)
	return int32(desired)
}

// expect checks a reading against the lag the test created, KEDA's activation rule
// (lag > activationLagThreshold), the replica counts per variant, and that the doc's
// formula agrees with KEDA for every variant.
func (d *deployment) expect(t *testing.T, r reading, offsetLag, metric int64, active bool, want map[string]int32) {
	t.Helper()
	if r.lag != metric || r.active != active {
		t.Errorf("%s: KEDA reports metric %d active %v, want %d %v (offset lag %d)", d.name, r.lag, r.active, metric, active, offsetLag)
	}
	got := map[string]int32{}
	for v := range d.variants {
		got[v] = d.replicas(v, r)
		if doc := d.docReplicas(v, offsetLag); doc != got[v] {
			t.Errorf("%s (%s): docs/scaling.md's formula gives %d replicas for lag %d, KEDA and the HPA %d", d.name, v, doc, offsetLag, got[v])
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s: replicas %v, want %v", d.name, got, want)
	}
	t.Logf("%s: offset lag %d → KEDA metric %d (target %d), active %v → replicas %v", d.name, offsetLag, r.lag, d.target/1000, r.active, got)
}

// offsetLag is Σ (end − committed) over the topic's partitions, from the broker: the
// lag docs/scaling.md's formula starts from (a partition never committed counts from
// its log start, as offsetResetPolicy earliest does).
func offsetLag(t *testing.T, addr, group, topic string) int64 {
	t.Helper()
	cl, adm := saramaAdmin(t, addr)
	defer adm.Close()
	ps := make([]int32, partitions)
	for i := range ps {
		ps[i] = int32(i)
	}
	offs, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: ps})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, p := range ps {
		end, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		committed := int64(-1)
		if b := offs.GetBlock(topic, p); b != nil {
			committed = b.Offset
		}
		if committed < 0 {
			if committed, err = cl.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
				t.Fatal(err)
			}
		}
		sum += end - committed
	}
	return sum
}

func saramaAdmin(t *testing.T, addr string) (sarama.Client, sarama.ClusterAdmin) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cl, err := sarama.NewClient([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := sarama.NewClusterAdminFromClient(cl)
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	return cl, adm
}

// commitEnd commits the end offsets of topic for group, as a worker does once every job
// it took has finished: the simple (generation -1) commit Kafka accepts for a group with
// no members.
func commitEnd(t *testing.T, addr, group, topic string) {
	t.Helper()
	cl, adm := saramaAdmin(t, addr)
	defer adm.Close()
	coord, err := cl.Coordinator(group)
	if err != nil {
		t.Fatal(err)
	}
	req := &sarama.OffsetCommitRequest{ConsumerGroup: group, ConsumerGroupGeneration: -1, Version: 2, RetentionTime: -1}
	for p := range int32(partitions) {
		end, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		req.AddBlock(topic, p, end, 0, "")
	}
	resp, err := coord.CommitOffset(req)
	if err != nil {
		t.Fatal(err)
	}
	for topic, ps := range resp.Errors {
		for p, kerr := range ps {
			if kerr != sarama.ErrNoError {
				t.Fatalf("commit %s/%d for %s: %v", topic, p, group, kerr)
			}
		}
	}
}

// pipelineArgs are the flags every gonomaly command of a test shares.
func pipelineArgs(addr string) []string {
	return []string{"--brokers", addr, "--partitions", strconv.Itoa(partitions)}
}

func produce(t *testing.T, addr, topic string, n, seed int) {
	t.Helper()
	run(t, append([]string{"produce", "--synthetic", "--topic", topic, "--count", strconv.Itoa(n),
		"--series-count", "40", "--seed", strconv.Itoa(seed)}, pipelineArgs(addr)...)...)
}

func startStage(t *testing.T, addr, stage string, extra ...string) *process {
	t.Helper()
	return start(t, nil, append(append([]string{"process", "--stage", stage}, pipelineArgs(addr)...), extra...)...)
}

// waitLag waits until `gonomaly lag` reports want for group on topic.
func waitLag(t *testing.T, addr, group, topic string, want int64) {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for got := lag(t, addr, group, topic); got != want; got = lag(t, addr, group, topic) {
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s: `gonomaly lag` still %d after 4 minutes, want %d", group, topic, got, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func loadVariants(t *testing.T) map[string]rendered {
	t.Helper()
	return map[string]rendered{
		"base": decodeRendered(t, "deploy/k8s/base"),
		"dev":  decodeRendered(t, "deploy/k8s/overlays/dev"),
		"prod": decodeRendered(t, "deploy/k8s/overlays/prod"),
	}
}

// TestKafkaTriggerMetadata builds KEDA's Kafka scaler from every ScaledObject of every
// kustomization: the metadata and the example Secret's auth parameters parse, and KEDA
// reads every metadata key (a misspelt one fails, shown with "lagTreshold").
func TestKafkaTriggerMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	variants := loadVariants(t)
	addr := startBroker(t)
	for v, r := range variants {
		for name, so := range r.scaledObjects {
			s, unmatched, err := newKafkaScaler(so, addr, r.authParams(t, so))
			if err != nil {
				t.Errorf("%s %s: %v", v, name, err)
				continue
			}
			s.Close(context.Background())
			for _, u := range unmatched {
				t.Errorf("%s %s: %s", v, name, u)
			}
		}
	}

	so := variants["base"].scaledObjects["gonomaly-detect"].DeepCopy()
	meta := so.Spec.Triggers[0].Metadata
	meta["lagTreshold"] = meta["lagThreshold"]
	delete(meta, "lagThreshold")
	s, unmatched, err := newKafkaScaler(so, addr, variants["base"].authParams(t, so))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	target := s.GetMetricSpecForScaling(context.Background())[0].External.Target.AverageValue
	if len(unmatched) != 1 || !strings.Contains(unmatched[0], "lagTreshold") {
		t.Errorf("misspelt lagThreshold: KEDA warned %q, want one warning about lagTreshold (target fell back to %s)", unmatched, target)
	} else {
		t.Logf("misspelt lagThreshold: %s; KEDA's target fell back to its default %s", unmatched[0], target)
	}
}

// TestKafkaScaler runs KEDA's Kafka scaler, configured from our ScaledObjects, against
// real backlogs of the at-least-once pipeline and checks the replica counts that follow
// against docs/scaling.md: scale-out with the backlog, the partition cap, activation,
// and back to the minimum (or zero, for the job queues) once the backlog is consumed.
func TestKafkaScaler(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and the pipeline's processes")
	}
	variants := loadVariants(t)
	addr := startBroker(t)

	// Warm-up: both stages read the first records and commit, so the detect and
	// preprocess groups have offsets on every partition, as a running deploy's do.
	pre := startStage(t, addr, "preprocess")
	det := startStage(t, addr, "detect")
	produce(t, addr, "records", 800, 1)
	waitLag(t, addr, preprocessGroup, recordsTopic, 0)
	waitLag(t, addr, detectGroup, featuresTopic, 0)
	det.stop(t)

	detect := newDeployment(t, addr, "gonomaly-detect", variants)
	preprocess := newDeployment(t, addr, "gonomaly-preprocess", variants)
	train := newDeployment(t, addr, "gonomaly-worker-train", variants)

	t.Run("detect backlog 12000", func(t *testing.T) {
		// Detect is down, preprocess goes on: features grow by one per record.
		produce(t, addr, "records", 12_000, 2)
		waitLag(t, addr, preprocessGroup, recordsTopic, 0)
		waitLag(t, addr, detectGroup, featuresTopic, 12_000)
		// docs/scaling.md: "detect, lag 12,000 → ceil(12,000 / 5,000) = 3 replicas"; the dev
		// overlay caps at 2.
		detect.expect(t, detect.read(t), offsetLag(t, addr, detectGroup, featuresTopic), 12_000, true,
			map[string]int32{"base": 3, "dev": 2, "prod": 3})
		// Preprocess has read everything: no lag, inactive, its minimum.
		preprocess.expect(t, preprocess.read(t), offsetLag(t, addr, preprocessGroup, recordsTopic), 0, false,
			map[string]int32{"base": 1, "dev": 1, "prod": 1})
	})

	t.Run("detect backlog 42000, not capped by KEDA", func(t *testing.T) {
		// KEDA caps the metric only when floor(lag / lagThreshold) exceeds the partitions:
		// 42,000 / 5,000 = 8.4 passes uncapped, the HPA wants 9, maxReplicaCount (8) stops it.
		produce(t, addr, "records", 30_000, 3)
		waitLag(t, addr, preprocessGroup, recordsTopic, 0)
		waitLag(t, addr, detectGroup, featuresTopic, 42_000)
		detect.expect(t, detect.read(t), offsetLag(t, addr, detectGroup, featuresTopic), 42_000, true,
			map[string]int32{"base": 8, "dev": 2, "prod": 8})
	})

	t.Run("detect backlog 45000, capped at the partitions", func(t *testing.T) {
		// 45,000 / 5,000 = 9 > 8 partitions: KEDA reports 8 × 5,000 (allowIdleConsumers false).
		produce(t, addr, "records", 3_000, 4)
		waitLag(t, addr, preprocessGroup, recordsTopic, 0)
		waitLag(t, addr, detectGroup, featuresTopic, 45_000)
		detect.expect(t, detect.read(t), offsetLag(t, addr, detectGroup, featuresTopic), 40_000, true,
			map[string]int32{"base": 8, "dev": 2, "prod": 8})
	})

	t.Run("detect drained", func(t *testing.T) {
		pre.stop(t)
		det := startStage(t, addr, "detect")
		waitLag(t, addr, detectGroup, featuresTopic, 0)
		det.stop(t)
		// Lag 0: inactive, and the minimum: 1, prod 2.
		detect.expect(t, detect.read(t), offsetLag(t, addr, detectGroup, featuresTopic), 0, false,
			map[string]int32{"base": 1, "dev": 1, "prod": 2})
	})

	t.Run("preprocess backlog and drain", func(t *testing.T) {
		produce(t, addr, "records", 15_000, 5)
		waitLag(t, addr, preprocessGroup, recordsTopic, 15_000)
		// ceil(15,000 / 10,000) = 2; activationLagThreshold 0, so any lag is active.
		preprocess.expect(t, preprocess.read(t), offsetLag(t, addr, preprocessGroup, recordsTopic), 15_000, true,
			map[string]int32{"base": 2, "dev": 2, "prod": 2})
		pre := startStage(t, addr, "preprocess")
		waitLag(t, addr, preprocessGroup, recordsTopic, 0)
		pre.stop(t)
		preprocess.expect(t, preprocess.read(t), offsetLag(t, addr, preprocessGroup, recordsTopic), 0, false,
			map[string]int32{"base": 1, "dev": 1, "prod": 1})
	})

	t.Run("job queue from zero and back", func(t *testing.T) {
		// No worker has ever run, so the group gonomaly.workers does not exist. Kafka
		// answers OffsetFetch for an unknown group with offset -1 on every partition (which
		// KEDA handles, below); kfake, and so `gonomaly broker`, answers GROUP_ID_NOT_FOUND
		// and KEDA's scaler fails: a queue that has never had a worker could not wake one.
		if r, err := train.tryRead(); err != nil {
			t.Logf("%s on a group that never existed: KEDA's scaler fails: %v", train.name, err)
		} else if r.lag != 0 || r.active {
			t.Errorf("%s on a group that never existed and an empty queue: metric %d active %v, want 0 false", train.name, r.lag, r.active)
		}
		// A worker of another queue has committed: the group exists, with no offsets on
		// jobs.train, where offsetResetPolicy earliest counts every retained job
		// (scaleToZeroOnInvalidOffset false).
		commitEnd(t, addr, workersGroup, detectQueue)
		train.expect(t, train.read(t), offsetLag(t, addr, workersGroup, trainTopic), 0, false,
			map[string]int32{"base": 0, "dev": 0, "prod": 0})
		produce(t, addr, trainTopic, 5, 6)
		// docs/scaling.md: "worker-train, 5 jobs queued or running → ceil(5 / 2) = 3 replicas".
		train.expect(t, train.read(t), offsetLag(t, addr, workersGroup, trainTopic), 5, true,
			map[string]int32{"base": 3, "dev": 2, "prod": 3})
		produce(t, addr, trainTopic, 35, 7)
		// 40 / 2 = 20 > 8 partitions: capped at 8 × 2.
		train.expect(t, train.read(t), offsetLag(t, addr, workersGroup, trainTopic), 16, true,
			map[string]int32{"base": 8, "dev": 2, "prod": 8})
		// Every job finished and committed: lag 0, inactive → zero after cooldownPeriod.
		commitEnd(t, addr, workersGroup, trainTopic)
		train.expect(t, train.read(t), offsetLag(t, addr, workersGroup, trainTopic), 0, false,
			map[string]int32{"base": 0, "dev": 0, "prod": 0})
	})
}

// TestKafkaScalerExactlyOnce documents what KEDA's scaler sees when the stages run in
// transactions (docs/exactly-once.md, "KEDA"): once detect and ensemble have read
// everything, `gonomaly lag` (records) says 0 but every partition keeps a commit marker
// past the committed offset, so KEDA reports a lag of one per written partition; the
// deploy's activationLagThreshold (8, the partition count) keeps that inactive, and the
// replicas stay at the minimum.
func TestKafkaScalerExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and the pipeline's processes")
	}
	variants := loadVariants(t)
	addr := startBroker(t)
	var stages []*process
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		stages = append(stages, startStage(t, addr, s, "--exactly-once"))
	}
	produce(t, addr, "records", 4_000, 8)
	waitLag(t, addr, preprocessGroup, recordsTopic, 0)
	waitLag(t, addr, detectGroup, featuresTopic, 0)
	waitLag(t, addr, ensembleGroup, scoresTopic, 0)
	for _, p := range stages {
		p.stop(t)
	}

	for _, c := range []struct {
		name, group, topic string
		want               map[string]int32
	}{
		{"gonomaly-detect", detectGroup, featuresTopic, map[string]int32{"base": 1, "dev": 1, "prod": 2}},
		{"gonomaly-ensemble", ensembleGroup, scoresTopic, map[string]int32{"base": 1, "dev": 1, "prod": 1}},
	} {
		d := newDeployment(t, addr, c.name, variants)
		off := offsetLag(t, addr, c.group, c.topic)
		r := d.read(t)
		if off < 1 || off > partitions {
			t.Errorf("%s: offset lag %d after an exactly-once run, want 1..%d (one marker per partition)", c.name, off, partitions)
		}
		d.expect(t, r, off, off, false, c.want)
		t.Logf("%s: `gonomaly lag` %d records; KEDA %d offsets, inactive only because activationLagThreshold is %s",
			c.name, lag(t, addr, c.group, c.topic), r.lag, d.variants["base"].Spec.Triggers[0].Metadata["activationLagThreshold"])
	}
}
