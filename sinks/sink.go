// Package sinks moves records from a Kafka topic to the outside world: stdout, rotated
// JSONL and CSV files, webhooks and PostgreSQL. A runner consumes the topic as a consumer group and
// commits offsets only after the sink reports the batch durable; events a target refuses
// for good go to the dead-letter topic with the reason.
package sinks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"
)

// Sink writes lines and makes them durable on Sync.
type Sink interface {
	// Write appends one record's value, already converted to the sink's form. An error
	// made with Reject refuses that one event for good (the runner dead-letters it);
	// any other error stops the runner without committing. line is the caller's buffer,
	// reused after Write returns: a sink that keeps it must copy it.
	Write(line []byte) error
	// Sync makes everything written so far durable (fsync for files).
	Sync() error
	Close() error
}

// Deliverer is a Sink whose target can refuse single events after Write accepted them
// (a webhook answering 4xx, or a retry budget spent). The runner calls Deliver instead
// of Sync.
type Deliverer interface {
	Sink
	// Deliver makes everything written since the last Deliver durable and returns the
	// events the target refused for good, by their index among those writes. ctx bounds
	// how long it waits for a slow or unreachable target; on an error nothing written
	// since the last Deliver counts as delivered.
	Deliver(ctx context.Context) ([]Rejection, error)
}

// Rejection is one event a target refused for good.
type Rejection struct {
	Index int // among the writes since the last Deliver
	Err   error
}

// RejectedError marks an error as a permanent refusal of one event.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// Reject wraps err so the runner dead-letters the event instead of stopping.
func Reject(err error) error { return &RejectedError{Err: err} }

// Open selects a sink by URI: "stdout", "jsonl:PATH[?options]", "csv:PATH[?options]",
// "http://…" or "https://…" (a webhook), "postgres://…" or "postgresql://…".
// docs/sinks.md lists the options.
func Open(uri string) (Sink, error) {
	switch {
	case uri == "stdout" || uri == "-":
		return newWriterSink(os.Stdout, nil), nil
	case strings.HasPrefix(uri, "jsonl:"):
		return openFile(uri)
	case strings.HasPrefix(uri, "csv:"):
		return openFile(uri)
	case strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://"):
		cfg, err := ParseWebhookURI(uri)
		if err != nil {
			return nil, err
		}
		return OpenWebhook(context.Background(), cfg)
	case strings.HasPrefix(uri, "postgres://") || strings.HasPrefix(uri, "postgresql://"):
		return openPostgres(uri)
	default:
		return nil, fmt.Errorf("sink %q: unknown kind (use stdout, jsonl:PATH, csv:PATH, an http(s):// webhook or a postgres:// URI)", withoutPassword(uri))
	}
}

// withoutPassword masks the password of a URI with user info (a mistyped scheme must
// not print it) and leaves anything else as it is.
func withoutPassword(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return uri
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

func (s *writerSink) kind() string { return "stdout" }

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
	return fsync(f)
}

func (s *writerSink) Close() error {
	err := s.Sync()
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
	}
	return err
}

// fsync syncs f; pipes and terminals cannot be fsynced, and for them a flushed write is
// all there is.
func fsync(f *os.File) error {
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}

// NewWriter returns a sink that writes lines to w (a terminal, a pipe, a test buffer).
func NewWriter(w io.Writer) Sink { return newWriterSink(w, nil) }
