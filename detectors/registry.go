package detectors

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
)

// Kind tells how a detector learns.
type Kind string

const (
	// KindStreaming detectors score one observation and then learn from it.
	KindStreaming Kind = "streaming"
	// KindBatch detectors are fitted on a matrix and then score rows.
	KindBatch Kind = "batch"
)

// Param describes one numeric parameter of a detector.
type Param struct {
	Name    string  `json:"name"`
	Doc     string  `json:"doc"`
	Default float64 `json:"default"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	Integer bool    `json:"integer"`
}

// Params are parameter values by name.
type Params map[string]float64

// Int returns a parameter as an int; Resolve has already checked it is integral.
func (p Params) Int(name string) int { return int(p[name]) }

// Info is a detector's entry in the registry: what the pipeline spec, the API and the
// eval commands know about it.
type Info struct {
	Name   string  `json:"name"`
	Kind   Kind    `json:"kind"`
	Doc    string  `json:"doc"`
	Params []Param `json:"params"`
	// NewStreaming builds a streaming detector from resolved parameters and a seed.
	NewStreaming func(p Params, seed uint64) (Streaming, error) `json:"-"`
	// NewBatch builds an unfitted batch detector from resolved parameters and a seed.
	NewBatch func(p Params, seed uint64) (Batch, error) `json:"-"`
}

// Resolve fills defaults and checks every given parameter is known, integral where it
// must be and within its range. Errors name the detector, the parameter and the range.
func (i Info) Resolve(given Params) (Params, error) {
	out := make(Params, len(i.Params))
	known := make(map[string]Param, len(i.Params))
	for _, p := range i.Params {
		known[p.Name] = p
		out[p.Name] = p.Default
	}
	names := make([]string, 0, len(given))
	for n := range given {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := given[n]
		p, ok := known[n]
		if !ok {
			return nil, fmt.Errorf("detector %s: unknown parameter %q (known: %s)", i.Name, n, strings.Join(i.paramNames(), ", "))
		}
		if math.IsNaN(v) || v < p.Min || v > p.Max {
			return nil, fmt.Errorf("detector %s: parameter %s = %v is out of range [%v, %v]", i.Name, n, v, p.Min, p.Max)
		}
		if p.Integer && v != math.Trunc(v) {
			return nil, fmt.Errorf("detector %s: parameter %s = %v must be a whole number", i.Name, n, v)
		}
		out[n] = v
	}
	return out, nil
}

func (i Info) paramNames() []string {
	names := make([]string, len(i.Params))
	for k, p := range i.Params {
		names[k] = p.Name
	}
	return names
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Info{}
)

// Register adds a detector. Detectors register themselves in init; a duplicate name is a
// programming error and panics.
func Register(info Info) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[info.Name]; dup {
		panic("detectors: duplicate registration of " + info.Name)
	}
	registry[info.Name] = info
}

// Lookup finds a detector by name; the error lists the known names.
func Lookup(name string) (Info, error) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	info, ok := registry[name]
	if !ok {
		return Info{}, fmt.Errorf("unknown detector %q (known: %s)", name, strings.Join(namesLocked(), ", "))
	}
	return info, nil
}

// List returns every registered detector, sorted by name.
func List() []Info {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Info, 0, len(registry))
	for _, n := range namesLocked() {
		out = append(out, registry[n])
	}
	return out
}

func namesLocked() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
