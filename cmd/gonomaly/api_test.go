package main

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

// startEnv is start with extra environment variables (GONOMALY_API_KEYS, …).
func startEnv(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stdout: bufio.NewReader(out), stderr: &testkit.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("stderr of gonomaly %s:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

var apiAddrRE = regexp.MustCompile(`serving API" addr=http://(\S+)/api/v1`)

// startAPI runs `gonomaly api` against a broker and returns it with its base URL.
func startAPI(t *testing.T, brokerAddr string, env []string, extra ...string) (*process, string) {
	t.Helper()
	p := startEnv(t, env, append([]string{"api", "--brokers", brokerAddr, "--api-addr", "127.0.0.1:0", "--partitions", "4"}, extra...)...)
	var base string
	waitFor(t, "the API to listen", 30*time.Second, func() bool {
		m := apiAddrRE.FindStringSubmatch(p.stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	})
	return p, base
}

// runCmd runs a command to completion (within a minute) with extra environment and
// returns its output and exit code.
func runCmd(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("gonomaly %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("gonomaly %s did not end within 60s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	return out.String(), errOut.String(), code
}

// TestAPICommandIngestsAndStopsCleanly: `gonomaly api` against a broker process takes
// records over HTTP, answers bad ones with a problem, warns that it is open without keys,
// and exits 0 on SIGTERM.
func TestAPICommandIngestsAndStopsCleanly(t *testing.T) {
	_, brokerAddr := startBroker(t)
	p, base := startAPI(t, brokerAddr, nil)
	if !strings.Contains(p.stderr.String(), "no API keys configured") {
		t.Errorf("no warning about the open API:\n%s", p.stderr.String())
	}
	post := func(body string) int {
		resp, err := http.Post(base+"/api/v1/records", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(`[{"series":"a","values":{"x":1}},{"series":"b","values":{"x":2}}]`); code != 202 {
		t.Fatalf("POST /records: %d", code)
	}
	if code := post(`[{"series":"a"}]`); code != 400 {
		t.Fatalf("bad record: %d", code)
	}
	out, _ := gonomaly(t, "topics", "--brokers", brokerAddr)
	if !regexp.MustCompile(`gonomaly\.records\s+4\s+2\s`).MatchString(out) {
		t.Fatalf("records topic does not hold the 2 records:\n%s", out)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := p.stop(t, 15*time.Second); err != nil {
		t.Fatalf("api exited with %v after SIGTERM, want 0", err)
	}
}

// TestAPICommandKeysAndLimits: keys from the environment and a file are enforced, a
// rate limit answers 429, and bad key configuration stops the start with exit 2 and a
// message naming the entry or line.
func TestAPICommandKeysAndLimits(t *testing.T) {
	_, brokerAddr := startBroker(t)
	keyFile := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(keyFile, []byte("# dashboards\ndash read dash-secret-0123456789\n"), 0o600)
	p, base := startAPI(t, brokerAddr, []string{"GONOMALY_API_KEYS=ci:submit:ci-secret-0123456789"},
		"--api-keys-file", keyFile, "--rate-limit", "1", "--rate-burst", "2")
	if strings.Contains(p.stderr.String(), "no API keys configured") || !strings.Contains(p.stderr.String(), "API keys loaded") {
		t.Errorf("start log:\n%s", p.stderr.String())
	}
	get := func(path, key string) *http.Response {
		req, _ := http.NewRequest("GET", base+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	defer http.DefaultClient.CloseIdleConnections()
	if r := get("/api/v1/detectors", ""); r.StatusCode != 401 || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no key: %d %q", r.StatusCode, r.Header.Get("WWW-Authenticate"))
	}
	if r := get("/healthz", ""); r.StatusCode != 200 {
		t.Fatalf("healthz without a key: %d", r.StatusCode)
	}
	var codes []int
	for range 3 {
		codes = append(codes, get("/api/v1/detectors", "dash-secret-0123456789").StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("file key under a limit of 1/s, bursts of 2: %v", codes)
	}
	if r := get("/api/v1/detectors", "ci-secret-0123456789"); r.StatusCode != 200 {
		t.Fatalf("env key: %d", r.StatusCode)
	}

	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"GONOMALY_API_KEYS=ci:admin:ci-secret-0123456789"}, nil, `--api-keys (GONOMALY_API_KEYS): entry 1: key "ci": unknown role "admin"`},
		{nil, []string{"--api-keys", "a:read:short"}, "entry 1: key \"a\": the secret is 5 characters"},
		{nil, []string{"--api-keys-file", filepath.Join(t.TempDir(), "none")}, "--api-keys-file: open"},
		{[]string{"GONOMALY_API_KEYS=dash:submit:other-secret-0123456789"}, []string{"--api-keys-file", keyFile}, `key "dash" is defined twice`},
		{nil, []string{"--rate-limit", "-1"}, "must not be negative"},
	} {
		_, stderr, code := runCmd(t, tc.env, append([]string{"api", "--brokers", brokerAddr, "--api-addr", "127.0.0.1:0"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v %v: exit %d, stderr %q, want 2 and %q", tc.env, tc.args, code, stderr, tc.want)
		}
		if strings.Contains(stderr, "ci-secret-0123456789") || strings.Contains(stderr, "other-secret") {
			t.Errorf("the error quotes a secret: %s", stderr)
		}
	}
	if err := p.stop(t, 15*time.Second); err != nil {
		t.Fatalf("api exited with %v after SIGTERM, want 0", err)
	}
}
