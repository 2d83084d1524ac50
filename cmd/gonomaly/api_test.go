package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAPICommandIngestsAndStopsCleanly: `gonomaly api` against a broker process takes
// records over HTTP, answers bad ones with a problem, and exits 0 on SIGTERM.
func TestAPICommandIngestsAndStopsCleanly(t *testing.T) {
	_, brokerAddr := startBroker(t)
	p := start(t, "api", "--brokers", brokerAddr, "--api-addr", "127.0.0.1:0", "--partitions", "4")
	addrRE := regexp.MustCompile(`serving API" addr=http://(\S+)/api/v1`)
	var base string
	waitFor(t, "the API to listen", 20*time.Second, func() bool {
		m := addrRE.FindStringSubmatch(p.stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	})
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
