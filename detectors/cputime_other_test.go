//go:build !linux

package detectors

import "testing"

// reportCPU is a no-op where there is no per-thread CPU clock; see cputime_linux_test.go.
func reportCPU(*testing.B) {}
