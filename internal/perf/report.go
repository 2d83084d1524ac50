package perf

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Machine is what the figures were measured on.
type Machine struct {
	Cores       int
	CPU         string
	MemoryGB    float64
	GoVersion   string
	OS, Arch    string
	LoadAtStart string // /proc/loadavg: other jobs on a shared machine show here
}

func readMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb := procStatusKB("/proc/meminfo", "MemTotal:"); kb > 0 {
		m.MemoryGB = kb / (1 << 20)
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(data))
		if len(f) >= 3 {
			m.LoadAtStart = strings.Join(f[:3], " ")
		}
	}
	return m
}

// procStatusKB reads a "Key:   123 kB" line of a /proc file; 0 when absent.
func procStatusKB(path, key string) float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb); err == nil {
				return kb
			}
		}
	}
	return 0
}

// RSSMB is the process's resident set size (VmRSS) in MiB; 0 where /proc is missing.
func RSSMB() float64 { return procStatusKB("/proc/self/status", "VmRSS:") / 1024 }

// table is a markdown table under construction.
type table struct {
	head []string
	rows [][]string
}

func newTable(head ...string) *table { return &table{head: head} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	line := func(cells []string) {
		fmt.Fprint(w, "|")
		for _, c := range cells {
			fmt.Fprintf(w, " %s |", esc(c))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(sep, "|"))
	for _, r := range t.rows {
		line(r)
	}
	fmt.Fprintln(w)
}

// writeReport writes report.md: the run, the machine, the summary table, then each
// type's section.
func writeReport(rep *Report, cfg Config) error {
	var b strings.Builder
	fmt.Fprintln(&b, "# gonomaly performance report")
	fmt.Fprintln(&b)
	if cfg.Command != "" {
		fmt.Fprintf(&b, "Command: `%s`  \n", cfg.Command)
	}
	m := rep.Machine
	fmt.Fprintf(&b, "Started: %s, took %s  \n", rep.Started.UTC().Format(time.RFC3339), time.Since(rep.Started).Round(time.Second))
	fmt.Fprintf(&b, "Machine: %d cores (%s), %.0f GB memory, %s %s/%s; load average at start %s (another job on the machine shows here and lowers the figures)  \n",
		m.Cores, orDash(m.CPU), m.MemoryGB, m.GoVersion, m.OS, m.Arch, orDash(m.LoadAtStart))
	mode := "full"
	if cfg.Short {
		mode = "short (each type in seconds: indicative figures only)"
	}
	fmt.Fprintf(&b, "Mode: %s\n", mode)

	fmt.Fprintln(&b, "\n## Summary")
	t := newTable("test type", "metric", "value")
	for _, row := range rep.Rows() {
		t.add(row.Type, row.Metric, row.Value)
	}
	t.write(&b)
	for _, s := range rep.Sections {
		fmt.Fprintf(&b, "## %s — %s\n\n", s.Type, s.Title)
		if s.Err != nil {
			fmt.Fprintf(&b, "**FAILED**: %s\n\n", s.Err)
		}
		b.WriteString(strings.TrimSpace(s.Body.String()))
		fmt.Fprintf(&b, "\n\n_%s took %.1f s._\n\n", s.Type, s.Seconds)
	}
	return os.WriteFile(cfg.OutDir+string(os.PathSeparator)+"report.md", []byte(b.String()), 0o644)
}

// WriteSummary prints the summary table in aligned columns.
func WriteSummary(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST TYPE\tMETRIC\tVALUE")
	for _, row := range rep.Rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", row.Type, row.Metric, row.Value)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Number formats: thousands separated, as the docs write them.
func num(v float64) string {
	if v != v {
		return "-"
	}
	neg := v < 0
	if neg {
		v = -v
	}
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// ms formats milliseconds with precision that suits their size.
func ms(v float64) string {
	switch {
	case v != v:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.3f ms", v)
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%s ms", num(v))
}

// bytesText formats a byte count in binary units.
func bytesText(v float64) string {
	switch {
	case v != v:
		return "-"
	case v < 0:
		return "-" + bytesText(-v)
	case v < 1024:
		return fmt.Sprintf("%.0f B", v)
	case v < 1<<20:
		return fmt.Sprintf("%.1f KiB", v/1024)
	case v < 1<<30:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", v/(1<<30))
}
