package spec

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse checks that Parse never panics, that its errors are well formed, and that a
// spec it accepts survives a trip through yaml.v3 unchanged, so that a resolved spec can
// be printed and read back.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultYAML))
	if example, err := os.ReadFile(filepath.Join("..", "..", "deploy", "pipeline.example.yaml")); err == nil {
		f.Add(example)
	}
	for _, tc := range badSpecs {
		f.Add([]byte(tc.yaml))
	}
	for _, tc := range goodSpecs {
		f.Add([]byte(tc.yaml))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			if len(se.Errors) == 0 || len(se.Errors) > MaxErrors {
				t.Fatalf("*Error has %d problems", len(se.Errors))
			}
			for _, fe := range se.Errors {
				if fe.Line < 1 || fe.Msg == "" || fe.File != "fuzz.yaml" {
					t.Fatalf("malformed problem %+v in\n%s", fe, err)
				}
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse accepted a spec that does not validate: %v", err)
		}
		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := Parse(out, "roundtrip.yaml")
		if err != nil {
			t.Fatalf("the marshalled spec does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("round trip changed the spec\n got %+v\nwant %+v\nvia\n%s", again, s, out)
		}
	})
}
