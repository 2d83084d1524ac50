package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

// binary is the gonomaly binary built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gonomaly-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "gonomaly")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build gonomaly:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a gonomaly command running as a child process.
type process struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *testkit.SyncBuffer
	done   chan error
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	return startEnv(t, nil, args...)
}

// stop sends SIGTERM and returns the exit error within the deadline.
func (p *process) stop(t *testing.T, within time.Duration) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		t.Fatalf("process did not exit within %s of SIGTERM", within)
		return nil
	}
}

// startBroker runs `gonomaly broker` on a free port and returns its address.
func startBroker(t *testing.T, extra ...string) (*process, string) {
	t.Helper()
	p := start(t, append([]string{"broker", "--listen", "127.0.0.1:0"}, extra...)...)
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("broker printed no address: %v", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	go io.Copy(io.Discard, p.stdout)
	return p, addr
}

func TestInteropKafkaGoProducesAndConsumesThroughGonomaly(t *testing.T) {
	brokerProc, addr := startBroker(t)
	proc := start(t, "process", "--brokers", addr, "--partitions", "4")
	go io.Copy(io.Discard, proc.stdout)

	// segmentio/kafka-go, an independent client, publishes JSON records keyed by series.
	w := &kafkago.Writer{Addr: kafkago.TCP(addr), Topic: "gonomaly.records", Balancer: &kafkago.Murmur2Balancer{}, BatchTimeout: 10 * time.Millisecond}
	defer w.Close()
	var msgs []kafkago.Message
	const perSeries = 400
	for i := 0; i < perSeries; i++ {
		for _, s := range []string{"web-1", "web-2", "db-1"} {
			v := 0.5 + 0.01*float64(i%10)
			if i == 300 && s == "db-1" {
				v = 50 // an obvious spike
			}
			ts := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
			msgs = append(msgs, kafkago.Message{Key: []byte(s), Value: []byte(fmt.Sprintf(`{"series":%q,"ts":%q,"values":{"cpu":%g}}`, s, ts.Format(time.RFC3339), v))})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := writeWhenReady(ctx, w, msgs); err != nil {
		t.Fatalf("kafka-go write: %v", err)
	}

	// kafka-go reads the anomaly events back.
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{addr}, Topic: "gonomaly.anomalies", Partition: partitionOf(t, addr, "db-1"), MaxWait: 100 * time.Millisecond})
	defer r.Close()
	found := false
	for !found {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("kafka-go read anomalies: %v", err)
		}
		var ev struct {
			Series string             `json:"series"`
			Values map[string]float64 `json:"values"`
			Score  float64            `json:"score"`
		}
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatalf("anomaly event is not JSON: %v: %s", err, m.Value)
		}
		if ev.Series == "db-1" && ev.Values["cpu"] == 50 {
			found = true
			t.Logf("kafka-go read the spike's event: %s", m.Value)
		}
	}
	if err := proc.stop(t, 20*time.Second); err != nil {
		t.Errorf("process exited with %v after SIGTERM", err)
	}
	if err := brokerProc.stop(t, 10*time.Second); err != nil {
		t.Errorf("broker exited with %v after SIGTERM", err)
	}
}

// writeWhenReady retries while the topic is being created by the process command.
func writeWhenReady(ctx context.Context, w *kafkago.Writer, msgs []kafkago.Message) error {
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// partitionOf finds where a key lands with Kafka's murmur2 partitioner over 4 partitions.
func partitionOf(t *testing.T, _ string, key string) int {
	t.Helper()
	b := &kafkago.Murmur2Balancer{}
	return b.Balance(kafkago.Message{Key: []byte(key)}, 0, 1, 2, 3)
}

func TestUnreachableBrokerExitsNonZeroNamingIt(t *testing.T) {
	start := time.Now()
	cmd := exec.Command(binary, "topics", "--brokers", "127.0.0.1:1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("want a non-zero exit, got success: %s", out)
	}
	if !strings.Contains(string(out), "127.0.0.1:1") {
		t.Fatalf("error does not name the address: %s", out)
	}
	if d := time.Since(start); d > 12*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestRunDemoPrintsAnomalyEventsAndStopsCleanly(t *testing.T) {
	p := start(t, "run", "--demo", "--metrics-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--demo-rate", "5000")
	lines := make(chan string)
	go func() {
		for {
			line, err := p.stdout.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- line
		}
	}()
	deadline := time.After(30 * time.Second)
	for got := 0; got < 3; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("stdout closed before any anomaly event")
			}
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("stdout line is not a JSON event: %q", line)
			}
			if ev["severity"] == nil || ev["series"] == nil {
				t.Fatalf("not an anomaly event: %q", line)
			}
			got++
		case <-deadline:
			t.Fatal("no anomaly events within 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	if err := p.stop(t, 35*time.Second); err != nil {
		t.Fatalf("run exited with %v after SIGTERM, want 0", err)
	}
}
