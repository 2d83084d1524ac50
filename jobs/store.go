package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Open starts the views of the compacted topics and waits until they hold everything
// the topics held at the call, so that a restarted API or worker knows every job,
// dataset and model before it serves. The topics must exist (cluster.EnsureLayout).
// client produces; newConsumer builds the views' consumers.
func Open(ctx context.Context, client *kgo.Client, topics Topics, newConsumer NewConsumer) (*Store, error) {
	s := &Store{Client: client, Topics: topics, NewConsumer: newConsumer}
	var err error
	if s.Statuses, err = newStatusView(newConsumer, topics.Status); err != nil {
		return nil, err
	}
	if s.Datasets, err = newDatasetView(newConsumer, topics.DatasetIndex); err != nil {
		s.Close()
		return nil, err
	}
	if s.Models, err = newModelView(newConsumer, topics.Models); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Sync(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("recovering job statuses, datasets and models: %w", err)
	}
	return s, nil
}

// Sync waits until every view holds what its topic held at the call.
func (s *Store) Sync(ctx context.Context) error {
	return errors.Join(s.Statuses.Sync(ctx), s.Datasets.Sync(ctx), s.Models.Sync(ctx))
}

// Close stops the views' consumers; the producing client is the caller's.
func (s *Store) Close() {
	if s.Statuses != nil {
		s.Statuses.close()
	}
	if s.Datasets != nil {
		s.Datasets.close()
	}
	if s.Models != nil {
		s.Models.close()
	}
}
