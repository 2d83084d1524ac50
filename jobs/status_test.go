package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
)

func newTestStatusView() *StatusView {
	return &StatusView{byID: map[string]Status{}, overwritten: map[string]struct{}{}}
}

func (v *StatusView) isOverwritten(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.overwritten[id]
	return ok
}

func TestStatusViewRules(t *testing.T) {
	v := newTestStatusView()
	v.Apply(Status{ID: "j", State: Queued})
	v.Apply(Status{ID: "j", State: Running, Progress: 0.2})
	v.Apply(Status{ID: "j", State: Running, CancelRequested: true})
	// A progress report written without the request keeps it.
	v.Apply(Status{ID: "j", State: Running, Progress: 0.5})
	if st, _ := v.Get("j"); st.State != Running || st.Progress != 0.5 || !st.CancelRequested {
		t.Fatalf("a cancel request must stick until the end: %+v", st)
	}
	v.Apply(Status{ID: "j", State: Cancelled})
	if v.isOverwritten("j") {
		t.Fatal("the end is the latest record: nothing to repair")
	}
	// An end is final: a racing progress report, or another end, changes nothing...
	v.Apply(Status{ID: "j", State: Running, Progress: 0.9})
	v.Apply(Status{ID: "j", State: Succeeded})
	if st, _ := v.Get("j"); st.State != Cancelled || !st.CancelRequested || st.Progress != 0 {
		t.Fatalf("an end is final: %+v", st)
	}
	// ...but the topic's latest record disagrees with the view until the end is
	// written again.
	if !v.isOverwritten("j") {
		t.Fatal("a record after the end is not marked for repair")
	}
	v.Apply(Status{ID: "j", State: Cancelled})
	if v.isOverwritten("j") {
		t.Fatal("writing the end again does not clear the mark")
	}

	// From the topic: undecodable values and statuses under another key are skipped
	// and counted, tombstones delete.
	v.applyRecord(&kgo.Record{Key: []byte("k"), Value: []byte("{")})
	v.applyRecord(&kgo.Record{Key: []byte("k"), Value: []byte(`{"id":"other","state":"queued"}`)})
	v.applyRecord(&kgo.Record{Key: []byte("k"), Value: []byte(`{"state":"queued"}`)})
	if _, ok := v.Get("other"); ok || v.Undecodable() != 3 {
		t.Fatalf("bad records: %d counted", v.Undecodable())
	}
	v.applyRecord(&kgo.Record{Key: []byte("k"), Value: []byte(`{"id":"k","state":"queued"}`)})
	if st, ok := v.Get("k"); !ok || st.State != Queued {
		t.Fatalf("a good record: %+v", st)
	}
	v.applyRecord(&kgo.Record{Key: []byte("j"), Value: nil})
	if _, ok := v.Get("j"); ok || v.Len() != 1 {
		t.Fatalf("a tombstone leaves %d jobs", v.Len())
	}
}

func TestStatusViewListsNewestFirstInPages(t *testing.T) {
	v := newTestStatusView()
	var ids []string
	for i := range 25 {
		id := fmt.Sprintf("job_%02d", i)
		ids = append(ids, id)
		st := Status{ID: id, Type: Types[i%4], State: States[i%5]}
		v.Apply(st)
	}
	var got []string
	f := Filter{Limit: 4}
	for pages := 0; ; pages++ {
		page, next := v.List(f)
		if len(page) > 4 || pages > 10 {
			t.Fatalf("page %d has %d jobs", pages, len(page))
		}
		for _, st := range page {
			got = append(got, st.ID)
		}
		if next == "" {
			break
		}
		f.After = next
	}
	if len(got) != 25 || got[0] != "job_24" || got[24] != "job_00" {
		t.Fatalf("listed %v", got)
	}
	page, next := v.List(Filter{Type: Train, State: Queued})
	// i%4 == 3 and i%5 == 0: 15 only.
	if len(page) != 1 || page[0].ID != "job_15" || next != "" {
		t.Fatalf("train and queued: %+v, %q", page, next)
	}
	if page, _ := v.List(Filter{Limit: MaxPageSize + 1}); len(page) != 25 {
		t.Fatalf("a limit over the maximum: %d jobs", len(page))
	}
}

func openTestStore(t *testing.T, brokers []string, topics Topics) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	newConsumer := func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.FetchMaxWait(50 * time.Millisecond)}, opts...)...)
	}
	s, err := Open(ctx, testkit.Client(t, brokers), topics, newConsumer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// lastStatus reads the latest record of a job on jobs.status: what compaction keeps.
func lastStatus(t *testing.T, brokers []string, topic, id string, n int) Status {
	t.Helper()
	var last Status
	for _, r := range testkit.ReadN(t, brokers, topic, n, 10*time.Second) {
		if string(r.Key) == id {
			if err := json.Unmarshal(r.Value, &last); err != nil {
				t.Fatal(err)
			}
		}
	}
	return last
}

// The API cancels a job as its worker records the end: every view keeps the end, and
// Repair makes it the latest record again, so a view rebuilt from the compacted topic
// agrees.
func TestRepairWritesTheEndAgainAfterARacingWrite(t *testing.T) {
	brokers := testkit.Brokers(t)
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	ctx := context.Background()
	if err := c.EnsureLayout(ctx, testkit.Client(t, brokers)); err != nil {
		t.Fatal(err)
	}
	topics := TopicsFor(c)
	api, worker := openTestStore(t, brokers, topics), openTestStore(t, brokers, topics)
	st, err := api.Submit(ctx, Job{Type: Detect, Algorithm: "ecod", Input: Input{Rows: [][]float64{{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	running := st
	running.State, running.Worker = Running, "w"
	if err := worker.PublishStatus(ctx, running); err != nil {
		t.Fatal(err)
	}
	done := running
	done.State, done.FinishedAt, done.Result = Succeeded, time.Now().UTC(), &Summary{Rows: 1}
	if err := worker.PublishStatus(ctx, done); err != nil {
		t.Fatal(err)
	}
	// What Cancel writes when the API's view has not seen the end yet.
	late := running
	late.CancelRequested = true
	if err := api.PublishStatus(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := worker.Statuses.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := api.Statuses.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Store{"api": api, "worker": worker} {
		if got, _ := s.Statuses.Get(st.ID); got.State != Succeeded {
			t.Fatalf("%s view: %+v", name, got)
		}
	}
	if last := lastStatus(t, brokers, topics.Status, st.ID, 4); last.State != Running || !last.CancelRequested {
		t.Fatalf("the latest record should be the late cancel request: %+v", last)
	}

	n, err := worker.Repair(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Repair: %d, %v", n, err)
	}
	if last := lastStatus(t, brokers, topics.Status, st.ID, 5); last.State != Succeeded || last.Result == nil || last.Result.Rows != 1 {
		t.Fatalf("after Repair the latest record is %+v", last)
	}
	if n, err := worker.Repair(ctx); err != nil || n != 0 {
		t.Fatalf("a second Repair wrote %d (%v)", n, err)
	}
	// Every view keeps the end; the API's marks clear as it reads the repair.
	if err := api.Statuses.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if api.Statuses.isOverwritten(st.ID) {
		t.Fatal("the API's view still marks the job after reading the repair")
	}
}

func TestCancelOfAnUnknownJob(t *testing.T) {
	brokers := testkit.Brokers(t)
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 1}
	if err := c.EnsureLayout(context.Background(), testkit.Client(t, brokers)); err != nil {
		t.Fatal(err)
	}
	s := openTestStore(t, brokers, TopicsFor(c))
	if _, err := s.Cancel(context.Background(), "job_nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("cancel of an unknown job: %v", err)
	}
}

// FuzzStatusRecord feeds arbitrary records of jobs.status to a view: nothing panics,
// and a record the view takes is keyed by its own id.
func FuzzStatusRecord(f *testing.F) {
	f.Add("job_1", `{"id":"job_1","type":"detect","state":"running","progress":0.5,"cancel_requested":true}`, true)
	f.Add("job_1", `{"id":"job_1","state":"succeeded","result":{"rows":3,"results_location":{"partition":1,"offsets":[0]}}}`, true)
	f.Add("job_1", `{"id":"job_2","state":"failed","error":{"message":"x"}}`, true)
	f.Add("job_1", ``, false)
	f.Add("job_1", `{"id":"job_1","submitted_at":"yesterday"}`, true)
	f.Fuzz(func(t *testing.T, key, value string, hasValue bool) {
		v := newTestStatusView()
		v.Apply(Status{ID: key, State: Succeeded})
		var val []byte
		if hasValue {
			val = []byte(value)
		}
		before := v.Undecodable()
		v.applyRecord(&kgo.Record{Key: []byte(key), Value: val})
		st, ok := v.Get(key)
		switch {
		case !hasValue && ok:
			t.Fatal("a tombstone did not delete")
		case hasValue && ok && st.State != Succeeded:
			t.Fatalf("an end was overwritten: %+v", st)
		case hasValue && v.Undecodable() == before && !ok:
			t.Fatal("a decodable record lost the job")
		}
		if v.Len() > 1 {
			t.Fatalf("a record under key %q added another job", key)
		}
	})
}
