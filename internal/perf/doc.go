// Package perf is gonomaly's performance test suite, `gonomaly perf`: it runs the
// pipeline, the job queue and the API under load in this process (or against a given
// API) and writes a report with figures and PNG plots, so that the claims of
// docs/performance.md can be re-measured on any machine with one command.
//
// The test types are profiling (CPU and heap profiles of the pipeline, attributed to
// stages), optimization (before/after micro-benchmarks of the code's optimisations),
// queue (job throughput and latency by worker count), concurrent (goroutines per
// partition against a single loop and several processes), memory (bytes per series of
// every streaming detector, RSS as series grow), load (HTTP requests/s and latency) and
// scalability (pipeline records/s by consumers per stage). Short mode runs each in
// seconds, for tests.
package perf
