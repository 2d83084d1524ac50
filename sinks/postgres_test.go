package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/dlq"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
	"github.com/gonomaly/gonomaly/sinks"
)

// The PostgreSQL tests run against a real server: GONOMALY_POSTGRES_URL when set, else a
// throwaway cluster this package starts once (in a temp dir, on a free 127.0.0.1 port)
// from the machine's PostgreSQL binaries and stops in TestMain.

func TestMain(m *testing.M) {
	code := m.Run()
	if c := pgServer.own; c != nil {
		c.stop()
		os.RemoveAll(c.dir)
	}
	os.Exit(code)
}

var pgServer struct {
	once sync.Once
	url  string     // postgres://…/postgres; empty when there is no server
	skip string     // why there is none
	err  error      // starting the cluster failed
	own  *pgCluster // nil when the server is GONOMALY_POSTGRES_URL's
}

const pgHowTo = "no PostgreSQL server: set GONOMALY_POSTGRES_URL (export GONOMALY_POSTGRES_URL=$(scripts/postgres.sh up)) or install PostgreSQL's server binaries (apt-get install postgresql)"

// postgresURL returns the test server's URL, skipping the test when there is none (and
// failing it when CI is set, where a skipped sink would pass unnoticed).
func postgresURL(t testing.TB) string {
	t.Helper()
	pgServer.once.Do(startPostgres)
	switch {
	case pgServer.err != nil:
		t.Fatalf("test PostgreSQL: %v", pgServer.err)
	case pgServer.url == "" && os.Getenv("CI") != "":
		t.Fatalf("CI is set but %s", pgServer.skip)
	case pgServer.url == "":
		t.Skip(pgServer.skip)
	}
	return pgServer.url
}

func startPostgres() {
	if u := os.Getenv("GONOMALY_POSTGRES_URL"); u != "" {
		pgServer.url = u
		return
	}
	bin := ""
	if found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(found) > 0 {
		slices.SortFunc(found, func(a, b string) int { return pgMajor(a) - pgMajor(b) })
		bin = filepath.Dir(found[len(found)-1])
	} else if p, err := exec.LookPath("initdb"); err == nil {
		bin = filepath.Dir(p)
	}
	if bin == "" {
		pgServer.skip = pgHowTo
		return
	}
	c, err := newCluster(bin)
	if err != nil {
		pgServer.err = err
		return
	}
	pgServer.own = c
	pgServer.url = c.url("postgres")
}

func pgMajor(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// pgCluster is a PostgreSQL server run as a child process: as the postgres user when
// the tests run as root (PostgreSQL refuses root), with fsync and synchronous_commit on
// as in production.
type pgCluster struct {
	bin, dir string
	port     int
	cred     *syscall.Credential
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
}

func newCluster(bin string) (*pgCluster, error) {
	dir, err := os.MkdirTemp("", "gonomaly-pg-")
	if err != nil {
		return nil, err
	}
	c := &pgCluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "-N")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	initdb.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb in %s: %v\n%s", dir, err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := c.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *pgCluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// start runs the server and waits until it takes connections.
func (c *pgCluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", filepath.Join(c.dir, "data"), "-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+c.dir, "-c", "max_connections=50")
	// Pdeathsig: a test binary that dies (timeout, kill) takes the server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	c.cmd, c.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.url("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
			return fmt.Errorf("postgres exited during start-up:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60 s: %v", err)
		}
	}
}

// stop shuts the server down the way an operator does ("fast": sessions are
// terminated with 57P01, in-flight transactions rolled back).
func (c *pgCluster) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

var pgTableSeq atomic.Int64

// pgTable returns a table name unique to the test (dropped when it ends) and the sink
// URI that writes it, with extra options appended.
func pgTable(t *testing.T, extra string) (table, uri string) {
	t.Helper()
	base := postgresURL(t)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.ToLower(t.Name()))
	if len(name) > 36 {
		name = name[len(name)-36:]
	}
	table = fmt.Sprintf("t%d_%s", pgTableSeq.Add(1), name)
	t.Cleanup(func() { pgExec(t, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()) })
	sep := "&"
	if !strings.Contains(base, "?") {
		sep = "?"
	}
	uri = base + sep + "table=" + table + "&backoff=10ms&max_backoff=200ms"
	if extra != "" {
		uri += "&" + extra
	}
	return table, uri
}

func pgConn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), postgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func pgExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := pgConn(t).Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgCount(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := pgConn(t).QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pgIDs lists the table's event ids in the order the rows were stored (the heap of an
// insert-only table), which is the order the sink inserted them.
func pgIDs(t testing.TB, table string) []string {
	t.Helper()
	rows, err := pgConn(t).Query(context.Background(), "SELECT event_id FROM "+table+" ORDER BY ctid")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func openPG(t *testing.T, uri string) *sinks.Postgres {
	t.Helper()
	s := mustOpen(t, uri)
	p, ok := s.(*sinks.Postgres)
	if !ok {
		t.Fatalf("Open(%q) gave a %T", uri, s)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func deliver(t *testing.T, s sinks.Deliverer, lines ...[]byte) []sinks.Rejection {
	t.Helper()
	for _, l := range lines {
		if err := s.Write(l); err != nil {
			t.Fatalf("Write(%s): %v", l, err)
		}
	}
	rej, err := s.Deliver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rej
}

func eventLines(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		ev := event(i)
		ev.Series = fmt.Sprintf("host-%d", i%7)
		ev.Contributions = map[string]float64{"v": 1}
		ev.DetectedAt = ev.TS + 250
		out = append(out, schemas.AppendAnomalyEventJSON(nil, ev))
	}
	return out
}

func TestPostgresSinkCreatesItsTables(t *testing.T) {
	table, uri := pgTable(t, "")
	s := openPG(t, uri)
	if rej := deliver(t, s, eventLines(0, 3)...); len(rej) != 0 {
		t.Fatalf("rejected %v", rej)
	}
	conn := pgConn(t)
	cols := func(table string) string {
		rows, _ := conn.Query(context.Background(), `SELECT column_name || ' ' || data_type FROM information_schema.columns
			WHERE table_name = $1 ORDER BY ordinal_position`, table)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, ", ")
	}
	const want = "event_id text, series text, ts timestamp with time zone, score double precision, threshold double precision, " +
		"severity text, detectors jsonb, contributions jsonb, values jsonb, source_topic text, source_partition integer, " +
		"source_offset bigint, pipeline text, model_version text, detected_at timestamp with time zone"
	if got := cols(table); got != want {
		t.Fatalf("columns:\n got %s\nwant %s", got, want)
	}
	rows, _ := conn.Query(context.Background(), `SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname`, table)
	idx, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(idx, "\n")
	for _, w := range []string{"UNIQUE INDEX " + table + "_pkey ON public." + table + " USING btree (event_id)",
		"INDEX " + table + "_series_ts_idx ON public." + table + " USING btree (series, ts)",
		"INDEX " + table + "_ts_idx ON public." + table + " USING btree (ts)"} {
		if !strings.Contains(joined, w) {
			t.Errorf("no %q among the indexes:\n%s", w, joined)
		}
	}

	// Results (the runner says which it feeds) get is_anomaly; schema= puts the table
	// in a schema the sink creates.
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, -1, nil, prefix+"results"); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		r := event(i)
		r.IsAnomaly = i%2 == 0
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: prefix + "results", Value: schemas.AppendResultAvro(nil, r)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	schema := table + "_s"
	t.Cleanup(func() { pgExec(t, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	rs := openPG(t, strings.Replace(uri, "table="+table, "schema="+schema, 1))
	runUntil(t, rs, sinks.RunnerConfig{Topic: prefix + "results", Group: prefix + "sink", ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}}, 4)
	if got := cols("results"); !strings.HasSuffix(got, "detected_at timestamp with time zone, is_anomaly boolean") {
		t.Fatalf("results columns: %s", got)
	}
	var anomalies int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FILTER (WHERE is_anomaly) FROM "+schema+".results").Scan(&anomalies); err != nil || anomalies != 2 {
		t.Fatalf("%d anomalies among the results (%v), want 2", anomalies, err)
	}
	if rs.Table() != `"`+schema+`"."results"` {
		t.Fatalf("Table() = %s", rs.Table())
	}
}

// runUntil runs the runner on s until want records are committed.
func runUntil(t *testing.T, s sinks.Sink, cfg sinks.RunnerConfig, want int64) {
	t.Helper()
	var committed atomic.Int64
	cfg.Written = func(recs []*kgo.Record) { committed.Add(int64(len(recs))) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sinks.Run(ctx, s, cfg) }()
	for deadline := time.Now().Add(30 * time.Second); committed.Load() < want; {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("committed %d records, want %d", committed.Load(), want)
		}
		select {
		case err := <-done:
			t.Fatalf("runner stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPostgresSinkWritesABatchAndReadsItBack(t *testing.T) {
	table, uri := pgTable(t, "")
	s := openPG(t, uri)
	lines := eventLines(0, 2500)
	for from := 0; from < len(lines); from += 1000 {
		if rej := deliver(t, s, lines[from:min(from+1000, len(lines))]...); len(rej) != 0 {
			t.Fatalf("rejected %v", rej)
		}
	}
	if n := pgCount(t, table); n != 2500 {
		t.Fatalf("%d rows, want 2500", n)
	}
	ids := pgIDs(t, table)
	checkDelivery(t, ids, 2500, 0)
	var (
		series, severity, topic, pipeline, model string
		ts, detected                             time.Time
		score, threshold                         float64
		detectors, contributions, values         map[string]float64
		partition                                int32
		offset                                   int64
	)
	err := pgConn(t).QueryRow(context.Background(), `SELECT series, ts, score, threshold, severity, detectors, contributions,
		"values", source_topic, source_partition, source_offset, pipeline, model_version, detected_at FROM `+table+` WHERE event_id = 'e1234'`).
		Scan(&series, &ts, &score, &threshold, &severity, &detectors, &contributions, &values, &topic, &partition, &offset, &pipeline, &model, &detected)
	if err != nil {
		t.Fatal(err)
	}
	want := event(1234)
	if series != "host-2" || ts.UnixMilli() != want.TS || score != want.Score || threshold != want.Threshold ||
		severity != "critical" || detectors["zscore"] != 1 || contributions["v"] != 1 || values["v"] != 1234 ||
		topic != "r" || partition != 0 || offset != 1234 || pipeline != "default" || model != "" || detected.UnixMilli() != want.TS+250 {
		t.Fatalf("row e1234 read back as %v %v %v %v %v %v %v %v %v %v %v %v %q %v", series, ts, score, threshold, severity,
			detectors, contributions, values, topic, partition, offset, pipeline, model, detected)
	}
}

func TestPostgresSinkReplayWritesNoDuplicates(t *testing.T) {
	table, uri := pgTable(t, "")
	lines := eventLines(0, 300)
	s := openPG(t, uri)
	deliver(t, s, lines...)
	deliver(t, s, lines...)                                         // the same batch again, as after a crash before the Kafka commit
	deliver(t, s, append(lines[100:200:200], lines[150:250]...)...) // overlapping, duplicates within one batch
	s.Close()
	s2 := openPG(t, uri) // a restarted process
	deliver(t, s2, lines[:200]...)
	if n := pgCount(t, table); n != 300 {
		t.Fatalf("%d rows after replays, want 300", n)
	}
	checkDelivery(t, pgIDs(t, table), 300, 0)
}

func TestPostgresSinkDeadLettersRefusedRowsAndWritesTheRest(t *testing.T) {
	table, uri := pgTable(t, "")
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	topic, dlqTopic := prefix+"anomalies", prefix+"dlq"
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, -1, nil, topic, dlqTopic); err != nil {
		t.Fatal(err)
	}
	// The operator's own rule on the table, which the sink must respect.
	s := openPG(t, uri)
	if err := s.CreateTables(context.Background()); err != nil {
		t.Fatal(err)
	}
	pgExec(t, "ALTER TABLE "+table+" ADD CONSTRAINT score_at_most_1 CHECK (score <= 1)")
	huge := make([]byte, 20_000)
	for i := range huge {
		huge[i] = byte('a' + rand.N(26))
	}
	bad := map[int]string{
		3:  "22021", // a NUL byte: PostgreSQL text cannot hold one
		9:  "23514", // breaks the CHECK constraint
		10: "54000", // a series too long for the (series, ts) index
	}
	for i := range 20 {
		ev := event(i)
		switch i {
		case 3:
			ev.Series = "bad\x00series"
		case 9:
			ev.Score = 7
		case 10:
			ev.Series = string(huge)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(ev.EventID), Value: schemas.AppendAnomalyEventJSON(nil, ev)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	runUntil(t, s, sinks.RunnerConfig{Topic: topic, Group: prefix + "sink", Events: true, DLQTopic: dlqTopic,
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Registry: reg}, 20)
	var wantIDs []string
	for i := range 20 {
		if _, ok := bad[i]; !ok {
			wantIDs = append(wantIDs, fmt.Sprintf("e%04d", i))
		}
	}
	if got := pgIDs(t, table); !slices.Equal(got, wantIDs) {
		t.Fatalf("table holds %v, want %v", got, wantIDs)
	}
	dead := testkit.ReadN(t, brokers, dlqTopic, 3, 10*time.Second)
	if len(dead) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dead))
	}
	for _, d := range dead {
		i, _ := strconv.Atoi(strings.TrimPrefix(string(d.Key), "e"))
		reason := dlq.Header(d, "error")
		if dlq.Header(d, "reason") != "rejected" || !strings.Contains(reason, "refused the event") || !strings.Contains(reason, "SQLSTATE "+bad[i]) {
			t.Errorf("dead letter %s: reason %q, error %q; want rejected with SQLSTATE %s", d.Key, dlq.Header(d, "reason"), reason, bad[i])
		}
	}
	if w, f := counterValue(t, reg, "gonomaly_sink_written_total"), counterValue(t, reg, "gonomaly_sink_failed_total"); w != 17 || f != 3 {
		t.Fatalf("written %v failed %v, want 17 and 3", w, f)
	}
}

// counterValue reads the one series of a counter in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no single %s in the registry", name)
	return 0
}

func TestPostgresSinkRidesOutAServerRestart(t *testing.T) {
	table, uri := pgTable(t, "")
	c := pgServer.own
	if c == nil {
		t.Skip("needs a server the test can stop: unset GONOMALY_POSTGRES_URL to use a throwaway cluster")
	}
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	topic := prefix + "anomalies"
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i, l := range eventLines(from, to) {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa((from + i) % 7)), Value: l})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	s := openPG(t, uri)
	reg := prometheus.NewRegistry()
	var committed atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- sinks.Run(ctx, s, sinks.RunnerConfig{Topic: topic, Group: prefix + "sink", Events: true, MaxPollRecords: 50,
			ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Registry: reg, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
			Written: func(recs []*kgo.Record) { committed.Add(int64(len(recs))) }})
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (committed %d)", what, committed.Load())
			}
			select {
			case err := <-done:
				t.Fatalf("runner stopped while waiting for %s: %v", what, err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	produce(0, 300)
	waitFor("the first 300", func() bool { return committed.Load() == 300 })

	c.stop()
	restarted := false
	defer func() {
		if !restarted { // leave the server up for the other tests
			if err := c.start(); err != nil {
				t.Error(err)
			}
		}
	}()
	produce(300, 600)
	retried := func() float64 { return counterValue(t, reg, "gonomaly_sink_retried_total") }
	waitFor("retries while the server is down", func() bool { return retried() >= 3 })
	if got := committed.Load(); got != 300 {
		t.Fatalf("%d records committed while the database was down, want 300", got)
	}
	restarted = true
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	waitFor("all 600", func() bool { return committed.Load() == 600 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ids := pgIDs(t, table)
	if len(ids) != 600 {
		t.Fatalf("%d rows, want 600", len(ids))
	}
	checkDelivery(t, ids, 600, 0)
	t.Logf("retried %v times while the server was down", retried())
}

func TestPostgresSinkStartErrorsNameTheTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	const pw = "pa55word"
	for uri, want := range map[string]string{
		"postgres://u:" + pw + "@" + closed + "/db":                     "sink postgres://u@" + closed + "/db: cannot connect",
		"postgresql://u:" + pw + "@" + closed + "/db?connect_timeout=1": "sink postgresql://u@" + closed + "/db: cannot connect",
		"postgres://u:" + pw + "@127.0.0.1:99999999/db":                 "sink postgres://u@127.0.0.1:99999999/db: invalid connection settings: invalid port",
		"postgres://u:" + pw + "@[::1/db":                               "sink postgres://[::1/…: not a valid URI",
		"postgres://u:" + pw + "@" + closed + "/db?table=Anomalies":     `sink postgres://u@` + closed + `/db: option table="Anomalies": want a lowercase SQL name`,
		"postgres://u:" + pw + "@" + closed + "/db?schema=a.b":          `option schema="a.b": want a lowercase SQL name`,
		"postgres://u:" + pw + "@" + closed + "/db?timeout=soon":        `option timeout="soon"`,
		"postgres://u:" + pw + "@" + closed + "/db?sslmode=sometimes":   "sink postgres://u@" + closed + "/db: invalid connection settings",
		"postgress://u:" + pw + "@" + closed + "/db":                    "unknown kind",
	} {
		_, err := sinks.Open(uri)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), pw) {
			t.Errorf("Open(%q):\n got %v\nwant an error with %q and without the password", uri, err, want)
		}
	}

	// Against a real server: a misspelt libpq parameter, a missing database, a missing
	// table with create=false.
	base := postgresURL(t)
	for suffix, want := range map[string]string{
		"&tabel=x": `unrecognized configuration parameter "tabel"`,
	} {
		if _, err := sinks.Open(base + suffix); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s): %v, want %q", suffix, err, want)
		}
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_db"
	if _, err := sinks.Open(u.String()); err == nil || !strings.Contains(err.Error(), `database "no_such_db" does not exist`) {
		t.Errorf("missing database: %v", err)
	}
	_, uri := pgTable(t, "create=false")
	s := openPG(t, uri)
	if err := s.Write(eventLines(0, 1)[0]); err != nil {
		t.Fatal(err)
	}
	_, err = s.Deliver(context.Background())
	if err == nil || !strings.Contains(err.Error(), "does not exist (create=false") {
		t.Fatalf("create=false on a missing table: %v", err)
	}
}

func TestPostgresSinkRejectsLinesThatAreNotEvents(t *testing.T) {
	_, uri := pgTable(t, "")
	s := openPG(t, uri)
	for _, line := range []string{`not json`, `{"series":"s","ts":1}`, `{"event_id":"x","score":"high"}`} {
		err := s.Write([]byte(line))
		var rej *sinks.RejectedError
		if !errors.As(err, &rej) {
			t.Errorf("Write(%s) = %v, want a rejection", line, err)
		}
	}
}

// FuzzParsePostgresURI: any input either parses into names that are safe to put in SQL
// and a connection string that has none of gonomaly's options, or fails without
// showing the password.
func FuzzParsePostgresURI(f *testing.F) {
	for _, s := range []string{
		"postgres://u:pw@127.0.0.1:5432/db?table=anomalies&schema=ops&sslmode=disable",
		"postgresql://host/db?timeout=5s&retries=3&backoff=10ms&max_backoff=1s&create=false",
		"postgres://u:pw@h/db?table=A%22;drop",
		"postgres://u:pw@[::1]:5432/db?application_name=x&table=t&table=u",
		"postgres://u:pw@h:bad/db",
		"postgres:///db?host=/var/run/postgresql",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		cfg, err := sinks.ParsePostgresURI(uri)
		// The password as url.Parse sees it (or, when it cannot parse, what stands between
		// the first ':' after "//" and the last '@'), if it is distinctive enough that
		// finding it in a message means it leaked.
		pw := ""
		if u, perr := url.Parse(uri); perr == nil {
			if u.User != nil {
				pw, _ = u.User.Password()
			}
		} else if at := strings.LastIndexByte(uri, '@'); at > 0 {
			if _, userinfo, ok := strings.Cut(uri[:at], "://"); ok {
				_, pw, _ = strings.Cut(userinfo, ":")
			}
		}
		if len(pw) < 4 || strings.Count(uri, pw) != 1 || strings.Trim(pw, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			pw = ""
		}
		if err != nil {
			if pw != "" && strings.Contains(err.Error(), pw) {
				t.Fatalf("error shows the password %q: %v", pw, err)
			}
			return
		}
		for _, name := range []string{cfg.Table, cfg.Schema} {
			if strings.ContainsAny(name, `"';. `) || strings.ToLower(name) != name || len(name) > 48 {
				t.Fatalf("unsafe name %q", name)
			}
		}
		if pw != "" && strings.Contains(cfg.Name, pw) {
			t.Fatalf("name %q shows the password", cfg.Name)
		}
		if !strings.HasPrefix(cfg.ConnString, "postgres://") && !strings.HasPrefix(cfg.ConnString, "postgresql://") {
			t.Fatalf("connection string %q is not a URI pgx recognises", cfg.ConnString)
		}
		u, err := url.Parse(cfg.ConnString)
		if err != nil {
			t.Fatalf("connection string %q: %v", cfg.ConnString, err)
		}
		for _, opt := range []string{"table", "schema", "create", "timeout", "retries", "backoff", "max_backoff"} {
			if u.Query().Has(opt) {
				t.Fatalf("option %s left in the connection string %q", opt, cfg.ConnString)
			}
		}
		if cfg.Timeout <= 0 || cfg.Backoff <= 0 || cfg.MaxBackoff < cfg.Backoff || cfg.Retries < -1 {
			t.Fatalf("bad settings %+v", cfg)
		}
	})
}

// BenchmarkPostgresSink writes batches of distinct events (every row a real insert,
// unlike `gonomaly bench sink`, which cycles 1,000 event ids) and reports events/s and
// the batch latency. Each iteration is one batch:
//
//	GONOMALY_POSTGRES_URL=$(scripts/postgres.sh up) go test -run '^$' -bench PostgresSink -benchtime 200x ./sinks/
func BenchmarkPostgresSink(b *testing.B) {
	for _, batch := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchPostgres(b, batch) })
	}
}

func benchPostgres(b *testing.B, batch int) {
	base := postgresURL(b)
	table := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	sep := "&"
	if !strings.Contains(base, "?") {
		sep = "?"
	}
	s, err := sinks.Open(base + sep + "table=" + table)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		s.Close()
		pgExec(b, "DROP TABLE IF EXISTS "+table)
	}()
	d := s.(sinks.Deliverer)
	ev := &schemas.Result{Series: "host-000", Score: 0.97, Threshold: 0.9, Severity: "critical",
		Detectors: map[string]float64{"hst": 0.95, "zscore": 0.99}, Contributions: map[string]float64{"cpu": 0.81, "mem": 0.19},
		Values: map[string]float64{"cpu": 0.93, "mem": 0.41}, Source: schemas.Source{Topic: "gonomaly.records", Partition: 3}, Pipeline: "default"}
	var (
		lat  []time.Duration
		line []byte
		seq  int
	)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		for range batch {
			seq++
			ev.EventID, ev.Series = fmt.Sprintf("bench-%09d", seq), fmt.Sprintf("host-%03d", seq%100)
			ev.TS, ev.DetectedAt, ev.Source.Offset = 1_795_000_000_000+int64(seq), 1_795_000_000_100+int64(seq), int64(seq)
			line = schemas.AppendAnomalyEventJSON(line[:0], ev)
			if err := d.Write(line); err != nil {
				b.Fatal(err)
			}
		}
		if rej, err := d.Deliver(context.Background()); err != nil || len(rej) != 0 {
			b.Fatal(rej, err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms/batch")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms/batch")
}
