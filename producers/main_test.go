package producers

import (
	"testing"

	"go.uber.org/goleak"
)

// Publisher starts goroutines (progress, flush deadline) and tests start brokers and
// clients: none may outlive its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
