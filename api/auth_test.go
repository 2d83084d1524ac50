package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

const (
	readSecret   = "read-secret-0123456789"
	submitSecret = "submit-secret-0123456789"
)

func testKeys() []Key {
	return []Key{{Name: "dash", Role: RoleRead, Secret: readSecret}, {Name: "ci", Role: RoleSubmit, Secret: submitSecret}}
}

// call sends one request to a real server and returns the response with its body read.
func call(t *testing.T, method, url, auth, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func TestAuthenticationAndRoles(t *testing.T) {
	s := newTestServer(t, Config{Keys: testKeys()})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	detect := `{"algorithm":"zscore","rows":[[1],[2],[3]]}`
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		problemType                    string // "" for a success
		challenge                      string // WWW-Authenticate contains this
		detail                         string
	}{
		{"no key", "GET", "/api/v1/detectors", "", "", 401, TypeUnauthorized, `Bearer realm="gonomaly"`, "missing API key"},
		{"wrong scheme", "GET", "/api/v1/detectors", "Basic " + readSecret, "", 401, TypeUnauthorized, `error="invalid_request"`, "Bearer <key>"},
		{"empty bearer", "GET", "/api/v1/detectors", "Bearer ", "", 401, TypeUnauthorized, `error="invalid_request"`, "Bearer <key>"},
		{"unknown key", "GET", "/api/v1/detectors", "Bearer not-a-key-0123456789", "", 401, TypeUnauthorized, `error="invalid_token"`, "invalid API key"},
		{"secret's prefix", "GET", "/api/v1/detectors", "Bearer " + readSecret[:len(readSecret)-1], "", 401, TypeUnauthorized, `error="invalid_token"`, "invalid API key"},
		{"read key reads", "GET", "/api/v1/detectors", "Bearer " + readSecret, "", 200, "", "", ""},
		{"scheme is case-insensitive", "GET", "/api/v1/detectors", "bearer " + readSecret, "", 200, "", "", ""},
		{"read key cannot submit", "POST", "/api/v1/detect", "Bearer " + readSecret, detect, 403, TypeForbidden, "", `"dash" has the read role; POST /api/v1/detect needs the submit role`},
		{"read key cannot cancel", "DELETE", "/api/v1/jobs/job_1", "Bearer " + readSecret, "", 403, TypeForbidden, "", "needs the submit role"},
		{"submit key submits", "POST", "/api/v1/detect", "Bearer " + submitSecret, detect, 200, "", "", ""},
		{"submit implies read", "GET", "/api/v1/detectors", "Bearer " + submitSecret, "", 200, "", "", ""},
		{"no key on a submit route", "POST", "/api/v1/detect", "", detect, 401, TypeUnauthorized, "Bearer", "missing API key"},
		{"healthz is open", "GET", "/healthz", "", "", 200, "", "", ""},
		{"openapi is open", "GET", "/openapi.json", "", "", 200, "", "", ""},
		{"readyz is open", "GET", "/readyz", "", "", 503, TypeBlank, "", "not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := call(t, tc.method, srv.URL+tc.path, tc.auth, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) || (tc.challenge == "" && got != "") {
				t.Errorf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
			}
			if tc.problemType == "" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != ProblemContentType {
				t.Fatalf("Content-Type %q", ct)
			}
			var p Problem
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != tc.problemType || p.Status != tc.status || !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("problem %+v, want type %s and detail containing %q", p, tc.problemType, tc.detail)
			}
			for _, secret := range []string{readSecret, submitSecret} {
				if strings.Contains(string(body), secret) {
					t.Errorf("the answer quotes a secret: %s", body)
				}
			}
		})
	}
}

// TestKeyNameReachesHandlers: the authenticated key's name is what handlers record.
func TestKeyNameReachesHandlers(t *testing.T) {
	s := newTestServer(t, Config{Keys: testKeys()})
	var seen []string
	h := s.require(RoleRead)(func(c echo.Context) error {
		seen = append(seen, KeyName(c))
		return nil
	})
	for _, secret := range []string{readSecret, submitSecret} {
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		if err := h(s.e.NewContext(req, httptest.NewRecorder())); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(seen, []string{"dash", "ci"}) {
		t.Fatalf("key names %q", seen)
	}
	open := newTestServer(t, Config{})
	h = open.require(RoleSubmit)(func(c echo.Context) error { seen = append(seen, KeyName(c)); return nil })
	if err := h(open.e.NewContext(httptest.NewRequest("POST", "/x", nil), httptest.NewRecorder())); err != nil {
		t.Fatal(err)
	}
	if seen[2] != "" {
		t.Fatalf("without keys the key name is %q, want empty", seen[2])
	}
}

func TestRateLimitPerKey(t *testing.T) {
	s := newTestServer(t, Config{Keys: testKeys(), RateLimit: 0.5, RateBurst: 2})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	url := srv.URL + "/api/v1/detectors"
	for i := range 2 {
		if resp, body := call(t, "GET", url, "Bearer "+readSecret, ""); resp.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d %s", i+1, resp.StatusCode, body)
		}
	}
	resp, body := call(t, "GET", url, "Bearer "+readSecret, "")
	if resp.StatusCode != 429 {
		t.Fatalf("third request: %d %s, want 429", resp.StatusCode, body)
	}
	// 0.5 tokens/s: the next one is about 2 s away.
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After %q, want 2", ra)
	}
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil || p.Type != TypeRateLimited || !strings.Contains(p.Detail, `"dash"`) || !strings.Contains(p.Detail, "0.5 requests/s") {
		t.Fatalf("problem %+v (%v)", p, err)
	}
	// Another key has its own bucket; a refused request took no token, and open routes
	// are never limited.
	if resp, body := call(t, "GET", url, "Bearer "+submitSecret, ""); resp.StatusCode != 200 {
		t.Fatalf("other key: %d %s", resp.StatusCode, body)
	}
	if resp, _ := call(t, "GET", srv.URL+"/healthz", "", ""); resp.StatusCode != 200 {
		t.Fatalf("healthz under the limit: %d", resp.StatusCode)
	}
	// Unauthenticated requests are refused before they reach a bucket.
	if resp, _ := call(t, "GET", url, "", ""); resp.StatusCode != 401 {
		t.Fatalf("no key while the key is limited: %d, want 401", resp.StatusCode)
	}
}

func TestRateLimitPerAddressWithoutKeys(t *testing.T) {
	s := newTestServer(t, Config{RateLimit: 1, RateBurst: 1})
	get := func(remote, forwarded string) int {
		req := httptest.NewRequest("GET", "/api/v1/detectors", nil)
		req.RemoteAddr = remote
		if forwarded != "" {
			req.Header.Set("X-Forwarded-For", forwarded)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	if c := get("192.0.2.1:1000", ""); c != 200 {
		t.Fatalf("first: %d", c)
	}
	// Another port of the same host shares the bucket; a forged header does not escape it.
	if c := get("192.0.2.1:1001", "203.0.113.9"); c != 429 {
		t.Fatalf("same host, other port, forged X-Forwarded-For: %d, want 429", c)
	}
	if c := get("192.0.2.2:1000", ""); c != 200 {
		t.Fatalf("another host: %d", c)
	}

	// Over real TCP too.
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	codes := []int{}
	for range 2 {
		resp, _ := call(t, "GET", srv.URL+"/api/v1/detectors", "", "")
		codes = append(codes, resp.StatusCode)
	}
	if !slices.Equal(codes, []int{200, 429}) {
		t.Fatalf("codes %v, want [200 429]", codes)
	}
}

func TestRateLimiterForgetsRefilledBuckets(t *testing.T) {
	l := newRateLimiter(10, 5) // refills in 0.5 s
	t0 := time.Now()
	for i := range 1000 {
		l.allow(fmt.Sprint("client-", i), t0)
	}
	if n := l.size(); n != 1000 {
		t.Fatalf("%d buckets, want 1000", n)
	}
	// A client that used its burst is still limited while a sweep runs.
	for range 5 {
		l.allow("busy", t0)
	}
	l.sweepEvery = 0
	if wait, ok := l.allow("busy", t0.Add(50*time.Millisecond)); ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("busy client after the sweep: ok=%v wait=%s, want refused for at most 100ms", ok, wait)
	}
	if n := l.size(); n != 1001 {
		t.Fatalf("%d buckets 50ms later, want 1001 (none had refilled)", n)
	}
	if _, ok := l.allow("late", t0.Add(time.Second)); !ok {
		t.Fatal("a new client was refused")
	}
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets after every old one refilled, want 1", n)
	}

	// A flood of distinct clients cannot grow the map past its cap.
	l = newRateLimiter(1, 1)
	l.maxBuckets = 100
	for i := range 10_000 {
		l.allow(fmt.Sprint("flood-", i), t0)
		if n := l.size(); n > 100 {
			t.Fatalf("%d buckets after %d clients, cap 100", n, i+1)
		}
	}
}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys(" dash:read:" + readSecret + " ,, ci:submit:" + submitSecret + "==,")
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{{"dash", readSecret, RoleRead}, {"ci", submitSecret + "==", RoleSubmit}}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %+v", keys)
	}
	if keys, err := ParseKeys(""); err != nil || len(keys) != 0 {
		t.Fatalf("empty: %v %v", keys, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"dash:read", "entry 1: want name:role:secret, got 2 part(s)"},
		{"a:read:" + readSecret + ",b:write:" + submitSecret, `entry 2: key "b": unknown role "write" (want read or submit)`},
		{"a:read:short", `entry 1: key "a": the secret is 5 characters, want 16 to 512`},
		{":read:" + readSecret, "entry 1: empty key name"},
		{"a b:read:" + readSecret, `entry 1: key name "a b": only letters, digits and . _ @ - are allowed`},
		{"a:read:" + readSecret + "!", `entry 1: key "a": the secret has a character a Bearer token cannot carry at position 23`},
		{"a:read:" + "==" + readSecret, `entry 1: key "a": the secret has a character a Bearer token cannot carry at position 1`},
		{"a:read:" + readSecret + "=x", `position 24`},
		{"a:read:" + readSecret + ",a:submit:" + submitSecret, `key "a" is defined twice`},
		{"a:read:" + readSecret + ",b:submit:" + readSecret, `keys "a" and "b" have the same secret`},
	} {
		_, err := ParseKeys(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q): %v, want %q", tc.in, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), readSecret) || strings.Contains(err.Error(), submitSecret) {
			t.Errorf("the error quotes a secret: %v", err)
		}
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys")
	os.WriteFile(good, []byte("# dashboards\ndash read "+readSecret+"\n\n  ci\tsubmit   "+submitSecret+"  \n"), 0o600)
	keys, err := LoadKeys(good)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []Key{{"dash", readSecret, RoleRead}, {"ci", submitSecret, RoleSubmit}}) {
		t.Fatalf("keys %+v", keys)
	}
	for _, tc := range []struct{ content, want string }{
		{"dash read " + readSecret + "\nci submit\n", "keys: line 2: want \"name role secret\", got 2 field(s)"},
		{"# only a comment\n", "keys: no keys"},
		{"\n\nx admin " + readSecret, `keys: line 3: key "x": unknown role "admin"`},
		{"x read " + readSecret + "\ny read " + strings.Repeat("a", 70_000), "keys: line 2: bufio.Scanner: token too long"},
	} {
		os.WriteFile(filepath.Join(dir, "keys"), []byte(tc.content), 0o600)
		if _, err := LoadKeys(filepath.Join(dir, "keys")); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKeys(%q): %v, want %q", tc.content, err, tc.want)
		}
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNewRejectsBadKeysAndLimits(t *testing.T) {
	if _, err := New(Config{Keys: []Key{{Name: "a", Role: "admin", Secret: readSecret}}}); err == nil || !strings.Contains(err.Error(), `unknown role "admin"`) {
		t.Errorf("bad role: %v", err)
	}
	if _, err := New(Config{RateLimit: -1}); err == nil || !strings.Contains(err.Error(), "rate limit") {
		t.Errorf("negative rate: %v", err)
	}
	s := newTestServer(t, Config{RateLimit: 2.5})
	if s.cfg.RateBurst != 3 {
		t.Errorf("default burst %d, want 3 (one second's worth)", s.cfg.RateBurst)
	}
}

// FuzzParseKeys: neither key format panics on any input, and whatever either accepts is
// a valid key set that survives a round trip through the other format.
func FuzzParseKeys(f *testing.F) {
	f.Add("dash:read:" + readSecret + ",ci:submit:" + submitSecret)
	f.Add("a:read:0123456789abcdef==")
	f.Add("# comment\na read 0123456789abcdef\nb submit 0123456789abcdeg\n")
	f.Add(":::,,")
	f.Fuzz(func(t *testing.T, in string) {
		for _, parse := range []func(string) ([]Key, error){ParseKeys, func(s string) ([]Key, error) { return ReadKeys(strings.NewReader(s)) }} {
			keys, err := parse(in)
			if err != nil {
				continue
			}
			if err := CheckKeys(keys); err != nil {
				t.Fatalf("accepted an invalid key set from %q: %v", in, err)
			}
			var env, file []string
			for _, k := range keys {
				env = append(env, k.Name+":"+string(k.Role)+":"+k.Secret)
				file = append(file, k.Name+" "+string(k.Role)+" "+k.Secret)
			}
			fromEnv, err1 := ParseKeys(strings.Join(env, ","))
			fromFile, err2 := ReadKeys(strings.NewReader(strings.Join(file, "\n")))
			if err1 != nil || err2 != nil || !slices.Equal(fromEnv, keys) || !slices.Equal(fromFile, keys) {
				t.Fatalf("round trip of %q: %v %v", in, err1, err2)
			}
		}
	})
}

func TestDetectWorkBudget(t *testing.T) {
	s := newTestServer(t, Config{DetectTimeout: 30 * time.Millisecond})
	var rows strings.Builder
	rows.WriteString("[")
	for i := range 3000 {
		if i > 0 {
			rows.WriteString(",")
		}
		fmt.Fprintf(&rows, "[%d,%d]", i%97, i%13)
	}
	rows.WriteString("]")
	heavy := `{"algorithm":"iforest","params":{"trees":3000},"rows":` + rows.String() + `}`
	start := time.Now()
	rec := do(s.Handler(), "POST", "/api/v1/detect", "application/json", heavy)
	took := time.Since(start)
	p := problemOf(t, rec)
	if rec.Code != 422 || p.Type != TypeTooLarge || !strings.Contains(p.Detail, "30ms, the work budget of POST /detect") || !strings.Contains(p.Detail, "POST /api/v1/jobs") {
		t.Fatalf("%d %+v", rec.Code, p)
	}
	if took > time.Second {
		t.Errorf("the answer took %s, want about the 30ms budget", took)
	}
	// A streaming detector stops at the deadline instead of running on.
	streaming := `{"algorithm":"rrcf","params":{"trees":1000,"tree_size":4096},"rows":` + rows.String() + `}`
	if rec := do(s.Handler(), "POST", "/api/v1/detect", "application/json", streaming); rec.Code != 422 {
		t.Fatalf("streaming over the budget: %d %s", rec.Code, rec.Body)
	}
	waitSlotsFree(t, s)

	// While every core is taken, a request waits at most the budget and hears 503.
	for range cap(s.detectSlots) {
		s.detectSlots <- struct{}{}
	}
	rec = do(s.Handler(), "POST", "/api/v1/detect", "application/json", `{"algorithm":"zscore","rows":[[1]]}`)
	for range cap(s.detectSlots) {
		<-s.detectSlots
	}
	if p := problemOf(t, rec); rec.Code != 503 || rec.Header().Get("Retry-After") != "1" || !strings.Contains(p.Detail, "every core was busy") {
		t.Fatalf("busy: %d %+v", rec.Code, p)
	}
	// Within the budget, scoring works as before.
	s.cfg.DetectTimeout = 10 * time.Second
	if rec := do(s.Handler(), "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1],[2],[3],[40]]}`); rec.Code != 200 {
		t.Fatalf("small request: %d %s", rec.Code, rec.Body)
	}
}

// waitSlotsFree waits until computations abandoned at their deadline have ended, so
// that no goroutine outlives the test.
func waitSlotsFree(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(s.detectSlots) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d detect computations still running", len(s.detectSlots))
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.Gosched()
}

// TestOpenAPIDocumentsAccess: every /api/v1 operation documents the 401 and 429 it can
// answer, and a 403 exactly when a read key is refused; the open routes say so with an
// empty security requirement and answer without a key.
func TestOpenAPIDocumentsAccess(t *testing.T) {
	s := newTestServer(t, Config{Keys: testKeys(), RateLimit: 1000})
	var doc struct {
		Paths map[string]map[string]struct {
			Security  *[]any                     `json:"security"`
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	param := strings.NewReplacer("{id}", "job_x", "{name}", "m")
	for path, ops := range doc.Paths {
		for method, op := range ops {
			method = strings.ToUpper(method)
			url := param.Replace(path)
			noKey := do(s.Handler(), method, url, "", "")
			req := httptest.NewRequest(method, url, nil)
			req.Header.Set("Authorization", "Bearer "+readSecret)
			readKey := httptest.NewRecorder()
			s.Handler().ServeHTTP(readKey, req)
			if !strings.HasPrefix(path, Prefix) {
				if op.Security == nil || len(*op.Security) != 0 || noKey.Code == 401 {
					t.Errorf("%s %s: open route with security %v answered %d without a key", method, path, op.Security, noKey.Code)
				}
				continue
			}
			if noKey.Code != 401 || op.Responses["401"] == nil || op.Responses["429"] == nil {
				t.Errorf("%s %s: %d without a key; documents 401: %v, 429: %v", method, path, noKey.Code, op.Responses["401"] != nil, op.Responses["429"] != nil)
			}
			if refused := readKey.Code == 403; refused != (op.Responses["403"] != nil) {
				t.Errorf("%s %s: a read key got %d, but 403 documented: %v", method, path, readKey.Code, op.Responses["403"] != nil)
			}
		}
	}
}
