package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gonomaly/gonomaly/schemas"
)

// PostgresConfig configures a PostgreSQL sink. ParsePostgresURI builds it from a URI.
type PostgresConfig struct {
	ConnString string // the URI for pgx: gonomaly's options taken out, libpq's left in
	Name       string // how errors and logs name the target: scheme://user@host:port/db, never the password
	Schema     string // "": the first schema on the search_path (usually public)
	Table      string // "": anomalies for anomaly events, results for results
	Create     bool   // create the schema, table and indexes if the table is missing
	Timeout    time.Duration
	Retries    int // retries after the first attempt for transient failures; -1: forever
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// pgOptions are the query parameters gonomaly reads; every other one (sslmode,
// application_name, connect_timeout, …) is passed to pgx as libpq would take it.
var pgOptions = map[string]bool{"table": true, "schema": true, "create": true, "timeout": true,
	"retries": true, "backoff": true, "max_backoff": true}

// pgIdent is what the sink accepts as a schema or table name: lowercase, so the name
// works unquoted in psql too, and short enough that "<table>_series_ts_idx" stays
// within PostgreSQL's 63-byte identifiers.
var pgIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// ParsePostgresURI reads "postgres://user@host:5432/db?table=anomalies&schema=ops&
// sslmode=require". The password may be in the URI, in PGPASSWORD or in ~/.pgpass; it
// is never shown in errors.
func ParsePostgresURI(uri string) (PostgresConfig, error) {
	cfg := PostgresConfig{Create: true}
	if scheme, _, ok := strings.Cut(uri, "://"); !ok || (scheme != "postgres" && scheme != "postgresql") {
		return cfg, fmt.Errorf("sink %s: not a postgres:// or postgresql:// URI", redactPostgres(uri))
	}
	u, err := url.Parse(uri)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error repeats the whole URI, password included
		}
		return cfg, fmt.Errorf("sink %s: not a valid URI: %v", redactPostgres(uri), err)
	}
	cfg.Name = pgName(u)
	vals, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("sink %s: options: %v", cfg.Name, err)
	}
	ours, theirs := url.Values{}, url.Values{}
	for k, v := range vals {
		if pgOptions[k] {
			ours[k] = v
		} else {
			theirs[k] = v
		}
	}
	o, err := parseOptions(cfg.Name, ours.Encode())
	if err != nil {
		return cfg, err
	}
	if cfg.Table = o.str("table", ""); cfg.Table != "" && !pgIdent.MatchString(cfg.Table) {
		return cfg, o.errf("table", "want a lowercase SQL name: a-z, 0-9 and _, not starting with a digit, at most 48 characters")
	}
	if cfg.Schema = o.str("schema", ""); cfg.Schema != "" && !pgIdent.MatchString(cfg.Schema) {
		return cfg, o.errf("schema", "want a lowercase SQL name: a-z, 0-9 and _, not starting with a digit, at most 48 characters")
	}
	if cfg.Create, err = o.bool("create", true); err != nil {
		return cfg, err
	}
	if cfg.Timeout, err = o.duration("timeout", 30*time.Second, time.Millisecond, time.Hour); err != nil {
		return cfg, err
	}
	if cfg.Retries, err = o.int("retries", -1, -1, 1_000_000); err != nil {
		return cfg, err
	}
	if cfg.Backoff, err = o.duration("backoff", 200*time.Millisecond, time.Millisecond, time.Hour); err != nil {
		return cfg, err
	}
	if cfg.MaxBackoff, err = o.duration("max_backoff", max(30*time.Second, cfg.Backoff), cfg.Backoff, 24*time.Hour); err != nil {
		return cfg, err
	}
	if err := o.unknown(); err != nil {
		return cfg, err
	}
	// The URI as the user wrote it, minus our options: url.URL.String would turn
	// "postgres://?sslmode=…" into "postgres:", which pgx no longer reads as a URI.
	base, _, _ := strings.Cut(uri, "#")
	base, _, _ = strings.Cut(base, "?")
	cfg.ConnString = base
	if len(theirs) > 0 {
		cfg.ConnString += "?" + theirs.Encode()
	}
	return cfg, nil
}

// pgName shows a target as scheme://user@host:port/db.
func pgName(u *url.URL) string {
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil && u.User.Username() != "" {
		b.WriteString(u.User.Username() + "@")
	}
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	return b.String()
}

// redactPostgres names a URI that is not a usable postgres:// URI: its scheme and what
// follows the last '@' up to the path, so a password never shows.
func redactPostgres(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		if u, err := url.Parse(uri); err == nil && u.User == nil {
			return uri
		}
		if i := strings.LastIndexByte(uri, '@'); i >= 0 {
			return "…" + uri[i:]
		}
		return uri
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	return scheme + "://" + rest + "/…"
}

func openPostgres(uri string) (Sink, error) {
	cfg, err := ParsePostgresURI(uri)
	if err != nil {
		return nil, err
	}
	return OpenPostgres(context.Background(), cfg)
}

// pgStage is the session's staging table: each batch is COPYed into it and moved into
// the target with one INSERT … SELECT … ON CONFLICT DO NOTHING, which makes a replay
// after a crash write nothing twice. ON COMMIT DELETE ROWS empties it at every commit.
const pgStage = "gonomaly_stage"

const pgStageDDL = `CREATE TEMP TABLE IF NOT EXISTS ` + pgStage + ` (
	event_id text, series text, ts timestamptz, score double precision, threshold double precision,
	severity text, detectors jsonb, contributions jsonb, "values" jsonb, source_topic text,
	source_partition integer, source_offset bigint, pipeline text, model_version text,
	detected_at timestamptz, is_anomaly boolean) ON COMMIT DELETE ROWS`

// pgLockKey namespaces the advisory lock two sinks take while creating the same table.
const pgLockKey = 0x676f6e6f // "gono"

var pgColumns = []string{"event_id", "series", "ts", "score", "threshold", "severity", "detectors",
	"contributions", "values", "source_topic", "source_partition", "source_offset", "pipeline",
	"model_version", "detected_at", "is_anomaly"}

// Postgres writes anomaly events (or results) into a table, one transaction per
// delivered batch: COPY into a session's staging table, then INSERT … SELECT … ON
// CONFLICT (event_id) DO NOTHING, then COMMIT. Deliver returns only once the
// transaction is committed, so the runner commits Kafka offsets after the database
// does. Connection loss, a server shutting down or restarting, serialization failures
// and deadlocks are retried with backoff; a batch the server refuses for a data reason
// is split until the refused rows are found, and only those are rejected.
type Postgres struct {
	cfg  PostgresConfig
	pool *pgxpool.Pool
	m    *metrics
	log  *slog.Logger

	results bool   // writing results (with is_anomaly) rather than anomaly events
	table   string // the target, quoted and qualified, once it is known to exist
	insert  string // INSERT … SELECT from the stage into table

	rows []pgRow
	json []byte // the rows' detectors, contributions and values objects, back to back
	res  schemas.Result
	vals []any
}

// pgRow is one pending event; its JSON objects are ranges of Postgres.json.
type pgRow struct {
	eventID, series, severity, topic, pipeline, modelVersion string
	ts, detectedAt                                           int64
	score, threshold                                         float64
	partition                                                int32
	offset                                                   int64
	isAnomaly                                                bool
	detectors, contributions, values                         [2]int32
}

// OpenPostgres connects to the server, so a wrong URI, password or database, or an
// unreachable host fails the start. The table is created at the first delivery, when
// the sink knows whether it writes events or results (CreateTables does it earlier).
func OpenPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	pc, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("sink %s: %s", cfg.Name, scrubUserinfo(pgParseError(err)))
	}
	pc.MaxConns = 1 // deliveries are sequential; one session also keeps one staging table
	pc.MinConns = 0
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "gonomaly-sink"
	}
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, pgStageDDL)
		return err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = cfg.Backoff
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("sink %s: %v", cfg.Name, err)
	}
	pctx, cancel := context.WithTimeout(ctx, min(cfg.Timeout, pc.ConnConfig.ConnectTimeout+time.Second))
	err = pool.Ping(pctx)
	cancel()
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("sink %s: cannot connect: %s", cfg.Name, scrubUserinfo(err.Error()))
	}
	return &Postgres{cfg: cfg, pool: pool, log: slog.New(slog.DiscardHandler), vals: make([]any, len(pgColumns))}, nil
}

// userinfo matches the user:password@ of a URI inside a message.
var userinfo = regexp.MustCompile(`://[^/?#@\s]*:[^/?#@\s]*@`)

// scrubUserinfo hides any URI password a driver message may quote.
func scrubUserinfo(msg string) string { return userinfo.ReplaceAllString(msg, "://…@") }

// pgParseError says what pgx disliked in a connection string without repeating it.
func pgParseError(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if inner := errors.Unwrap(pe); inner != nil {
			return "invalid connection settings: " + inner.Error()
		}
		msg := pe.Error()
		if i := strings.Index(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		}
		return "invalid connection settings: " + msg
	}
	return "invalid connection settings"
}

func (p *Postgres) kind() string          { return "postgres" }
func (p *Postgres) instrument(m *metrics) { p.m = m }
func (p *Postgres) configure(events bool, log *slog.Logger) {
	p.results = !events
	if log != nil {
		p.log = log
	}
}

// tableName is the target the sink writes: the table option, else anomalies or results.
func (p *Postgres) tableName() pgx.Identifier {
	t := p.cfg.Table
	if t == "" {
		t = "anomalies"
		if p.results {
			t = "results"
		}
	}
	if p.cfg.Schema != "" {
		return pgx.Identifier{p.cfg.Schema, t}
	}
	return pgx.Identifier{t}
}

func (p *Postgres) columns() []string {
	if p.results {
		return pgColumns
	}
	return pgColumns[:len(pgColumns)-1]
}

// Write decodes one event and queues it. Lines that are not events, or events without
// an event_id (the table's unique key), are rejected at once.
func (p *Postgres) Write(line []byte) error {
	r := &p.res
	if err := schemas.DecodeResult(line, r); err != nil {
		return Reject(fmt.Errorf("postgres: not an event: %w", err))
	}
	if r.EventID == "" {
		return Reject(errors.New("postgres: event without event_id, the table's unique key"))
	}
	row := pgRow{eventID: r.EventID, series: r.Series, severity: r.Severity, topic: r.Source.Topic,
		pipeline: r.Pipeline, modelVersion: r.ModelVersion, ts: r.TS, detectedAt: r.DetectedAt,
		score: r.Score, threshold: r.Threshold, partition: r.Source.Partition, offset: r.Source.Offset,
		isAnomaly: r.IsAnomaly}
	row.detectors = p.appendObject(r.Detectors)
	row.contributions = p.appendObject(r.Contributions)
	row.values = p.appendObject(r.Values)
	p.rows = append(p.rows, row)
	return nil
}

// appendObject writes m as a JSON object into p.json and returns its range. Key order
// does not matter: jsonb keeps its own.
func (p *Postgres) appendObject(m map[string]float64) [2]int32 {
	start := len(p.json)
	b := append(p.json, '{')
	first := true
	for k, v := range m {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONText(b, k)
		b = append(b, ':')
		b = strconv.AppendFloat(b, v, 'g', -1, 64) // finite: DecodeResult refuses NaN and ±Inf
	}
	p.json = append(b, '}')
	return [2]int32{int32(start), int32(len(p.json))}
}

// appendJSONText writes s as a JSON string; s is valid UTF-8 (DecodeResult repairs it).
func appendJSONText(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			dst = utf8.AppendRune(dst, r)
			i += size
			continue
		}
		i++
	}
	return append(dst, '"')
}

func (p *Postgres) reset() {
	clear(p.rows) // drop the strings
	p.rows, p.json = p.rows[:0], p.json[:0]
}

// Sync delivers without a deadline; rejections become an error.
func (p *Postgres) Sync() error {
	rej, err := p.Deliver(context.Background())
	if err == nil && len(rej) > 0 {
		err = fmt.Errorf("postgres %s: %d events rejected, first: %w", p.cfg.Name, len(rej), rej[0].Err)
	}
	return err
}

// Deliver writes the pending events in one transaction, retrying transient failures
// until it commits, the retry budget is spent or ctx ends, and forgets them either way.
func (p *Postgres) Deliver(ctx context.Context) ([]Rejection, error) {
	defer p.reset()
	if len(p.rows) == 0 {
		return nil, nil
	}
	for attempt := 0; ; attempt++ {
		rej, err := p.deliverOnce(ctx)
		if err == nil {
			return rej, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("postgres %s: %w (last error: %v)", p.cfg.Name, ctx.Err(), err)
		}
		if !pgTransient(err) {
			return nil, fmt.Errorf("postgres %s: %w", p.cfg.Name, err)
		}
		if p.cfg.Retries >= 0 && attempt >= p.cfg.Retries {
			return nil, fmt.Errorf("postgres %s: gave up after %d attempts: %w", p.cfg.Name, attempt+1, err)
		}
		wait := backoff(p.cfg.Backoff, p.cfg.MaxBackoff, attempt)
		if p.m != nil {
			p.m.retried.Inc()
		}
		p.log.Warn("postgres sink: transient failure, retrying the batch", "target", p.cfg.Name,
			"attempt", attempt+1, "events", len(p.rows), "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("postgres %s: %w (last error: %v)", p.cfg.Name, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// step bounds one statement or round trip by the timeout option, so a server that
// stops answering counts as a transient failure instead of hanging the sink.
func (p *Postgres) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.cfg.Timeout)
}

func (p *Postgres) deliverOnce(ctx context.Context) ([]Rejection, error) {
	sctx, cancel := p.step(ctx)
	conn, err := p.pool.Acquire(sctx)
	cancel()
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if err := p.ensureTable(ctx, conn.Conn()); err != nil {
		return nil, err
	}
	err = p.inTx(ctx, conn.Conn(), func(tx pgx.Tx) error { return p.load(ctx, tx, 0, len(p.rows)) })
	if err == nil || !pgDataError(err) {
		return nil, err
	}
	// The server refused something in the batch: find the rows, dead-letter them,
	// write the rest (in order, in one transaction).
	var rej []Rejection
	err = p.inTx(ctx, conn.Conn(), func(tx pgx.Tx) error {
		rej = rej[:0]
		return p.isolate(ctx, tx, 0, len(p.rows), true, &rej)
	})
	return rej, err
}

// inTx runs fn in a transaction and commits it.
func (p *Postgres) inTx(ctx context.Context, c *pgx.Conn, fn func(pgx.Tx) error) error {
	sctx, cancel := p.step(ctx)
	tx, err := c.Begin(sctx)
	cancel()
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		rctx, cancel := p.step(context.WithoutCancel(ctx))
		tx.Rollback(rctx) // a broken connection is dropped by the pool
		cancel()
		return err
	}
	sctx, cancel = p.step(ctx)
	defer cancel()
	return tx.Commit(sctx)
}

// load moves rows [lo, hi) into the target through the staging table.
func (p *Postgres) load(ctx context.Context, tx pgx.Tx, lo, hi int) error {
	sctx, cancel := p.step(ctx)
	defer cancel()
	if _, err := tx.CopyFrom(sctx, pgx.Identifier{pgStage}, p.columns(), &pgSource{p: p, i: lo - 1, hi: hi}); err != nil {
		return err
	}
	_, err := tx.Exec(sctx, p.insert)
	return err
}

// isolate writes rows [lo, hi), splitting the range in halves under savepoints until
// each refused row stands alone; those become rejections. known says the whole range
// is already known to fail. A refusal that is not about data ends the search.
func (p *Postgres) isolate(ctx context.Context, tx pgx.Tx, lo, hi int, known bool, rej *[]Rejection) error {
	if !known {
		sctx, cancel := p.step(ctx)
		defer cancel()
		if _, err := tx.Exec(sctx, "SAVEPOINT gonomaly_rows"); err != nil {
			return err
		}
		err := p.load(ctx, tx, lo, hi)
		if err == nil {
			// Empty the stage for the next range; the savepoint goes with it.
			_, err = tx.Exec(sctx, "DELETE FROM "+pgStage+"; RELEASE SAVEPOINT gonomaly_rows")
			return err
		}
		if !pgDataError(err) {
			return err
		}
		if _, rerr := tx.Exec(sctx, "ROLLBACK TO SAVEPOINT gonomaly_rows; RELEASE SAVEPOINT gonomaly_rows"); rerr != nil {
			return rerr
		}
		if hi-lo == 1 {
			*rej = append(*rej, Rejection{Index: lo, Err: fmt.Errorf("postgres %s: table %s refused the event: %w", p.cfg.Name, p.table, err)})
			return nil
		}
	}
	if hi-lo == 1 { // known to fail on its own: find out why
		return p.isolate(ctx, tx, lo, hi, false, rej)
	}
	mid := lo + (hi-lo)/2
	if err := p.isolate(ctx, tx, lo, mid, false, rej); err != nil {
		return err
	}
	return p.isolate(ctx, tx, mid, hi, false, rej)
}

// ensureTable makes sure the target exists, creating it (with its schema and indexes)
// when create is on. A table that exists is used as it is: the sink never alters it,
// and needs no privilege beyond INSERT on it.
func (p *Postgres) ensureTable(ctx context.Context, c *pgx.Conn) error {
	id := p.tableName()
	name := id.Sanitize()
	if p.table == name {
		return nil
	}
	cols := p.columns()
	quoted := make([]string, len(cols))
	for i, col := range cols {
		quoted[i] = pgx.Identifier{col}.Sanitize()
	}
	list := strings.Join(quoted, ", ")
	insert := "INSERT INTO " + name + " (" + list + ") SELECT " + list + " FROM " + pgStage + " ON CONFLICT (event_id) DO NOTHING"
	exists, err := p.tableExists(ctx, c, name)
	if err != nil {
		return err
	}
	if !exists {
		if !p.cfg.Create {
			return &pgSetupError{fmt.Errorf("table %s does not exist (create=false: create it, or drop the option)", name)}
		}
		err := p.inTx(ctx, c, func(tx pgx.Tx) error {
			sctx, cancel := p.step(ctx)
			defer cancel()
			if _, err := tx.Exec(sctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", pgLockKey, name); err != nil {
				return err
			}
			for _, stmt := range p.ddl(id) {
				if _, err := tx.Exec(sctx, stmt); err != nil {
					return fmt.Errorf("creating %s: %w", name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	p.table, p.insert = name, insert
	return nil
}

func (p *Postgres) tableExists(ctx context.Context, c *pgx.Conn, name string) (bool, error) {
	sctx, cancel := p.step(ctx)
	defer cancel()
	var exists bool
	err := c.QueryRow(sctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists)
	return exists, err
}

// ddl creates the target: columns named after the event's JSON fields (source
// flattened), event_id the primary key, and indexes for a series' events over time
// and for time ranges across series.
func (p *Postgres) ddl(id pgx.Identifier) []string {
	table := id[len(id)-1]
	var stmts []string
	if len(id) == 2 {
		stmts = append(stmts, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{id[0]}.Sanitize())
	}
	isAnomaly := ""
	if p.results {
		isAnomaly = ",\n\tis_anomaly boolean NOT NULL"
	}
	stmts = append(stmts, `CREATE TABLE IF NOT EXISTS `+id.Sanitize()+` (
	event_id text PRIMARY KEY,
	series text NOT NULL,
	ts timestamptz NOT NULL,
	score double precision NOT NULL,
	threshold double precision NOT NULL,
	severity text NOT NULL,
	detectors jsonb NOT NULL,
	contributions jsonb NOT NULL,
	"values" jsonb NOT NULL,
	source_topic text NOT NULL,
	source_partition integer NOT NULL,
	source_offset bigint NOT NULL,
	pipeline text NOT NULL,
	model_version text NOT NULL,
	detected_at timestamptz NOT NULL`+isAnomaly+`
)`,
		"CREATE INDEX IF NOT EXISTS "+pgx.Identifier{table + "_series_ts_idx"}.Sanitize()+" ON "+id.Sanitize()+" (series, ts)",
		"CREATE INDEX IF NOT EXISTS "+pgx.Identifier{table + "_ts_idx"}.Sanitize()+" ON "+id.Sanitize()+" (ts)")
	return stmts
}

// CreateTables creates the target table now rather than at the first delivery.
func (p *Postgres) CreateTables(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres %s: %w", p.cfg.Name, err)
	}
	defer conn.Release()
	if err := p.ensureTable(ctx, conn.Conn()); err != nil {
		return fmt.Errorf("postgres %s: %w", p.cfg.Name, err)
	}
	return nil
}

// Table is the target table, quoted and qualified as the sink uses it in SQL.
func (p *Postgres) Table() string { return p.tableName().Sanitize() }

func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// pgSource feeds rows (i, hi) to COPY, reusing one values slice.
type pgSource struct {
	p     *Postgres
	i, hi int
}

func (s *pgSource) Next() bool { s.i++; return s.i < s.hi }
func (s *pgSource) Err() error { return nil }

func (s *pgSource) Values() ([]any, error) {
	r, v, js := &s.p.rows[s.i], s.p.vals, s.p.json
	v[0], v[1], v[2], v[3], v[4], v[5] = r.eventID, r.series, time.UnixMilli(r.ts).UTC(), r.score, r.threshold, r.severity
	v[6], v[7], v[8] = js[r.detectors[0]:r.detectors[1]], js[r.contributions[0]:r.contributions[1]], js[r.values[0]:r.values[1]]
	v[9], v[10], v[11], v[12], v[13] = r.topic, r.partition, r.offset, r.pipeline, r.modelVersion
	v[14] = time.UnixMilli(r.detectedAt).UTC()
	if !s.p.results {
		return v[:15], nil
	}
	v[15] = r.isAnomaly
	return v, nil
}

// pgDataError reports a refusal caused by the data of a row: an invalid value (class
// 22), a violated constraint (23) or a size limit such as an index entry too large (54).
// Such a refusal is permanent for that row, and the rest of the batch can still land.
func pgDataError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// pgTransient reports a failure worth retrying: the connection or server went away
// (class 08, shutdown 57P01-57P03, or any error below the SQL level), the server ran
// short of resources (53), a serialization failure or deadlock (40), a lock or
// statement timeout (55P03, 57014) or a read-only server during a failover (25006).
// Everything else (a missing table, a denied privilege, a bad password) needs a person.
func pgTransient(err error) bool {
	var se *pgSetupError
	if errors.As(err, &se) {
		return false
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return true // dial errors, resets, EOF, timeouts
	}
	switch pe.Code[:2] {
	case "08", "53", "40":
		return true
	}
	switch pe.Code {
	case "57P01", "57P02", "57P03", "55P03", "57014", "25006":
		return true
	}
	return false
}

// pgSetupError is a problem with the target's setup that no retry can fix.
type pgSetupError struct{ error }

func (e *pgSetupError) Unwrap() error { return e.error }
