package jobs

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
)

const goodSchedules = `
schedules:
  - name: nightly-retrain
    cron: "0 3 * * *"
    job:
      type: train
      algorithm: iforest
      model: cpu
      input: {rows: [[1, 2], [2, 3], [3, 4]]}
  - name: every-minute
    cron: "@every 1m"
    job: {type: detect, algorithm: hbos, input: {rows: [[1], [2], [3]]}}
`

func TestParseSchedules(t *testing.T) {
	got, err := ParseSchedules([]byte(goodSchedules), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "nightly-retrain" || got[0].Job.Type != Train || got[0].Job.Model != "cpu" ||
		len(got[0].Job.Input.Rows) != 3 || got[1].every != time.Minute {
		t.Fatalf("parsed %+v", got)
	}
	day := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if p := got[0].periods(day.Add(-24*time.Hour), day); len(p) != 1 || !p[0].Equal(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)) {
		t.Fatalf("nightly periods in the day before %s: %v", day, p)
	}
	if p := got[0].periods(day.Add(-time.Hour), day); len(p) != 0 {
		t.Fatalf("periods found in an hour without 03:00: %v", p)
	}
	if p := got[1].periods(day.Add(-5*time.Minute), day); len(p) != 5 || !p[4].Equal(day) {
		t.Fatalf("@every 1m periods in (09:55, 10:00]: %v", p)
	}
	if n := got[1].next(day.Add(90 * time.Second)); !n.Equal(day.Add(2 * time.Minute)) {
		t.Fatalf("@every 1m: next after 10:01:30 is %s, want 10:02:00 (aligned)", n)
	}
	a, b := got[0].jobID(day), got[0].jobID(day.Add(time.Hour))
	if a == b || a != got[0].jobID(day) || got[1].jobID(day) == a || !(a < b) {
		t.Fatalf("job ids must be per schedule and period, stable and time-ordered: %s %s", a, b)
	}
}

func TestParseSchedulesErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"", "empty file"},
		{"jobs: []", `s.yaml:1: jobs: unknown field`},
		{"schedules: {}", "want a list"},
		{"schedules:\n  - name: a\n    cron: '0 3 * * *'\n    jobb: {}\n", "s.yaml:4: schedules[0].jobb: unknown field"},
		{"schedules:\n  - name: 'bad name'\n    cron: '@daily'\n    job: {}\n", "schedules[0].name"},
		{"schedules:\n  - name: a\n    cron: '61 * * * *'\n    job: {}\n", "schedules[0].cron"},
		{"schedules:\n  - name: a\n    cron: '@every 10ms'\n    job: {}\n", "at least 1s"},
		{"schedules:\n  - name: a\n    cron: '@daily'\n", "schedules[0].job: missing"},
		{"schedules:\n  - name: a\n    cron: '@daily'\n    job: {type: detect, algoritm: iforest}\n", `unknown field "algoritm"`},
		{"schedules:\n  - name: a\n    cron: '@daily'\n    job: {type: detect, algorithm: nope, input: {rows: [[1]]}}\n", "s.yaml:4: schedules[0].job"},
		{"schedules:\n  - name: a\n    cron: '@daily'\n    job: {type: detect, algorithm: hbos, input: {rows: [[1]]}}\n  - name: a\n    cron: '@daily'\n    job: {type: detect, algorithm: hbos, input: {rows: [[1]]}}\n", "defined twice"},
	} {
		_, err := ParseSchedules([]byte(tc.yaml), "s.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

// TestSchedulersFireEachPeriodOnce runs two schedulers (two API replicas) against a real
// broker, stops the owner mid-way, and reads the queue topic: every period between the
// first and the last has exactly one job.
func TestSchedulersFireEachPeriodOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~7 s of wall time")
	}
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	producer := testkit.Client(t, brokers)
	if err := cfg.EnsureLayout(ctx, producer); err != nil {
		t.Fatal(err)
	}
	newConsumer := func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	}
	scheds, err := ParseSchedules([]byte("schedules:\n  - name: tick\n    cron: '@every 1s'\n    job: {type: detect, algorithm: hbos, input: {rows: [[1], [2], [3]]}}\n"), "tick.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var runners [2]*Scheduler
	var stops [2]context.CancelFunc
	var dones [2]chan error
	for i := range runners {
		store, err := Open(ctx, producer, TopicsFor(cfg), newConsumer)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		runners[i] = &Scheduler{Store: store, Schedules: scheds, Group: cfg.Prefix + "scheduler", Logger: slog.New(slog.NewTextHandler(tlog{t}, nil)).With("replica", i)}
		var rctx context.Context
		rctx, stops[i] = context.WithCancel(ctx)
		dones[i] = make(chan error, 1)
		go func(s *Scheduler) { dones[i] <- s.Run(rctx) }(runners[i])
	}
	owner := func() int {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for i, r := range runners {
				if r.Owns() {
					return i
				}
			}
		}
		t.Fatal("no scheduler became the owner within 20 s")
		return -1
	}
	first := owner()
	time.Sleep(3200 * time.Millisecond)
	stops[first]()
	if err := <-dones[first]; err != nil {
		t.Fatal(err)
	}
	second := owner()
	if second == first {
		t.Fatal("the stopped scheduler still owns the schedules")
	}
	time.Sleep(3200 * time.Millisecond)
	stops[second]()
	<-dones[second]

	// Every job the schedulers queued, from the queue topic itself.
	n := int(testkit.EndOffsets(t, brokers, cfg.Topic("jobs.detect")))
	if n < 4 {
		t.Fatalf("only %d jobs queued in ~6.4 s of a 1 s schedule", n)
	}
	periods := map[int64]int{}
	for _, r := range testkit.ReadN(t, brokers, cfg.Topic("jobs.detect"), n, 10*time.Second) {
		var j Job
		if err := json.Unmarshal(r.Value, &j); err != nil {
			t.Fatal(err)
		}
		if j.Schedule != "tick" || j.SubmittedBy != "scheduler" || j.ID != string(r.Key) {
			t.Fatalf("job %+v", j)
		}
		var period int64 = -1
		for sec := time.Now().Add(-time.Minute).Unix(); sec <= time.Now().Unix()+1; sec++ {
			if scheds[0].jobID(time.Unix(sec, 0)) == j.ID {
				period = sec
			}
		}
		if period < 0 {
			t.Fatalf("job id %s is not the id of a 1 s period of the last minute", j.ID)
		}
		periods[period]++
	}
	lo, hi := int64(1<<62), int64(0)
	for p, count := range periods {
		if count != 1 {
			t.Errorf("period %s fired %d times", time.Unix(p, 0).UTC().Format(time.TimeOnly), count)
		}
		lo, hi = min(lo, p), max(hi, p)
	}
	if int(hi-lo+1) != len(periods) {
		t.Errorf("periods %d..%d: %d fired, want every one (a period was lost in the failover)", lo, hi, len(periods))
	}
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }
