package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
)

// ErrJobTooLarge: the encoded job is more than a queue topic takes (cluster.MaxJobBytes).
var ErrJobTooLarge = errors.New("job too large")

// ErrNotFound is returned for an unknown job, dataset or model id.
var ErrNotFound = errors.New("not found")

// StatusView is the in-memory latest Status of every job, read from jobs.status. Every
// API replica and worker holds one, so any of them answers for any job.
type StatusView struct {
	t *tail

	mu   sync.RWMutex
	byID map[string]Status
	bad  int // undecodable values skipped
	// overwritten holds jobs whose latest record on the topic came after their terminal
	// one and says something else (a cancel request or a progress report racing the
	// job's end, or two ends racing). Every view ignores it, but compaction keeps only the
	// latest record per key, so a view rebuilt after compaction would not: Store.Repair
	// writes the terminal status again.
	overwritten map[string]struct{}
}

func newStatusView(newConsumer NewConsumer, topic string) (*StatusView, error) {
	v := &StatusView{byID: map[string]Status{}, overwritten: map[string]struct{}{}}
	t, err := startTail(newConsumer, topic, v.applyRecord)
	if err != nil {
		return nil, err
	}
	v.t = t
	return v, nil
}

func (v *StatusView) applyRecord(r *kgo.Record) {
	if r.Value == nil { // a tombstone: the job's history was deleted
		v.mu.Lock()
		delete(v.byID, string(r.Key))
		delete(v.overwritten, string(r.Key))
		v.mu.Unlock()
		return
	}
	var st Status
	// A status under another job's key would survive compaction under the wrong key.
	if err := json.Unmarshal(r.Value, &st); err != nil || st.ID == "" || st.ID != string(r.Key) {
		v.mu.Lock()
		v.bad++
		v.mu.Unlock()
		return
	}
	v.Apply(st)
}

// Apply merges a status into the view, as reading it from the topic would. Writers call
// it after the broker acknowledged their write, so they read their own writes at once.
//
// Two rules keep concurrent writers (the API cancelling, a worker reporting progress)
// from undoing each other, and every view applies them in the same partition order, so
// all replicas agree: a terminal state is final, and a cancel request sticks until then.
func (v *StatusView) Apply(st Status) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.byID[st.ID]; ok {
		if old.State.Terminal() {
			if st.State == old.State { // the same end written again, as Repair does
				delete(v.overwritten, st.ID)
			} else {
				v.overwritten[st.ID] = struct{}{}
			}
			return
		}
		if old.CancelRequested {
			st.CancelRequested = true
		}
	}
	v.byID[st.ID] = st
}

// Get returns a job's latest status.
func (v *StatusView) Get(id string) (Status, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	st, ok := v.byID[id]
	return st, ok
}

// Filter selects jobs for List; zero fields match everything.
type Filter struct {
	State State
	Type  Type
	// After is a cursor: the ID of the last job of the previous page.
	After string
	Limit int
}

// Default and largest page size of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// List returns the jobs that match f, newest first, and the cursor of the next page
// ("" on the last page). IDs sort by submission time, so the cursor is an ID.
func (v *StatusView) List(f Filter) ([]Status, string) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	v.mu.RLock()
	out := make([]Status, 0, min(len(v.byID), 4*limit))
	for id, st := range v.byID {
		if (f.State == "" || st.State == f.State) && (f.Type == "" || st.Type == f.Type) && (f.After == "" || id < f.After) {
			out = append(out, st)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(b.ID, a.ID) })
	if len(out) <= limit {
		return out, ""
	}
	return out[:limit], out[limit-1].ID
}

// Undecodable is how many records of the topic the view skipped: not a Status, or one
// under another job's key.
func (v *StatusView) Undecodable() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.bad
}

// Len is the number of jobs in the view.
func (v *StatusView) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.byID)
}

// Sync waits until the view holds every status written before the call.
func (v *StatusView) Sync(ctx context.Context) error { return v.t.sync(ctx) }

func (v *StatusView) close() { v.t.close() }

// StatusRecord is a status as PublishStatus writes it to jobs.status (PublishStatus
// stamps UpdatedAt first). A writer that produces it itself, as an exactly-once job
// worker does inside a transaction, applies it to its view (StatusView.Apply) once the
// write is acknowledged or committed.
func (s *Store) StatusRecord(st Status) (*kgo.Record, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode status of job %s: %w", st.ID, err)
	}
	return &kgo.Record{Topic: s.Topics.Status, Key: []byte(st.ID), Value: b}, nil
}

// PublishStatus writes a status to jobs.status, waits for the broker's ack, and applies
// it to this process's view.
func (s *Store) PublishStatus(ctx context.Context, st Status) error {
	st.UpdatedAt = time.Now().UTC()
	rec, err := s.StatusRecord(st)
	if err != nil {
		return err
	}
	if err := s.Client.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("publish status of job %s: %w", st.ID, err)
	}
	s.Statuses.Apply(st)
	return nil
}

// Repair writes again the terminal status of every job whose latest record on
// jobs.status is one the views ignored (see StatusView.overwritten), so that the
// topic's compacted form agrees with the views. Workers run it now and then; several
// processes repairing the same job only write the same terminal status twice. It
// returns how many statuses it wrote.
func (s *Store) Repair(ctx context.Context) (int, error) {
	s.Statuses.mu.RLock()
	var todo []Status
	for id := range s.Statuses.overwritten {
		todo = append(todo, s.Statuses.byID[id])
	}
	s.Statuses.mu.RUnlock()
	var errs []error
	for _, st := range todo {
		rec, err := s.StatusRecord(st) // as it was: UpdatedAt says when the job ended
		if err == nil {
			err = s.Client.ProduceSync(ctx, rec).FirstErr()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("repair status of job %s: %w", st.ID, err))
			continue
		}
		s.Statuses.Apply(st)
	}
	return len(todo) - len(errs), errors.Join(errs...)
}

// Submit queues a job: it gets an ID (unless it has one) and a submission time, goes to
// its queue topic, and its Queued status to jobs.status; both are acknowledged before
// Submit returns. The caller has validated it (Validate).
func (s *Store) Submit(ctx context.Context, job Job) (Status, error) {
	if job.ID == "" {
		job.ID = NewID("job")
	}
	if job.SubmittedAt.IsZero() {
		job.SubmittedAt = time.Now().UTC()
	}
	queue := s.Topics.Queue(job.Type)
	if queue == "" {
		return Status{}, fmt.Errorf("job %s: unknown type %q", job.ID, job.Type)
	}
	jb, err := json.Marshal(job)
	if err != nil {
		return Status{}, fmt.Errorf("encode job %s: %w", job.ID, err)
	}
	if len(jb) > cluster.MaxJobBytes {
		return Status{}, fmt.Errorf("job %s is %.1f MiB encoded, more than the %d MiB a queue topic takes: upload its rows as a dataset: %w",
			job.ID, float64(len(jb))/(1<<20), cluster.MaxJobBytes>>20, ErrJobTooLarge)
	}
	st := Status{
		ID: job.ID, Type: job.Type, State: Queued, SubmittedAt: job.SubmittedAt,
		UpdatedAt: job.SubmittedAt, Job: job.WithoutRows(),
	}
	srec, err := s.StatusRecord(st)
	if err != nil {
		return Status{}, err
	}
	// The status first in the slice: both are produced together and awaited together.
	if err := s.Client.ProduceSync(ctx, srec, &kgo.Record{Topic: queue, Key: []byte(job.ID), Value: jb}).FirstErr(); err != nil {
		return Status{}, fmt.Errorf("queue job %s: %w", job.ID, err)
	}
	s.Statuses.Apply(st)
	return st, nil
}

// Cancel asks for a job to stop. A queued job is cancelled at once (a worker that takes
// it later skips it); a running one gets CancelRequested, and its worker stops it within
// seconds and records Cancelled. Cancelling a finished job changes nothing and returns
// its status.
func (s *Store) Cancel(ctx context.Context, id string) (Status, error) {
	st, ok := s.Statuses.Get(id)
	if !ok {
		return Status{}, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	if st.State.Terminal() {
		return st, nil
	}
	st.CancelRequested = true
	if st.State == Queued {
		st.State, st.FinishedAt, st.Message = Cancelled, time.Now().UTC(), "cancelled before it started"
	}
	if err := s.PublishStatus(ctx, st); err != nil {
		return Status{}, err
	}
	got, _ := s.Statuses.Get(id)
	return got, nil
}

// WithoutRows returns the job with inline rows replaced by their count, as statuses and
// listings show it.
func (j Job) WithoutRows() Job {
	if len(j.Input.Rows) > 0 {
		j.Input.InlineRows = len(j.Input.Rows)
		j.Input.Rows = nil
	}
	return j
}
