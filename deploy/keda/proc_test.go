package keda

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// root is the main module's directory, whose go.mod builds the binary.
const root = "../.."

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// checkParams is KEDA's switch for warning about trigger metadata keys a scaler does
// not read; its scalersconfig package reads it once, at init.
const checkParams = "KEDA_CHECK_UNEXPECTED_SCALERS_PARAMS"

// TestMain re-runs the test binary with checkParams enabled (too late to set it here),
// and removes the binary the tests built once all of them have run.
func TestMain(m *testing.M) {
	if os.Getenv(checkParams) != "enabled" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), checkParams+"=enabled")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		default:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// gonomaly builds cmd/gonomaly once per test binary, with the main module's go.mod (not
// this module's), so the tests run the code that ships.
func gonomaly(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "gonomaly-keda-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "gonomaly")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/gonomaly")
		cmd.Dir = root
		// GOWORK off: a go.work above the repo must not pull this module into the build.
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/gonomaly: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is one running gonomaly command.
type process struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

// start runs `gonomaly args...`; whatever is still running when the test ends is killed.
// stdout goes to out when given (the broker's address line), else into stderr's buffer.
func start(t *testing.T, out func(*bufio.Scanner), args ...string) *process {
	t.Helper()
	cmd := exec.Command(gonomaly(t), args...)
	p := &process{name: strings.Join(args, " "), cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	var stdout *os.File
	if out != nil {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, stdout = w, r
		defer w.Close()
	} else {
		cmd.Stdout = p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gonomaly %s: %v", p.name, err)
	}
	go func() { p.done <- cmd.Wait() }()
	if out != nil {
		sc := bufio.NewScanner(stdout)
		out(sc)
		// Drain the rest so the process never blocks on a full pipe.
		go func() {
			for sc.Scan() {
			}
			stdout.Close()
		}()
	}
	t.Cleanup(func() {
		if p.done == nil {
			return
		}
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("gonomaly %s output:\n%s", p.name, tail(p.stderr.String(), 40))
		}
	})
	return p
}

// stop ends p with SIGTERM, the way Kubernetes stops a pod; it must exit 0 in time.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done = nil
		if err != nil {
			t.Fatalf("gonomaly %s exited with %v after SIGTERM:\n%s", p.name, err, tail(p.stderr.String(), 40))
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("gonomaly %s did not stop within 45 s of SIGTERM", p.name)
	}
}

// run runs `gonomaly args...` to its end and returns its stdout.
func run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gonomaly(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gonomaly %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 40))
	}
	return stdout.String()
}

var listenRE = regexp.MustCompile(`^listening on (\S+)$`)

// startBroker starts `gonomaly broker` (the embedded kfake broker) on a free port with
// 8 partitions per topic, as in the deploy (GONOMALY_PARTITIONS=8).
func startBroker(t *testing.T) string {
	t.Helper()
	var addr string
	start(t, func(sc *bufio.Scanner) {
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addr = m[1]
				return
			}
		}
	}, "broker", "--listen", "127.0.0.1:0", "--partitions", strconv.Itoa(partitions))
	if addr == "" {
		t.Fatal("gonomaly broker printed no address")
	}
	return addr
}

var totalRE = regexp.MustCompile(`(?m)^TOTAL \(([^)]*)\)\s+(\d+)\s*$`)

// lag is `gonomaly lag`'s total for group on topic: records left to read (transaction
// markers not counted, docs/exactly-once.md).
func lag(t *testing.T, addr, group, topic string) int64 {
	t.Helper()
	out := run(t, "lag", "--brokers", addr, "--group", group, "--topic", topic)
	m := totalRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("gonomaly lag: no TOTAL line in\n%s", out)
	}
	n, _ := strconv.ParseInt(m[2], 10, 64)
	return n
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
