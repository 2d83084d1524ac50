package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
)

// modelEnv is a broker with the job system's layout and a Store on a plain client.
type modelEnv struct {
	brokers []string
	topics  jobs.Topics
	store   *jobs.Store
}

func newModelEnv(t *testing.T) *modelEnv {
	t.Helper()
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	cl := testkit.Client(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureLayout(ctx, cl); err != nil {
		t.Fatal(err)
	}
	env := &modelEnv{brokers: brokers, topics: jobs.TopicsFor(cfg)}
	env.store = env.open(t, cl)
	return env
}

func (e *modelEnv) newConsumer(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.brokers...)}, opts...)...)
}

// open starts another Store on the same topics, as another process would.
func (e *modelEnv) open(t *testing.T, cl *kgo.Client) *jobs.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := jobs.Open(ctx, cl, e.topics, e.newConsumer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// testModelJob numbers the jobs of testModel: each model comes from a job of its own.
var testModelJob atomic.Int64

func testModel(name string, snapshot []byte) jobs.Model {
	return jobs.Model{
		Name: name, Algorithm: "iforest", Params: detectors.Params{"trees": 10}, Seed: 7,
		Columns: []string{"cpu", "mem"}, Threshold: 0.61, JobID: fmt.Sprintf("job_%s_%d", name, testModelJob.Add(1)),
		Metrics:  map[string]float64{"roc_auc": 0.93, "undefined": math.NaN()},
		Snapshot: snapshot,
	}
}

func TestPublishModelNumbersVersionsAndEveryReaderSeesThem(t *testing.T) {
	env := newModelEnv(t)
	ctx := context.Background()
	watcher, err := jobs.OpenModelView(ctx, env.newConsumer, env.topics.Models)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	changed := watcher.Changed()

	for want := 1; want <= 3; want++ {
		snap := bytes.Repeat([]byte{byte(want)}, 100)
		m, err := env.store.PublishModel(ctx, testModel("cpu", snap))
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != want || m.CreatedAt.IsZero() {
			t.Fatalf("published version %d at %v, want version %d with a creation time", m.Version, m.CreatedAt, want)
		}
		if _, ok := m.Metrics["undefined"]; ok || m.Metrics["roc_auc"] != 0.93 {
			t.Fatalf("metrics %v: NaN ones must be dropped (JSON has no NaN), others kept", m.Metrics)
		}
		// Read your writes: the publishing process holds it at once.
		if got, ok := env.store.Models.Latest("cpu"); !ok || got.Version != want || !bytes.Equal(got.Snapshot, snap) {
			t.Fatalf("publisher's view after version %d: %+v", want, got)
		}
	}
	if _, err := env.store.PublishModel(ctx, testModel("mem", nil)); err != nil {
		t.Fatal(err)
	}

	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("a models-only view was not told about new versions")
	}
	if err := watcher.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m, ok := watcher.Latest("cpu"); !ok || m.Version != 3 || m.Snapshot[0] != 3 {
		t.Fatalf("models-only view's latest cpu: %+v", m)
	}

	// Another process starting now recovers every model from the topic.
	other := env.open(t, testkit.Client(t, env.brokers))
	if got := other.Models.Names(); len(got) != 2 || got[0] != "cpu" || got[1] != "mem" {
		t.Fatalf("a restarted reader knows models %v", got)
	}
	ref, err := jobs.ParseModelRef("cpu@2")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := other.Models.Find(ref); err != nil || m.Snapshot[0] != 2 {
		t.Fatalf("cpu@2 from a restarted reader: %v %+v", err, m)
	}
	if _, err := other.Models.Find(jobs.ModelRef{Name: "cpu", Version: 9}); !errors.Is(err, jobs.ErrNotFound) || !strings.Contains(err.Error(), "latest version is 3") {
		t.Fatalf("a missing version: %v", err)
	}
	if _, err := other.Models.Find(jobs.ModelRef{Name: "disk"}); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("a missing model: %v", err)
	}
	// A new version published by the restarted process continues the numbering.
	if m, err := other.PublishModel(ctx, testModel("cpu", nil)); err != nil || m.Version != 4 {
		t.Fatalf("publish from a second process: version %d, %v", m.Version, err)
	}
}

// A job that runs again after an attempt published its model (and died before recording
// the outcome) gets that version back: no second version of the same job.
func TestPublishModelOncePerJob(t *testing.T) {
	env := newModelEnv(t)
	ctx := context.Background()
	m := testModel("disk", []byte{1})
	first, err := env.store.PublishModel(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	other, err := env.store.PublishModel(ctx, testModel("disk", []byte{2}))
	if err != nil || other.Version != 2 {
		t.Fatalf("another job's model: version %d, %v; want 2", other.Version, err)
	}
	// The re-run, in another process (a new worker), with a refitted snapshot.
	m.Snapshot = []byte{3}
	again, err := env.open(t, testkit.Client(t, env.brokers)).PublishModel(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != first.Version || !bytes.Equal(again.Snapshot, []byte{1}) {
		t.Fatalf("re-run of job %s published version %d (snapshot %v), want version %d as first published", m.JobID, again.Version, again.Snapshot, first.Version)
	}
	if vs := env.store.Models.Versions("disk"); len(vs) != 2 {
		t.Fatalf("%d versions of disk, want 2", len(vs))
	}
	// Without a job id every publication is a new version.
	m.JobID = ""
	for want := 3; want <= 4; want++ {
		if got, err := env.store.PublishModel(ctx, m); err != nil || got.Version != want {
			t.Fatalf("a model without a job id: version %d, %v; want %d", got.Version, err, want)
		}
	}
}

func TestPublishModelConcurrentlyGivesDistinctVersions(t *testing.T) {
	env := newModelEnv(t)
	var wg sync.WaitGroup
	versions := make([]int, 6)
	errs := make([]error, len(versions))
	for i := range versions {
		wg.Go(func() {
			m, err := env.store.PublishModel(context.Background(), testModel("busy", nil))
			versions[i], errs[i] = m.Version, err
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, v := range versions {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[v] || v < 1 || v > len(versions) {
			t.Fatalf("versions %v are not 1..%d each once", versions, len(versions))
		}
		seen[v] = true
	}
}

func TestPublishModelSizes(t *testing.T) {
	ctx := context.Background()
	// 2 MB in JSON: above kgo's default batch limit and the broker's default message
	// limit, below the models topic's. Random, so that compression cannot shrink it.
	big := make([]byte, 1500<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}

	// The Store's client is a plain one: PublishModel brings its own producer.
	env := newModelEnv(t)
	m, err := env.store.PublishModel(ctx, testModel("big", big))
	if err != nil {
		t.Fatalf("a 1.5 MB model: %v", err)
	}
	reader := env.open(t, testkit.Client(t, env.brokers))
	if got, ok := reader.Models.Version("big", m.Version); !ok || !bytes.Equal(got.Snapshot, big) {
		t.Fatal("a 1.5 MB model did not come back whole")
	}

	huge := make([]byte, cluster.MaxModelBytes*3/4+1) // base64 makes it larger than the limit
	if _, err := env.store.PublishModel(ctx, testModel("huge", huge)); !errors.Is(err, jobs.ErrModelTooLarge) ||
		!strings.Contains(err.Error(), "fewer rows") || !strings.Contains(err.Error(), "MB") {
		t.Fatalf("a model over the limit: %v", err)
	}

	// A topic left at the broker's 1 MB limit refuses it, and the error says what to set.
	small := env.topics
	small.Models += "-small"
	if _, err := kadm.NewClient(testkit.Client(t, env.brokers)).CreateTopic(ctx, 1, -1, map[string]*string{"max.message.bytes": kadm.StringPtr("1048576")}, small.Models); err != nil {
		t.Fatal(err)
	}
	env.topics = small
	limited := env.open(t, testkit.Client(t, env.brokers))
	if _, err := limited.PublishModel(ctx, testModel("big", big)); err == nil || !strings.Contains(err.Error(), "max.message.bytes") || jobs.IsTransient(err) {
		t.Fatalf("publishing 2 MB to a topic that takes 1 MB: %v", err)
	}
}

func TestPublishModelRejects(t *testing.T) {
	env := newModelEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		edit func(*jobs.Model)
		want string
	}{
		{"empty name", func(m *jobs.Model) { m.Name = "" }, "empty"},
		{"bad name", func(m *jobs.Model) { m.Name = "a/b" }, `'/'`},
		{"NaN threshold", func(m *jobs.Model) { m.Threshold = math.NaN() }, "threshold"},
	} {
		m := testModel("ok", nil)
		tc.edit(&m)
		if _, err := env.store.PublishModel(ctx, m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %s", tc.name, err, tc.want)
		}
	}
	if names := env.store.Models.Names(); len(names) != 0 {
		t.Fatalf("rejected models were published: %v", names)
	}
}

func TestParseModelRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want jobs.ModelRef
		err  string
	}{
		{"cpu-iforest", jobs.ModelRef{Name: "cpu-iforest"}, ""},
		{"cpu.v2_x@3", jobs.ModelRef{Name: "cpu.v2_x", Version: 3}, ""},
		{"", jobs.ModelRef{}, "empty"},
		{"@3", jobs.ModelRef{}, "empty"},
		{"cpu@", jobs.ModelRef{}, "whole number"},
		{"cpu@0", jobs.ModelRef{}, "from 1"},
		{"cpu@-1", jobs.ModelRef{}, "from 1"},
		{"cpu@+1", jobs.ModelRef{}, "from 1"},
		{"cpu@1.5", jobs.ModelRef{}, "whole number"},
		{"cpu@1@2", jobs.ModelRef{}, "whole number"},
		{"c pu", jobs.ModelRef{}, `' '`},
		{strings.Repeat("m", 65), jobs.ModelRef{}, "longer than 64"},
	} {
		got, err := jobs.ParseModelRef(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseModelRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if s := got.String(); tc.want.Version > 0 && s != tc.in {
				t.Errorf("%+v prints as %q, want %q", got, s, tc.in)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseModelRef(%q) = %+v, %v; want an error mentioning %q", tc.in, got, err, tc.err)
		}
	}
}

// FuzzParseModelRef: any string parses to a valid name and version or is refused with
// an error, never a panic; what parses prints back to an equivalent reference.
func FuzzParseModelRef(f *testing.F) {
	for _, s := range []string{"cpu", "cpu@3", "a.b_c-d@12", "@", "x@0", "x@99999999999999999999", "é@1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := jobs.ParseModelRef(s)
		if err != nil {
			return
		}
		if jobs.CheckModelName(ref.Name) != nil || ref.Version < 0 {
			t.Fatalf("%q parsed to an invalid %+v", s, ref)
		}
		text := ref.Name
		if ref.Version > 0 {
			text = ref.String()
		}
		again, err := jobs.ParseModelRef(text)
		if err != nil || again != ref {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, ref, text, again, err)
		}
	})
}
