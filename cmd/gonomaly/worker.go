package main

import (
	"context"
	"errors"
)

// Scaffolding: being written.
func cmdWorker(ctx context.Context, args []string, env *environment) error {
	return errors.New("worker: not implemented yet")
}
