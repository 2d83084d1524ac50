package detectors

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// threadCPU is the CPU time of the calling thread. Benchmarks report it per op beside the
// wall time because the machines they run on are shared: wall time counts the time other
// processes hold the core, CPU time does not.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU pins the benchmark goroutine to its thread and, when the benchmark ends,
// reports thread CPU ns/op and the updates per CPU second that follow from it.
func reportCPU(b *testing.B) {
	runtime.LockOSThread()
	start := threadCPU()
	b.Cleanup(func() {
		cpu := threadCPU() - start
		runtime.UnlockOSThread()
		if b.N > 0 && cpu > 0 {
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "updates/cpu-s")
		}
	})
}
