// Package sinks moves records from a Kafka topic to the outside world (files, stdout, and
// later databases and webhooks). A runner consumes the topic as a consumer group and
// commits offsets only after the sink reports the batch durable.
package sinks

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Sink writes lines and makes them durable on Sync.
type Sink interface {
	// Write appends one record's value, already converted to the sink's form.
	Write(line []byte) error
	// Sync makes everything written so far durable (fsync for files).
	Sync() error
	Close() error
}

// Open selects a sink by URI: "stdout", "jsonl:PATH".
func Open(uri string) (Sink, error) {
	switch {
	case uri == "stdout" || uri == "-":
		return newWriterSink(os.Stdout, nil), nil
	case strings.HasPrefix(uri, "jsonl:"):
		path := strings.TrimPrefix(uri, "jsonl:")
		if path == "" {
			return nil, fmt.Errorf("sink %q: jsonl needs a path (jsonl:/var/lib/gonomaly/anomalies.jsonl)", uri)
		}
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("sink %q: %w", uri, err)
			}
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("sink %q: %w", uri, err)
		}
		return newWriterSink(f, f), nil
	default:
		return nil, fmt.Errorf("sink %q: unknown kind (use stdout or jsonl:PATH)", uri)
	}
}

// writerSink writes newline-delimited lines through a buffer.
type writerSink struct {
	w    *bufio.Writer
	file *os.File // nil when Close must not close the underlying writer
	out  io.Writer
}

func newWriterSink(out io.Writer, owned *os.File) *writerSink {
	return &writerSink{w: bufio.NewWriterSize(out, 256<<10), file: owned, out: out}
}

func (s *writerSink) Write(line []byte) error {
	if _, err := s.w.Write(line); err != nil {
		return err
	}
	return s.w.WriteByte('\n')
}

func (s *writerSink) Sync() error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	f, ok := s.out.(*os.File)
	if !ok {
		return nil
	}
	// Pipes and terminals cannot be fsynced; for them a flushed write is all there is.
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}

func (s *writerSink) Close() error {
	err := s.Sync()
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
	}
	return err
}

// NewWriter returns a sink that writes lines to w (a terminal, a pipe, a test buffer).
func NewWriter(w io.Writer) Sink { return newWriterSink(w, nil) }
