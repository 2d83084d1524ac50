package main

import (
	"context"
	"errors"
)

// Scaffolding: being written.
func cmdJobs(ctx context.Context, args []string, env *environment) error {
	return errors.New("jobs: not implemented yet")
}
