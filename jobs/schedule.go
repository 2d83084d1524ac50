package jobs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"
)

// Schedule is a periodic job, such as a nightly retraining: Job is submitted once in
// every period of Cron.
type Schedule struct {
	Name string
	// Cron is a standard five-field cron expression ("0 3 * * *"), a descriptor
	// (@daily, @hourly) or @every <duration>; times are UTC unless it starts with
	// CRON_TZ=<zone>.
	Cron string
	Job  Job

	every time.Duration // @every: periods are aligned to multiples of it since the epoch
	spec  cron.Schedule
}

var scheduleName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// LoadSchedules reads a schedules file (see ParseSchedules).
func LoadSchedules(path string) ([]Schedule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("schedules: %w", err)
	}
	return ParseSchedules(data, path)
}

// ParseSchedules reads schedules from YAML:
//
//	schedules:
//	  - name: nightly-retrain
//	    cron: "0 3 * * *"
//	    job: {type: train, algorithm: iforest, model: cpu, input: {dataset: ds_…}}
//
// A job has the fields of POST /api/v1/jobs. Errors name the file, line and field.
func ParseSchedules(data []byte, filename string) ([]Schedule, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	at := func(n *yaml.Node, path, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s: %s", filename, n.Line, path, fmt.Sprintf(format, args...))
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty file: want a top-level \"schedules:\" list", filename)
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, at(doc, "(top level)", "want a mapping with a \"schedules\" list")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if k := doc.Content[i]; k.Value == "schedules" {
			list = doc.Content[i+1]
		} else {
			return nil, at(k, k.Value, "unknown field (known: schedules)")
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		return nil, at(doc, "schedules", "want a list of schedules")
	}
	var out []Schedule
	seen := map[string]bool{}
	for i, item := range list.Content {
		path := fmt.Sprintf("schedules[%d]", i)
		if item.Kind != yaml.MappingNode {
			return nil, at(item, path, "want a mapping with name, cron and job")
		}
		var s Schedule
		var jobNode *yaml.Node
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			switch k.Value {
			case "name", "cron":
				if v.Kind != yaml.ScalarNode {
					return nil, at(v, path+"."+k.Value, "want a string")
				}
				if k.Value == "name" {
					s.Name = v.Value
				} else {
					s.Cron = v.Value
				}
			case "job":
				jobNode = v
			default:
				return nil, at(k, path+"."+k.Value, "unknown field (known: name, cron, job)")
			}
		}
		if !scheduleName.MatchString(s.Name) {
			return nil, at(item, path+".name", "want 1 to 128 letters, digits, '.', '_' or '-', got %q", s.Name)
		}
		if seen[s.Name] {
			return nil, at(item, path+".name", "schedule %q is defined twice", s.Name)
		}
		seen[s.Name] = true
		if err := s.parseCron(); err != nil {
			return nil, at(item, path+".cron", "%v", err)
		}
		if jobNode == nil {
			return nil, at(item, path+".job", "missing: the job to submit in every period")
		}
		job, err := decodeJobNode(jobNode)
		if err != nil {
			return nil, at(jobNode, path+".job", "%v", err)
		}
		if err := Validate(job); err != nil {
			return nil, at(jobNode, path+".job", "%v", err)
		}
		s.Job = job
		out = append(out, s)
	}
	return out, nil
}

// decodeJobNode reads a job written in YAML with the JSON API's field names and rules:
// through JSON, so that unknown fields and wrong types are the same errors POST /jobs
// gives.
func decodeJobNode(n *yaml.Node) (Job, error) {
	var generic any
	if err := n.Decode(&generic); err != nil {
		return Job{}, err
	}
	b, err := json.Marshal(generic)
	if err != nil {
		return Job{}, fmt.Errorf("not representable as JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var job Job
	if err := dec.Decode(&job); err != nil {
		return Job{}, err
	}
	if job.ID != "" || !job.SubmittedAt.IsZero() {
		return Job{}, errors.New("id and submitted_at are set by the scheduler")
	}
	return job, nil
}

func (s *Schedule) parseCron() error {
	if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Cron), "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second {
			return fmt.Errorf("@every wants a duration of at least 1s, got %q", rest)
		}
		s.every = d
		return nil
	}
	spec, err := cron.ParseStandard(s.Cron)
	if err != nil {
		return fmt.Errorf("%q: %v", s.Cron, err)
	}
	s.spec = spec
	return nil
}

// next returns the start of the first period after t.
func (s *Schedule) next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Truncate(s.every).Add(s.every)
	}
	return s.spec.Next(t)
}

// periods returns the starts of the periods in (after, now], oldest first.
func (s *Schedule) periods(after, now time.Time) []time.Time {
	var out []time.Time
	for p := s.next(after); !p.After(now); p = s.next(p) {
		out = append(out, p)
	}
	return out
}

// jobID is the id of a schedule's job for one period. It is the same in every replica,
// so a period whose job exists is never fired again, and it sorts by time like NewID.
func (s *Schedule) jobID(period time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(period.UnixMilli())<<16)
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	binary.BigEndian.PutUint64(b[8:], h.Sum64())
	return "job_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// Scheduler submits every schedule's job once per period. Any number of replicas may
// run one: they join one consumer group on the single-partition jobs.schedule topic, and
// only the member assigned that partition fires. A new owner first catches up with
// jobs.status, then fires the latest period within CatchUp that has no job yet, so a
// period is neither lost in a failover nor fired twice.
type Scheduler struct {
	Store     *Store
	Schedules []Schedule
	Group     string // consumer group, e.g. "gonomaly-scheduler"
	// CatchUp is how far back a new owner looks for a period that was missed (while no
	// replica owned the schedule); default 15 minutes.
	CatchUp time.Duration
	Logger  *slog.Logger

	now    func() time.Time // tests move time
	owning atomic.Bool
}

// Owns reports whether this replica currently fires the schedules.
func (s *Scheduler) Owns() bool { return s.owning.Load() }

// DefaultCatchUp is Scheduler.CatchUp's default.
const DefaultCatchUp = 15 * time.Minute

// Run takes part in the owner election and fires schedules while it owns them, until
// ctx is cancelled.
func (s *Scheduler) Run(ctx context.Context) error {
	if len(s.Schedules) == 0 {
		return nil
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	catchUp := s.CatchUp
	if catchUp <= 0 {
		catchUp = DefaultCatchUp
	}
	now := s.now
	if now == nil {
		now = time.Now
	}
	var (
		mu       sync.Mutex
		stopOwn  context.CancelFunc
		ownerRun sync.WaitGroup
	)
	release := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopOwn != nil {
			stopOwn()
			ownerRun.Wait() // the old owner must stop firing before another is assigned
			stopOwn = nil
			log.Info("scheduler: no longer the owner")
		}
	}
	acquire := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopOwn != nil {
			return
		}
		var octx context.Context
		octx, stopOwn = context.WithCancel(ctx)
		ownerRun.Add(1)
		go func() {
			defer ownerRun.Done()
			log.Info("scheduler: this replica owns the schedules", "schedules", len(s.Schedules))
			s.owning.Store(true)
			defer s.owning.Store(false)
			s.own(octx, log, catchUp, now)
		}()
	}
	cl, err := s.Store.NewConsumer(
		kgo.ConsumerGroup(s.Group),
		kgo.ConsumeTopics(s.Store.Topics.Schedule),
		// The callbacks also run for rebalances that give this member nothing.
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m[s.Store.Topics.Schedule]) > 0 {
				acquire()
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m[s.Store.Topics.Schedule]) > 0 {
				release()
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m[s.Store.Topics.Schedule]) > 0 {
				release()
			}
		}),
	)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	// Nothing is ever produced to jobs.schedule; polling keeps the group membership alive.
	for ctx.Err() == nil {
		if cl.PollFetches(ctx).IsClientClosed() {
			break
		}
	}
	release()
	cl.Close() // leaves the group, so another replica takes over at once
	return nil
}

// own fires due periods until ctx ends. A new owner resumes after the newest period of
// the last CatchUp that has a job, so a failover loses no period; when none has (a first
// start, or no owner for longer than CatchUp) it fires only the latest, not a backlog.
func (s *Scheduler) own(ctx context.Context, log *slog.Logger, catchUp time.Duration, now func() time.Time) {
	if err := s.Store.Statuses.Sync(ctx); err != nil {
		if ctx.Err() == nil {
			log.Error("scheduler: catching up with job statuses", "err", err)
		}
		return
	}
	t := now()
	due := make([][]time.Time, len(s.Schedules))
	for i := range s.Schedules {
		sc := &s.Schedules[i]
		missed := sc.periods(t.Add(-catchUp), t)
		resume := len(missed) - 1 // none fired in the window: only the latest
		for j := len(missed) - 1; j >= 0; j-- {
			if _, ok := s.Store.Statuses.Get(sc.jobID(missed[j])); ok {
				resume = j + 1
				break
			}
		}
		if resume >= 0 {
			due[i] = missed[resume:]
		}
	}
	for {
		wake := t.Add(time.Minute)
		for i := range s.Schedules {
			sc := &s.Schedules[i]
			for _, period := range due[i] {
				s.fire(ctx, log, sc, period)
			}
			wake = earliest(wake, sc.next(t))
		}
		timer := time.NewTimer(max(wake.Sub(now()), 10*time.Millisecond))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		checked := t
		t = now()
		for i := range s.Schedules {
			due[i] = s.Schedules[i].periods(checked, t)
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (s *Scheduler) fire(ctx context.Context, log *slog.Logger, sc *Schedule, period time.Time) {
	id := sc.jobID(period)
	if _, exists := s.Store.Statuses.Get(id); exists {
		return
	}
	job := sc.Job
	job.ID, job.SubmittedBy, job.Schedule = id, "scheduler", sc.Name
	job.SubmittedAt = time.Now().UTC()
	for attempt := 1; ; attempt++ {
		// Not cancelled with the ownership: a submit cut off mid-flight could still land
		// after the next owner has looked for it, and fire the period twice. Release
		// waits for this to finish, so the next owner's catch-up sees the job.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, err := s.Store.Submit(sctx, job)
		cancel()
		if err == nil {
			log.Info("scheduler: submitted", "schedule", sc.Name, "period", period.UTC().Format(time.RFC3339), "job", id)
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("scheduler: submit failed, retrying", "schedule", sc.Name, "job", id, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt)*time.Second, 10*time.Second)):
		}
	}
}
