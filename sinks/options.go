package sinks

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options holds a URI's query parameters and remembers which ones were read, so an
// unknown or misspelt option is an error that names it instead of being ignored.
type options struct {
	uri  string // as it may be shown (secrets redacted)
	vals url.Values
	used map[string]bool
}

func parseOptions(shown, query string) (*options, error) {
	vals, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("sink %s: options: %w", shown, err)
	}
	for k, v := range vals {
		if len(v) > 1 {
			return nil, fmt.Errorf("sink %s: option %s given %d times", shown, k, len(v))
		}
	}
	return &options{uri: shown, vals: vals, used: map[string]bool{}}, nil
}

func (o *options) str(key, def string) string {
	o.used[key] = true
	if v, ok := o.vals[key]; ok {
		return v[0]
	}
	return def
}

func (o *options) has(key string) bool { _, ok := o.vals[key]; return ok }

func (o *options) errf(key, format string, args ...any) error {
	return fmt.Errorf("sink %s: option %s=%q: %s", o.uri, key, o.str(key, ""), fmt.Sprintf(format, args...))
}

func (o *options) int(key string, def, lo, hi int) (int, error) {
	if !o.has(key) {
		o.used[key] = true
		return def, nil
	}
	n, err := strconv.Atoi(o.str(key, ""))
	if err != nil || n < lo || n > hi {
		return 0, o.errf(key, "want an integer in [%d, %d]", lo, hi)
	}
	return n, nil
}

func (o *options) float(key string, def, lo, hi float64) (float64, error) {
	if !o.has(key) {
		o.used[key] = true
		return def, nil
	}
	f, err := strconv.ParseFloat(o.str(key, ""), 64)
	if err != nil || !(f >= lo && f <= hi) {
		return 0, o.errf(key, "want a number in [%g, %g]", lo, hi)
	}
	return f, nil
}

func (o *options) duration(key string, def, lo, hi time.Duration) (time.Duration, error) {
	if !o.has(key) {
		o.used[key] = true
		return def, nil
	}
	d, err := time.ParseDuration(o.str(key, ""))
	if err != nil || d < lo || d > hi {
		return 0, o.errf(key, "want a duration in [%s, %s] (e.g. 5s, 1h)", lo, hi)
	}
	return d, nil
}

func (o *options) bool(key string, def bool) (bool, error) {
	if !o.has(key) {
		o.used[key] = true
		return def, nil
	}
	b, err := strconv.ParseBool(o.str(key, ""))
	if err != nil {
		return false, o.errf(key, "want true or false")
	}
	return b, nil
}

func (o *options) bytes(key string, def int64) (int64, error) {
	if !o.has(key) {
		o.used[key] = true
		return def, nil
	}
	n, err := parseBytes(o.str(key, ""))
	if err != nil {
		return 0, o.errf(key, "%v", err)
	}
	return n, nil
}

func (o *options) oneOf(key, def string, allowed ...string) (string, error) {
	v := o.str(key, def)
	if !slices.Contains(allowed, v) {
		return "", o.errf(key, "want one of %s", strings.Join(allowed, ", "))
	}
	return v, nil
}

// unknown reports the first option no parser asked for.
func (o *options) unknown() error {
	keys := make([]string, 0, len(o.vals))
	for k := range o.vals {
		if !o.used[k] {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	return fmt.Errorf("sink %s: unknown option %q", o.uri, keys[0])
}

// parseBytes reads a size: a plain number of bytes or one with a unit, decimal (kB, MB,
// GB) or binary (KiB, MiB, GiB); case-insensitive, e.g. "64MiB", "100mb", "4096".
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("want a size such as 4096, 100MB or 64MiB")
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	mult := map[string]int64{"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}[strings.ToLower(strings.TrimSpace(t[i:]))]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q (use B, kB, MB, GB, KiB, MiB, GiB)", t[i:])
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	if n*mult <= 0 {
		return 0, fmt.Errorf("size must be positive")
	}
	return n * mult, nil
}
