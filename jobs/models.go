package jobs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// MaxModelNameLen bounds a model name: it is a Kafka key, a URL segment and a metric label.
const MaxModelNameLen = 64

// modelRecordOverhead is room left in MaxModelBytes for the record batch's own framing
// (batch header, record header, key), so that a value that passes the check also fits
// the broker's max.message.bytes.
const modelRecordOverhead = 4 << 10

// ErrModelTooLarge: the encoded model is more than the models topic takes. Training on
// fewer rows, or with a smaller max_samples or fewer trees, makes it smaller.
var ErrModelTooLarge = errors.New("model too large")

// CheckModelName checks the name of a model: 1 to MaxModelNameLen characters of a-z,
// A-Z, 0-9, '.', '_' and '-' (the characters of pipeline names and topic names).
func CheckModelName(name string) error {
	if name == "" {
		return errors.New("model name is empty")
	}
	if len(name) > MaxModelNameLen {
		return fmt.Errorf("model name %.20q… is longer than %d characters", name, MaxModelNameLen)
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("model name %q has %q; use a-z, A-Z, 0-9, '.', '_' and '-'", name, c)
		}
	}
	return nil
}

// ParseModelRef reads how a detect job names a model: "name" for its latest version
// (Version 0) or "name@3" for version 3.
func ParseModelRef(s string) (ModelRef, error) {
	name, ver, hasVersion := strings.Cut(s, "@")
	if err := CheckModelName(name); err != nil {
		return ModelRef{}, err
	}
	if !hasVersion {
		return ModelRef{Name: name}, nil
	}
	v, err := strconv.Atoi(ver)
	if err != nil || v < 1 || strings.HasPrefix(ver, "+") {
		return ModelRef{}, fmt.Errorf("model %q: version %q after '@' must be a whole number from 1 (or leave \"@…\" out for the latest)", s, ver)
	}
	return ModelRef{Name: name, Version: v}, nil
}

// Find returns the version of a model a reference names (its latest when Version is 0).
// The error says whether the model or only the version is missing.
func (v *ModelView) Find(ref ModelRef) (Model, error) {
	if ref.Version == 0 {
		if m, ok := v.Latest(ref.Name); ok {
			return m, nil
		}
		return Model{}, fmt.Errorf("model %s: %w (no version has been trained; a train job publishes one)", ref.Name, ErrNotFound)
	}
	if m, ok := v.Version(ref.Name, ref.Version); ok {
		return m, nil
	}
	if latest, ok := v.Latest(ref.Name); ok {
		return Model{}, fmt.Errorf("model %s version %d: %w (the latest version is %d)", ref.Name, ref.Version, ErrNotFound, latest.Version)
	}
	return Model{}, fmt.Errorf("model %s: %w (no version has been trained; a train job publishes one)", ref.Name, ErrNotFound)
}

// WithoutSnapshot returns the model without its fitted state, as listings show it: the
// snapshot can be megabytes and means nothing to people.
func (m Model) WithoutSnapshot() Model {
	m.Snapshot = nil
	return m
}

// OpenModelView starts a view of the models topic alone, for a process that uses
// trained models but no jobs (the streaming detect stage), and waits until it holds
// every version published before the call. Close stops it. Its consumer must accept
// records of cluster.MaxModelBytes (kgo's default fetch limits do).
func OpenModelView(ctx context.Context, newConsumer NewConsumer, topic string) (*ModelView, error) {
	v, err := newModelView(newConsumer, topic)
	if err != nil {
		return nil, err
	}
	if err := v.Sync(ctx); err != nil {
		v.close()
		return nil, fmt.Errorf("reading trained models from %s: %w", topic, err)
	}
	return v, nil
}

// Close stops a view opened by OpenModelView. A Store's view is closed by Store.Close.
func (v *ModelView) Close() { v.close() }

// publishMu serialises PublishModel within a process, so that two train jobs of one
// worker cannot take the same version number.
var publishMu sync.Mutex

// PublishModel publishes m as the next version of its model: version = latest + 1 (the
// view synced first), CreatedAt now; the value goes to the models topic keyed by the
// name, is acknowledged, and is applied to this process's view before PublishModel
// returns the model as published.
//
// A model is one record of up to cluster.MaxModelBytes, larger than kgo's default batch
// limit of 1 MB, so PublishModel produces through a client of its own, built by
// NewConsumer with kgo.ProducerBatchMaxBytes(cluster.MaxModelBytes). The Store's shared
// client must keep the default: with a larger batch limit it would pack small records
// into batches over the 1 MB max.message.bytes of the other topics, which the broker
// refuses. A model whose encoding is larger than the models topic takes is an error
// wrapping ErrModelTooLarge.
//
// A job publishes a model once: when a version of the name already carries m.JobID (an
// attempt that died after publishing, before its outcome was recorded, and the job ran
// again), that version is returned and nothing is written, so a re-run job leaves no
// second version behind. Models without a JobID are always published.
//
// Versions are unique within a process; publishers in different processes that pick the
// same number are detected afterwards (the later record wins in every view), and the
// one that lost publishes again under the next number. Kafka failures are marked
// Transient.
func (s *Store) PublishModel(ctx context.Context, m Model) (Model, error) {
	if err := CheckModelName(m.Name); err != nil {
		return Model{}, err
	}
	if !finite(m.Threshold) {
		return Model{}, fmt.Errorf("model %s: threshold %v is not a finite number", m.Name, m.Threshold)
	}
	m.Metrics = maps.Clone(m.Metrics) // the caller's map stays as it was
	for k, v := range m.Metrics {
		if !finite(v) { // JSON has no NaN; an undefined metric is left out, not encoded wrong
			delete(m.Metrics, k)
		}
	}
	limit := cluster.MaxModelBytes - modelRecordOverhead
	if n := base64.StdEncoding.EncodedLen(len(m.Snapshot)); n > limit { // JSON carries the snapshot in base64
		return Model{}, tooLarge(m.Name, n, limit)
	}
	publishMu.Lock()
	defer publishMu.Unlock()
	producer, err := s.NewConsumer(kgo.ProducerBatchMaxBytes(cluster.MaxModelBytes), kgo.ProducerLinger(0))
	if err != nil {
		return Model{}, fmt.Errorf("publish model %s: producer: %w", m.Name, err)
	}
	defer producer.Close()
	const attempts = 5
	for range attempts {
		if err := s.Models.Sync(ctx); err != nil {
			return Model{}, Transient(err)
		}
		if prior, ok := s.publishedBy(m.Name, m.JobID); ok {
			return prior, nil
		}
		m.Version = 1
		if latest, ok := s.Models.Latest(m.Name); ok {
			m.Version = latest.Version + 1
		}
		m.CreatedAt = time.Now().UTC()
		value, err := json.Marshal(m)
		if err != nil {
			return Model{}, fmt.Errorf("encode model %s: %w", m.Name, err)
		}
		if len(value) > limit {
			return Model{}, tooLarge(m.Name, len(value), limit)
		}
		rec := &kgo.Record{Topic: s.Topics.Models, Key: []byte(m.Name), Value: value}
		if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
			if errors.Is(err, kerr.MessageTooLarge) {
				return Model{}, fmt.Errorf("publish model %s (%d bytes): the broker refuses records this large: the topic %s needs max.message.bytes ≥ %d (cluster.Layout sets it): %w", m.Name, len(value), s.Topics.Models, cluster.MaxModelBytes, err)
			}
			return Model{}, Transient(fmt.Errorf("publish model %s version %d: %w", m.Name, m.Version, err))
		}
		// Read back: a publisher elsewhere that took the same number after us has
		// replaced ours in every view, and we take the next one.
		if err := s.Models.Sync(ctx); err != nil {
			return Model{}, Transient(err)
		}
		held, ok := s.Models.Version(m.Name, m.Version)
		if !ok || (held.CreatedAt.Equal(m.CreatedAt) && held.JobID == m.JobID) {
			s.Models.Apply(m)
			return m, nil
		}
	}
	return Model{}, Transient(fmt.Errorf("publish model %s: %d other publishers took the version numbers first", m.Name, attempts))
}

// publishedBy finds the version of a model that a job published, if any.
func (s *Store) publishedBy(name, jobID string) (Model, bool) {
	if jobID == "" {
		return Model{}, false
	}
	for _, m := range s.Models.Versions(name) {
		if m.JobID == jobID {
			return m, true
		}
	}
	return Model{}, false
}

func tooLarge(name string, size, limit int) error {
	return fmt.Errorf("model %s is %.1f MB encoded, more than the %.1f MB the models topic takes: train on fewer rows or with a smaller model (max_samples, trees, n_bins): %w",
		name, float64(size)/(1<<20), float64(limit)/(1<<20), ErrModelTooLarge)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Restore rebuilds a model version's fitted detector from its snapshot: exactly one of
// batch and stream is set. Each call returns a new, independent copy.
func (m Model) Restore() (batch detectors.Batch, stream detectors.Streaming, err error) {
	ref := ModelRef{Name: m.Name, Version: m.Version}
	info, err := detectors.Lookup(m.Algorithm)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s: %w", ref, err)
	}
	params, err := info.Resolve(m.Params)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s: %w", ref, err)
	}
	var p detectors.Persistent
	switch {
	case info.NewBatch != nil:
		if batch, err = info.NewBatch(params, m.Seed); err == nil {
			p, _ = batch.(detectors.Persistent)
		}
	case info.NewStreaming != nil:
		if stream, err = info.NewStreaming(params, m.Seed); err == nil {
			p, _ = stream.(detectors.Persistent)
		}
	default:
		err = fmt.Errorf("%s has no constructor", info.Name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("model %s: %w", ref, err)
	}
	if p == nil {
		return nil, nil, fmt.Errorf("model %s: %s cannot be restored from a snapshot", ref, info.Name)
	}
	if err := p.UnmarshalBinary(m.Snapshot); err != nil {
		return nil, nil, fmt.Errorf("model %s: restoring the fitted %s: %w", ref, info.Name, err)
	}
	return batch, stream, nil
}
