package api

import (
	"testing"

	"go.uber.org/goleak"
)

// The server, its Kafka clients and test brokers start goroutines: none may outlive
// its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
