package processors

import "github.com/gonomaly/gonomaly/jobs"

// JobExecutors returns the executor of every job type the workers run.
// Scaffolding: the executors are being written.
func JobExecutors() map[jobs.Type]jobs.Executor {
	return map[jobs.Type]jobs.Executor{}
}
