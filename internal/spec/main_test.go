package spec

import (
	"fmt"
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
	// The default spec names zscore, ewma and hst. Until the detectors package has them,
	// stand-ins keep these tests running; say so, so that nobody mistakes this for done.
	for _, name := range []string{"zscore", "ewma", "hst"} {
		if _, err := detectors.Lookup(name); err != nil {
			fmt.Fprintf(os.Stderr, "spec tests: detector %s is not registered; using a stand-in\n", name)
			standIn := testDetector
			standIn.Name = name
			standIn.Doc = "stand-in registered by package spec's tests"
			detectors.Register(standIn)
		}
	}
	os.Exit(m.Run())
}
