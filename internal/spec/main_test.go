package spec

import (
	"os"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

// testDetector has fixed parameters, so that the tests can spell out the registry's
// messages exactly whatever the real detectors' ranges become.
var testDetector = detectors.Info{
	Name: "spectest",
	Kind: detectors.KindStreaming,
	Doc:  "test-only detector of package spec",
	Params: []detectors.Param{
		{Name: "window", Default: 64, Min: 8, Max: 100000, Integer: true},
		{Name: "alpha", Default: 0.5, Min: 0, Max: 1},
	},
}

func TestMain(m *testing.M) {
	detectors.Register(testDetector)
	os.Exit(m.Run())
}
