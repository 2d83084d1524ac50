// Package dlq builds dead-letter records: the original key and bytes, with headers that
// say what went wrong, where, and where the record came from.
package dlq

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record returns the dead-letter copy of rec for topic.
func Record(topic, stage, reason string, rec *kgo.Record, err error) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   rec.Key,
		Value: rec.Value,
		Headers: []kgo.RecordHeader{
			{Key: "error", Value: []byte(err.Error())},
			{Key: "reason", Value: []byte(reason)},
			{Key: "stage", Value: []byte(stage)},
			{Key: "topic", Value: []byte(rec.Topic)},
			{Key: "partition", Value: strconv.AppendInt(nil, int64(rec.Partition), 10)},
			{Key: "offset", Value: strconv.AppendInt(nil, rec.Offset, 10)},
		},
	}
}

// Header returns the value of a header, or "".
func Header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
