// Package jobs is gonomaly's queue for heavy work on Kafka: batch detection, ensembles,
// preprocessing and model training. The API (or the Go client, or the scheduler)
// submits a Job to the topic of its type (jobs.detect, jobs.ensemble, jobs.preprocess,
// jobs.train); worker groups run it; every state change goes to the compacted
// jobs.status topic, which every API replica and worker reads into memory. Uploaded
// datasets are stored chunked in the datasets topic (described in datasets.index), a
// job's per-row results chunked in jobs.results, and trained models in the compacted
// models topic.
//
// The types here are the wire format of those topics and of the HTTP API, so they are
// JSON with the same field names everywhere.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// Type is what a job does; each type has its own queue topic.
type Type string

const (
	// Detect fits a batch detector (or loads a trained model) and scores every row.
	Detect Type = "detect"
	// Ensemble scores every row with several detectors and combines their calibrated scores.
	Ensemble Type = "ensemble"
	// Preprocess scales a dataset's columns and stores the result as a new dataset.
	Preprocess Type = "preprocess"
	// Train fits a detector and publishes it as a new version of a named model.
	Train Type = "train"
)

// Types lists every job type, in the order queues are documented.
var Types = []Type{Detect, Ensemble, Preprocess, Train}

// ParseType checks a job type named by a user.
func ParseType(s string) (Type, error) {
	for _, t := range Types {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown job type %q (known: detect, ensemble, preprocess, train)", s)
}

// State is where a job is in its life.
type State string

const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// States lists every state.
var States = []State{Queued, Running, Succeeded, Failed, Cancelled}

// ParseState checks a job state named by a user.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown job state %q (known: queued, running, succeeded, failed, cancelled)", s)
}

// Terminal reports a state a job never leaves.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Defaults of a Job's limits.
const (
	DefaultTimeout       = time.Hour
	DefaultMaxAttempts   = 3
	DefaultContamination = 0.1 // PyOD's default: the top 10 % of scores are labelled anomalies
	MaxInlineRows        = 10_000
)

// Job is a unit of heavy work: the value on its queue topic, keyed by ID.
type Job struct {
	ID   string `json:"id"`
	Type Type   `json:"type"`
	// Input is the data the job works on.
	Input Input `json:"input"`

	// Algorithm and Params name the detector of a detect or train job (registry names,
	// as in GET /detectors).
	Algorithm string           `json:"algorithm,omitempty"`
	Params    detectors.Params `json:"params,omitempty"`
	// Model: for detect, score with this trained model ("name" for its latest version or
	// "name@3") instead of fitting Algorithm; for train, the name to publish under.
	Model string `json:"model,omitempty"`
	// Detectors and Combiner make an ensemble job (combiner: mean, max, median,
	// weighted_mean, aom, vote; default mean).
	Detectors []DetectorSpec `json:"detectors,omitempty"`
	Combiner  string         `json:"combiner,omitempty"`
	// Scaling is a preprocess job's column scaling: standard, robust or minmax.
	Scaling string `json:"scaling,omitempty"`
	// Contamination is the fraction of rows labelled anomalous (the highest scores);
	// zero takes DefaultContamination.
	Contamination float64 `json:"contamination,omitempty"`
	// Seed seeds randomised detectors; the same job always gives the same scores.
	Seed uint64 `json:"seed,omitempty"`

	// Timeout bounds one attempt; zero takes DefaultTimeout.
	Timeout Duration `json:"timeout,omitzero"`
	// MaxAttempts bounds tries of a job that fails transiently; zero takes DefaultMaxAttempts.
	MaxAttempts int `json:"max_attempts,omitempty"`

	SubmittedAt time.Time `json:"submitted_at"`
	// SubmittedBy is the API key's name, or "scheduler", or empty when auth is off.
	SubmittedBy string `json:"submitted_by,omitempty"`
	// Schedule names the periodic schedule that fired this job.
	Schedule string `json:"schedule,omitempty"`
}

// DetectorSpec is one member of an ensemble job.
type DetectorSpec struct {
	Algorithm string           `json:"algorithm"`
	Params    detectors.Params `json:"params,omitempty"`
	Weight    float64          `json:"weight,omitempty"` // weighted_mean only; zero counts as 1
}

// Input says where a job's rows come from: exactly one of Dataset, Rows or Records.
type Input struct {
	// Dataset is the id of an uploaded dataset (POST /datasets).
	Dataset string `json:"dataset,omitempty"`
	// Rows are inline rows (at most MaxInlineRows), for small jobs.
	Rows [][]float64 `json:"rows,omitempty"`
	// Columns names the columns of inline rows, or picks a subset of a dataset's columns
	// or a record range's value names; empty means all.
	Columns []string `json:"columns,omitempty"`
	// Records is a time range of the records topic for some series.
	Records *RecordRange `json:"records,omitempty"`
	// InlineRows is how many inline rows the job had; statuses carry the count instead
	// of the rows.
	InlineRows int `json:"inline_rows,omitempty"`
}

// RecordRange selects records of the records topic: those of the given series with a
// timestamp in [From, To). Each record is a row of its values (Input.Columns, or every
// value name seen, sorted).
type RecordRange struct {
	Series []string  `json:"series"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
}

// Status is a job's state: the value on jobs.status, keyed by job ID, compacted so that
// the latest state of every job survives.
type Status struct {
	ID    string `json:"id"`
	Type  Type   `json:"type"`
	State State  `json:"state"`
	// Progress is the fraction done, in [0, 1], while running.
	Progress float64 `json:"progress"`
	// Message says what the job is doing, for people.
	Message string `json:"message,omitempty"`
	Error   *Error `json:"error,omitempty"`
	// Attempt counts tries: 1 on the first run.
	Attempt int    `json:"attempt,omitempty"`
	Worker  string `json:"worker,omitempty"`
	// CancelRequested is set by DELETE /jobs/{id}; the worker running the job stops it
	// and records Cancelled.
	CancelRequested bool `json:"cancel_requested,omitempty"`

	SubmittedAt time.Time `json:"submitted_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`

	Result *Summary `json:"result,omitempty"`
	// Job is the request, with inline rows replaced by their count.
	Job Job `json:"job"`
}

// Error is why a job failed.
type Error struct {
	Message string `json:"message"`
	// Transient failures (Kafka unavailable, a worker lost) are retried with backoff;
	// the others (bad data, bad parameters) are not.
	Transient bool `json:"transient,omitempty"`
}

// Summary is what a finished job produced.
type Summary struct {
	Rows    int `json:"rows"`
	Columns int `json:"columns"`
	// Anomalies is how many rows were labelled anomalous, with Threshold the lowest
	// score so labelled.
	Anomalies int     `json:"anomalies"`
	Threshold float64 `json:"threshold,omitempty"`
	// Model is the model a train job published, or the one a detect job used.
	Model *ModelRef `json:"model,omitempty"`
	// Dataset is the dataset a preprocess job wrote.
	Dataset string `json:"dataset,omitempty"`
	// Metrics are numbers about the run: fit_seconds, score_seconds, and roc_auc when
	// the input had labels.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Results locates the per-row results in the jobs.results topic.
	Results *ResultsLocation `json:"results_location,omitempty"`
}

// ModelRef names one version of a model.
type ModelRef struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

func (r ModelRef) String() string { return fmt.Sprintf("%s@%d", r.Name, r.Version) }

// ResultsLocation is where a job's per-row results are: chunks keyed by the job ID in
// one partition of jobs.results, at these offsets, ChunkRows rows each but the last.
type ResultsLocation struct {
	Partition int32   `json:"partition"`
	Offsets   []int64 `json:"offsets"`
	ChunkRows int     `json:"chunk_rows"`
	Rows      int     `json:"rows"`
}

// ResultRow is one row's outcome, as GET /jobs/{id}/results returns it.
type ResultRow struct {
	Row       int     `json:"row"`
	Score     float64 `json:"score"`
	IsAnomaly bool    `json:"is_anomaly"`
}

// Dataset describes an uploaded dataset: the value on datasets.index, keyed by ID. Its
// rows are chunks keyed by ID in one partition of the datasets topic, at Offsets.
type Dataset struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Format  string   `json:"format"` // csv, ndjson, or matrix (written by a preprocess job)
	Rows    int      `json:"rows"`
	Columns []string `json:"columns"`
	// Labels is true when the upload had a label column (named "label", as in the ODDS
	// files); it is kept apart from the features, and jobs report ROC-AUC against it.
	Labels bool `json:"labels,omitempty"`
	// Hash is "sha256:" and the hex digest of the uploaded bytes.
	Hash      string    `json:"hash"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at"`
	// Source is the job that wrote the dataset (preprocess), if any.
	Source    string  `json:"source,omitempty"`
	Partition int32   `json:"partition"`
	Offsets   []int64 `json:"offsets"`
}

// Model is one version of a trained model: the value on the compacted models topic,
// keyed by name.
type Model struct {
	Name      string           `json:"name"`
	Version   int              `json:"version"`
	Algorithm string           `json:"algorithm"`
	Params    detectors.Params `json:"params"`
	Seed      uint64           `json:"seed"`
	// Columns are the feature names, in the order the model reads them.
	Columns  []string           `json:"columns"`
	Training Training           `json:"training"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	JobID    string             `json:"job_id,omitempty"`
	// Threshold is the training score at the contamination quantile: the streaming
	// detect stage and detect jobs label scores above it.
	Threshold float64   `json:"threshold"`
	CreatedAt time.Time `json:"created_at"`
	// Snapshot is the fitted detector (detectors.Persistent's MarshalBinary).
	Snapshot []byte `json:"snapshot,omitempty"`
}

// Training says what a model was fitted on.
type Training struct {
	Dataset string `json:"dataset,omitempty"`
	Hash    string `json:"hash,omitempty"` // the dataset's content hash
	Rows    int    `json:"rows"`
}

// Duration is a time.Duration that reads and writes as a Go duration string ("90s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"90s\" or \"1h\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit such as \"90s\" or \"1h\"", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// NewID returns a new id with the given prefix ("job", "ds"): 26 base32 characters of
// a millisecond timestamp and 80 random bits, so ids sort by creation time.
func NewID(prefix string) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand never fails on Linux
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// Topics names the topics of the job system.
type Topics struct {
	Detect, Ensemble, Preprocess, Train string // the queues
	Status                              string // compacted Status by job ID
	Results                             string // result chunks by job ID
	Datasets                            string // dataset chunks by dataset ID
	DatasetIndex                        string // compacted Dataset by dataset ID
	Models                              string // compacted Model by name
	Schedule                            string // one partition: its consumer group elects the scheduler
	Records                             string // the pipeline's records, for RecordRange inputs
}

// TopicsFor names the topics of a cluster configuration (cluster.Layout creates them).
func TopicsFor(c cluster.Config) Topics {
	c = c.WithDefaults()
	return Topics{
		Detect: c.Topic("jobs.detect"), Ensemble: c.Topic("jobs.ensemble"),
		Preprocess: c.Topic("jobs.preprocess"), Train: c.Topic("jobs.train"),
		Status: c.Topic("jobs.status"), Results: c.Topic("jobs.results"),
		Datasets: c.Topic("datasets"), DatasetIndex: c.Topic("datasets.index"),
		Models: c.Topic("models"), Schedule: c.Topic("jobs.schedule"),
		Records: c.Topic("records"),
	}
}

// Queue is the topic of a job type's queue.
func (t Topics) Queue(typ Type) string {
	switch typ {
	case Detect:
		return t.Detect
	case Ensemble:
		return t.Ensemble
	case Preprocess:
		return t.Preprocess
	case Train:
		return t.Train
	}
	return ""
}

// Store is the job system's Kafka side as the API and the workers use it: one client
// that produces, and in-memory views of the compacted topics kept up to date by their
// own consumers. Open builds it; its methods live beside the view they use.
type Store struct {
	Client *kgo.Client
	Topics Topics
	// NewConsumer builds the consumers of reads that are not views: a dataset's chunks, a
	// job's results, a range of records.
	NewConsumer NewConsumer

	Statuses *StatusView
	Datasets *DatasetView
	Models   *ModelView
}

// Run is one attempt at a job, as an executor sees it.
type Run struct {
	Job     Job
	Store   *Store
	Attempt int // 1 on the first try
	// Progress reports the fraction done and what is happening; the worker publishes it
	// to jobs.status at most a few times a second. Never nil.
	Progress func(fraction float64, message string)
}

// Executor runs one job type: it reads the job's input, does the work, stores what it
// produced (results, a dataset, a model) and summarises it. It must return soon after
// ctx is cancelled (a cancel request or the job's timeout) with ctx's error.
type Executor func(ctx context.Context, run Run) (Summary, error)

// Transient marks err as worth retrying (the broker unavailable, a timeout of a
// dependency); the worker retries it with backoff up to the job's MaxAttempts. Errors
// not so marked (bad data, bad parameters) fail the job at once.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// IsTransient reports an error marked by Transient.
func IsTransient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

type transientError struct{ err error }

func (t transientError) Error() string { return t.err.Error() }
func (t transientError) Unwrap() error { return t.err }
