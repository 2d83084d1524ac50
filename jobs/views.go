package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DatasetView is the in-memory index of uploaded datasets, read from datasets.index.
type DatasetView struct {
	t  *tail
	mu sync.RWMutex
	m  map[string]Dataset
}

func newDatasetView(newConsumer NewConsumer, topic string) (*DatasetView, error) {
	v := &DatasetView{m: map[string]Dataset{}}
	t, err := startTail(newConsumer, topic, func(r *kgo.Record) {
		var d Dataset
		if r.Value == nil {
			v.mu.Lock()
			delete(v.m, string(r.Key))
			v.mu.Unlock()
		} else if json.Unmarshal(r.Value, &d) == nil && d.ID != "" {
			v.Apply(d)
		}
	})
	if err != nil {
		return nil, err
	}
	v.t = t
	return v, nil
}

// Apply adds a dataset to the view, as reading it from the topic would.
func (v *DatasetView) Apply(d Dataset) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m[d.ID] = d
}

// Get describes a dataset.
func (v *DatasetView) Get(id string) (Dataset, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	d, ok := v.m[id]
	return d, ok
}

// Sync waits until the view holds every dataset described before the call.
func (v *DatasetView) Sync(ctx context.Context) error { return v.t.sync(ctx) }

func (v *DatasetView) close() { v.t.close() }

// ModelView holds every model version read from the models topic. Compaction keeps only
// a model's latest version in the topic; older ones stay here while the process runs.
type ModelView struct {
	t  *tail
	mu sync.RWMutex
	m  map[string][]Model // by name, ascending version
	// changed is closed and replaced whenever a version arrives, for watchers.
	changed chan struct{}
}

func newModelView(newConsumer NewConsumer, topic string) (*ModelView, error) {
	v := &ModelView{m: map[string][]Model{}, changed: make(chan struct{})}
	t, err := startTail(newConsumer, topic, func(r *kgo.Record) {
		var m Model
		if r.Value != nil && json.Unmarshal(r.Value, &m) == nil && m.Name != "" {
			v.Apply(m)
		}
	})
	if err != nil {
		return nil, err
	}
	v.t = t
	return v, nil
}

// Apply adds a model version to the view, as reading it from the topic would; a version
// already held is replaced.
func (v *ModelView) Apply(m Model) {
	v.mu.Lock()
	defer v.mu.Unlock()
	versions := v.m[m.Name]
	i, found := slices.BinarySearchFunc(versions, m.Version, func(a Model, ver int) int { return cmp.Compare(a.Version, ver) })
	if found {
		versions[i] = m
	} else {
		versions = slices.Insert(versions, i, m)
	}
	v.m[m.Name] = versions
	close(v.changed)
	v.changed = make(chan struct{})
}

// Latest returns a model's newest version.
func (v *ModelView) Latest(name string) (Model, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	versions := v.m[name]
	if len(versions) == 0 {
		return Model{}, false
	}
	return versions[len(versions)-1], true
}

// Version returns one version of a model.
func (v *ModelView) Version(name string, version int) (Model, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, m := range v.m[name] {
		if m.Version == version {
			return m, true
		}
	}
	return Model{}, false
}

// Versions returns a model's versions, oldest first.
func (v *ModelView) Versions(name string) []Model {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.m[name])
}

// Names returns every model name, sorted.
func (v *ModelView) Names() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	names := make([]string, 0, len(v.m))
	for n := range v.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Changed returns a channel that is closed when the next model version arrives.
func (v *ModelView) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// Sync waits until the view holds every model version published before the call.
func (v *ModelView) Sync(ctx context.Context) error { return v.t.sync(ctx) }

func (v *ModelView) close() { v.t.close() }
