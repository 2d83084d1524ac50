package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
)

// scannedDataset is what scanDataset read.
type scannedDataset struct {
	cols   []string
	labels bool
	rows   [][]float64
	lab    []float64
}

func scanTestDataset(input, format string) (scannedDataset, error) {
	var p scannedDataset
	cols, labels, _, err := scanDataset(strings.NewReader(input), format, func([]string, bool) {}, func(row []float64, label float64) error {
		p.rows = append(p.rows, slices.Clone(row))
		p.lab = append(p.lab, label)
		return nil
	})
	p.cols, p.labels = cols, labels
	if !labels {
		p.lab = nil
	}
	return p, err
}

func TestScanDatasetGood(t *testing.T) {
	tests := []struct {
		name, format, input string
		want                scannedDataset
	}{
		{"csv plain", "csv", "a,b\n1,2\n3,4.5\n",
			scannedDataset{cols: []string{"a", "b"}, rows: [][]float64{{1, 2}, {3, 4.5}}}},
		{"csv BOM, CRLF, spaces, quoted cells, label in any case, blank trailing line", "csv",
			"\ufeffa, b ,Label\r\n1,2,0\r\n\"3\",\" 4 \",1\r\n\r\n",
			scannedDataset{cols: []string{"a", "b"}, labels: true, rows: [][]float64{{1, 2}, {3, 4}}, lab: []float64{0, 1}}},
		{"csv quoted names with commas and quotes, no final newline", "csv",
			"\"x,y\",\"say \"\"hi\"\"\"\n-1e-3,+7\n1E2,0x1p-2",
			scannedDataset{cols: []string{"x,y", `say "hi"`}, rows: [][]float64{{-0.001, 7}, {100, 0.25}}}},
		{"csv label first, blank lines between rows", "csv", "label,v\n\n1,10\n   \n0,20\n",
			scannedDataset{cols: []string{"v"}, labels: true, rows: [][]float64{{10}, {20}}, lab: []float64{1, 0}}},
		{"ndjson keys sorted, label apart", "ndjson", "{\"b\":2,\"a\":1,\"LABEL\":1}\n\n{\"a\":3, \"LABEL\":0 ,\"b\":-4e1}\n",
			scannedDataset{cols: []string{"a", "b"}, labels: true, rows: [][]float64{{1, 2}, {3, -40}}, lab: []float64{1, 0}}},
		{"ndjson escaped keys, CRLF", "ndjson", "{\"c\\u00e9\":1,\"d\\\"\":0.5}\r\n{\"d\\\"\":2,\"cé\":3}",
			scannedDataset{cols: []string{"cé", `d"`}, rows: [][]float64{{1, 0.5}, {3, 2}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scanTestDataset(tc.input, tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.cols, tc.want.cols) || got.labels != tc.want.labels || !slices.Equal(got.lab, tc.want.lab) ||
				!slices.EqualFunc(got.rows, tc.want.rows, slices.Equal) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestScanDatasetErrors(t *testing.T) {
	long := "a\n" + strings.Repeat("1", MaxDatasetLineBytes+1) + "\n"
	tests := []struct {
		name, format, input string
		line                int
		column, msg         string
	}{
		{"csv empty", "csv", "", 1, "", "empty input"},
		{"csv blank only", "csv", "\n \n", 1, "", "empty input"},
		{"csv header only", "csv", "a,b\n", 2, "", "no rows"},
		{"csv ragged short", "csv", "a,b\n1,2\n3\n", 3, "", "1 fields, but the header has 2 columns"},
		{"csv ragged long, blank lines counted", "csv", "a,b\n1,2\n\n3,4,5\n", 4, "", "3 fields, but the header has 2 columns"},
		{"csv not a number", "csv", "a,cpu\n1,2\n1,abc\n", 3, "cpu", `"abc" is not a number`},
		{"csv NaN", "csv", "a,b\n1,NaN\n", 2, "b", `"NaN" is not a finite number`},
		{"csv infinity", "csv", "a,b\n1,-Inf\n", 2, "b", "is not a finite number"},
		{"csv overflow", "csv", "a,b\n1,1e999\n", 2, "b", `"1e999" is not a finite number`},
		{"csv empty cell", "csv", "a,b\n1, \n", 2, "b", "empty cell"},
		{"csv unnamed column", "csv", "a,,c\n", 1, "", "column 2 has no name"},
		{"csv duplicate column", "csv", "a,b,a\n", 1, "a", "appears twice"},
		{"csv two label columns", "csv", "x,label,LABEL\n", 1, "LABEL", "a second label column"},
		{"csv labels only", "csv", "label\n1\n", 1, "", "no feature columns"},
		{"csv label not 0/1", "csv", "a,label\n1,0\n1,2\n", 3, "label", `"2" is not a label: want 0 or 1`},
		{"csv unterminated quote", "csv", "a,b\n1,\"2\n3\"\n", 2, "b", "unterminated quoted field"},
		{"csv junk after quote", "csv", "a,b\n1,\"2\"x\n", 2, "b", "unexpected 'x' after a quoted field"},
		{"csv line too long", "csv", long, 2, "", "line longer than"},
		{"ndjson empty", "ndjson", "\n", 1, "", "empty input"},
		{"ndjson not an object", "ndjson", "[1,2]\n", 1, "", "want a JSON object of column names and numbers, got an array"},
		{"ndjson empty object", "ndjson", "{}\n", 1, "", "no feature columns"},
		{"ndjson missing key", "ndjson", "{\"a\":1,\"b\":2}\n{\"a\":1}\n", 2, "b", "missing"},
		{"ndjson missing label", "ndjson", "{\"a\":1,\"label\":0}\n{\"a\":1}\n", 2, "label", "missing"},
		{"ndjson extra key", "ndjson", "{\"a\":1}\n\n{\"a\":1,\"c\":2}\n", 3, "c", "unexpected key"},
		{"ndjson string value", "ndjson", "{\"a\":1}\n{\"a\":\"x\"}\n", 2, "a", `want a number, got the string "x"`},
		{"ndjson null value", "ndjson", "{\"a\":null}\n", 1, "a", "want a number, got null"},
		{"ndjson nested", "ndjson", "{\"a\":{\"b\":1}}\n", 1, "a", "want a number, got an object"},
		{"ndjson two objects on a line", "ndjson", "{\"a\":1}\n{\"a\":1}{\"a\":2}\n", 2, "", "unexpected data after the object"},
		{"ndjson duplicate key first line", "ndjson", "{\"a\":1,\"a\":2}\n", 1, "a", "appears twice"},
		{"ndjson duplicate key later", "ndjson", "{\"a\":1,\"b\":1}\n{\"a\":1,\"a\":1}\n", 2, "a", "appears twice"},
		{"ndjson leading zero", "ndjson", "{\"a\":01}\n", 1, "", "want ',' or '}' after a value"},
		{"ndjson bad number", "ndjson", "{\"a\":-}\n", 1, "", "malformed number"},
		{"ndjson overflow", "ndjson", "{\"a\":1e999}\n", 1, "a", `"1e999" is not a finite number`},
		{"ndjson label not 0/1", "ndjson", "{\"a\":1,\"label\":0.5}\n", 1, "label", "is not a label"},
		{"ndjson truncated", "ndjson", "{\"a\":1}\n\n{\"a\":", 3, "", "unexpected end of line"},
		{"ndjson unterminated key", "ndjson", "{\"a", 1, "", "unterminated string"},
		{"ndjson bad escape", "ndjson", "{\"a\\x\":1}", 1, "", "bad escape"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scanTestDataset(tc.input, tc.format)
			var de *DatasetError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T), want a *DatasetError", err, err)
			}
			if de.Line != tc.line || de.Column != tc.column || !strings.Contains(de.Msg, tc.msg) {
				t.Fatalf("got line %d, column %q, %q\nwant line %d, column %q, containing %q", de.Line, de.Column, de.Msg, tc.line, tc.column, tc.msg)
			}
			prefix := fmt.Sprintf("line %d", tc.line)
			if tc.column != "" {
				prefix += fmt.Sprintf(", column %q", tc.column)
			}
			if !strings.HasPrefix(err.Error(), prefix+": ") {
				t.Fatalf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

// TestScanDatasetMatchesODDS: the CSV reader reads an ODDS file as encoding/csv does.
func TestScanDatasetMatchesODDS(t *testing.T) {
	raw, err := os.ReadFile("../../shared/data/odds/cardio.csv")
	if err != nil {
		t.Skip(err)
	}
	got, err := scanTestDataset(string(raw), "csv")
	if err != nil {
		t.Fatal(err)
	}
	wantX, wantLabels, wantCols := parseODDSWithEncodingCSV(t, raw)
	if !slices.Equal(got.cols, wantCols) || !got.labels || !slices.Equal(got.lab, wantLabels) || len(got.rows) != wantX.Rows {
		t.Fatalf("cols %v labels %t rows %d; want cols %v rows %d", got.cols, got.labels, len(got.rows), wantCols, wantX.Rows)
	}
	for i, row := range got.rows {
		if !slices.Equal(row, wantX.Row(i)) {
			t.Fatalf("row %d: %v, want %v", i, row, wantX.Row(i))
		}
	}
}

// chunkTestStore opens a Store on a fresh broker (or KAFKA_BROKERS) with its topics.
func chunkTestStore(t testing.TB, partitions int32) (*Store, []string) {
	t.Helper()
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: partitions}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Without client metrics: their periodic push compresses with 4 MiB buffers, which
	// would blur the heap measurements of TestUploadDatasetStreams.
	producer := testkit.Client(t, brokers, kgo.DisableClientMetrics())
	if err := cfg.EnsureLayout(ctx, producer); err != nil {
		t.Fatal(err)
	}
	store, err := Open(ctx, producer, TopicsFor(cfg), func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DisableClientMetrics()}, opts...)...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return store, brokers
}

func chunkTestCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUploadAndReadDataset(t *testing.T) {
	store, brokers := chunkTestStore(t, 3)
	ctx := chunkTestCtx(t)
	// Enough rows for several chunks: 3 columns and labels are 25 bytes a row.
	const n = 45_000
	var b strings.Builder
	b.WriteString("cpu,label,mem,disk\n")
	want := detectors.NewMatrix(n, 3)
	wantLabels := make([]float64, n)
	for i := range n {
		row := want.Row(i)
		row[0], row[1], row[2] = float64(i)/4, float64(-i), float64(i%7)*1e-3
		wantLabels[i] = float64(i % 2)
		fmt.Fprintf(&b, "%s,%d,%s,%s\n", strconv.FormatFloat(row[0], 'g', -1, 64), i%2,
			strconv.FormatFloat(row[1], 'g', -1, 64), strconv.FormatFloat(row[2], 'g', -1, 64))
	}
	body := b.String()
	d, err := store.UploadDataset(ctx, strings.NewReader(body), "csv", "load")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	if d.Hash != "sha256:"+hex.EncodeToString(sum[:]) || d.Bytes != int64(len(body)) || d.Rows != n || d.Name != "load" ||
		d.Format != "csv" || !d.Labels || !slices.Equal(d.Columns, []string{"cpu", "mem", "disk"}) || !strings.HasPrefix(d.ID, "ds_") {
		t.Fatalf("dataset %+v", d)
	}
	if perChunk := (maxChunkBytes - datasetChunkHeader) / 25; len(d.Offsets) != (n+perChunk-1)/perChunk {
		t.Fatalf("%d chunks, want %d of at most %d rows", len(d.Offsets), (n+perChunk-1)/perChunk, perChunk)
	}
	if got, ok := store.Datasets.Get(d.ID); !ok || got.Hash != d.Hash {
		t.Fatalf("the view has %+v, %t", got, ok)
	}

	var progress []int
	X, labels, cols, err := store.ReadDataset(ctx, d, nil, func(rows int) { progress = append(progress, rows) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cols, d.Columns) || X.Rows != n || X.Cols != 3 || !slices.Equal(X.Data, want.Data) || !slices.Equal(labels, wantLabels) {
		t.Fatalf("read back %d×%d %v, labels %d", X.Rows, X.Cols, cols, len(labels))
	}
	if len(progress) != len(d.Offsets) || progress[len(progress)-1] != n || !slices.IsSorted(progress) {
		t.Fatalf("progress %v", progress)
	}

	// A subset of columns, in the order asked.
	X, _, cols, err = store.ReadDataset(ctx, d, []string{"disk", "cpu"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cols, []string{"disk", "cpu"}) || X.Cols != 2 {
		t.Fatalf("cols %v, %d", cols, X.Cols)
	}
	for _, i := range []int{0, 1, 12345, n - 1} {
		if got := X.Row(i); got[0] != want.Row(i)[2] || got[1] != want.Row(i)[0] {
			t.Fatalf("row %d: %v", i, got)
		}
	}
	if _, _, _, err := store.ReadDataset(ctx, d, []string{"cpu", "gpu"}, nil); err == nil || !strings.Contains(err.Error(), `unknown column "gpu"`) {
		t.Fatalf("unknown column: %v", err)
	}

	// A restarted process knows the dataset from datasets.index alone.
	again, err := Open(ctx, store.Client, store.Topics, store.NewConsumer)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	got, ok := again.Datasets.Get(d.ID)
	if !ok || !slices.Equal(got.Offsets, d.Offsets) || got.Partition != d.Partition || got.Rows != n {
		t.Fatalf("after restart: %+v, %t", got, ok)
	}
	if n := testkit.EndOffsets(t, brokers, store.Topics.DatasetIndex); n != 1 {
		t.Fatalf("%d descriptions in %s, want 1", n, store.Topics.DatasetIndex)
	}
}

func TestUploadDatasetNDJSON(t *testing.T) {
	store, _ := chunkTestStore(t, 1)
	ctx := chunkTestCtx(t)
	body := "{\"y\":1.5,\"x\":2}\n{\"x\":3,\"y\":-4}\n"
	d, err := store.UploadDataset(ctx, strings.NewReader(body), "ndjson", "")
	if err != nil {
		t.Fatal(err)
	}
	X, labels, cols, err := store.ReadDataset(ctx, d, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != "ndjson" || d.Labels || labels != nil || !slices.Equal(cols, []string{"x", "y"}) || !slices.Equal(X.Data, []float64{2, 1.5, 3, -4}) {
		t.Fatalf("%+v: %v %v %v", d, X, labels, cols)
	}
}

// TestUploadDatasetErrorLeavesNoDescription: a bad row after some chunks were stored
// fails the upload, and nothing describes the dataset.
func TestUploadDatasetErrorLeavesNoDescription(t *testing.T) {
	store, brokers := chunkTestStore(t, 1)
	ctx := chunkTestCtx(t)
	var b strings.Builder
	b.WriteString("a,b\n")
	for i := range 100_000 {
		fmt.Fprintf(&b, "%d,%d\n", i, i)
	}
	b.WriteString("1,oops\n")
	_, err := store.UploadDataset(ctx, strings.NewReader(b.String()), "csv", "")
	var de *DatasetError
	if !errors.As(err, &de) || de.Line != 100_002 || de.Column != "b" {
		t.Fatalf("error %v", err)
	}
	if n := testkit.EndOffsets(t, brokers, store.Topics.Datasets); n == 0 {
		t.Fatal("no chunk was stored before the bad row: the test does not exercise orphans")
	}
	if n := testkit.EndOffsets(t, brokers, store.Topics.DatasetIndex); n != 0 {
		t.Fatalf("%d descriptions after a failed upload", n)
	}
}

// TestUploadDatasetKafkaDown: a broker that is gone fails the upload as transient.
func TestUploadDatasetKafkaDown(t *testing.T) {
	store, _ := chunkTestStore(t, 1)
	down, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RecordDeliveryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	broken := *store
	broken.Client = down
	_, err = broken.UploadDataset(chunkTestCtx(t), strings.NewReader("a\n1\n"), "csv", "")
	if err == nil || !IsTransient(err) {
		t.Fatalf("error %v, want a transient one", err)
	}
}

func TestPutDataset(t *testing.T) {
	store, _ := chunkTestStore(t, 2)
	ctx := chunkTestCtx(t)
	// 2,000 columns: 16 KB a row, so a chunk holds 32 rows.
	X := detectors.NewMatrix(100, 2000)
	for i := range X.Data {
		X.Data[i] = math.Sin(float64(i))
	}
	cols := make([]string, X.Cols)
	for j := range cols {
		cols[j] = fmt.Sprintf("f%d", j)
	}
	labels := make([]float64, X.Rows)
	labels[7] = 1
	d, err := store.PutDataset(ctx, "scaled", "job_1", cols, X, labels)
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatMatrix || d.Source != "job_1" || d.Rows != 100 || len(d.Offsets) != 4 || !d.Labels || !strings.HasPrefix(d.Hash, "sha256:") {
		t.Fatalf("%+v", d)
	}
	got, gotLabels, gotCols, err := store.ReadDataset(ctx, d, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Data, X.Data) || !slices.Equal(gotLabels, labels) || !slices.Equal(gotCols, cols) {
		t.Fatal("read back differs")
	}
	// The same matrix stored again has the same content hash.
	d2, err := store.PutDataset(ctx, "again", "", cols, X, labels)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Hash != d.Hash || d2.ID == d.ID {
		t.Fatalf("hashes %s and %s, ids %s and %s", d.Hash, d2.Hash, d.ID, d2.ID)
	}

	for _, tc := range []struct {
		name   string
		cols   []string
		X      detectors.Matrix
		labels []float64
		msg    string
	}{
		{"empty", []string{"a"}, detectors.Matrix{}, nil, "empty"},
		{"names", []string{"a"}, detectors.NewMatrix(1, 2), nil, "1 column names for 2 columns"},
		{"duplicate", []string{"a", "a"}, detectors.NewMatrix(1, 2), nil, `column "a" appears twice`},
		{"label column", []string{"a", "Label"}, detectors.NewMatrix(1, 2), nil, "reserved for labels"},
		{"labels", []string{"a"}, detectors.NewMatrix(2, 1), []float64{0}, "1 labels for 2 rows"},
		{"label value", []string{"a"}, detectors.NewMatrix(1, 1), []float64{2}, "not 0 or 1"},
		{"NaN", []string{"a", "b"}, detectors.Matrix{Rows: 1, Cols: 2, Data: []float64{0, math.NaN()}}, nil, `row 0, column "b": NaN is not a finite number`},
	} {
		if _, err := store.PutDataset(ctx, "bad", "", tc.cols, tc.X, tc.labels); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.msg)
		}
	}
}

// TestReadDatasetDamaged: a description that does not match its chunks is an error that
// says so, never a wrong matrix.
func TestReadDatasetDamaged(t *testing.T) {
	store, _ := chunkTestStore(t, 1)
	ctx := chunkTestCtx(t)
	X := detectors.NewMatrix(70_000, 1) // 3 chunks
	for i := range X.Data {
		X.Data[i] = float64(i)
	}
	d, err := store.PutDataset(ctx, "", "", []string{"v"}, X, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Offsets) != 2 {
		t.Fatalf("%d chunks", len(d.Offsets))
	}
	tests := []struct {
		name   string
		change func(*Dataset)
		msg    string
	}{
		{"a chunk left out", func(d *Dataset) { d.Offsets = d.Offsets[1:] }, "do not cover row 0"},
		{"more rows", func(d *Dataset) { d.Rows++ }, "hold 70000 rows, its description says 70001"},
		{"fewer rows", func(d *Dataset) { d.Rows-- }, "do not fit the description"},
		{"another dataset's key", func(d *Dataset) { d.ID = "ds_other" }, `has key "` + d.ID + `"`},
		{"past the end", func(d *Dataset) { d.Offsets = append(slices.Clone(d.Offsets), 99) }, "past the partition's end"},
		{"another column count", func(d *Dataset) { d.Columns = []string{"v", "w"} }, "do not fit the description"},
	}
	for _, tc := range tests {
		bad := d
		bad.Offsets = slices.Clone(d.Offsets)
		tc.change(&bad)
		if _, _, _, err := store.ReadDataset(ctx, bad, nil, nil); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.msg)
		}
	}
}

// csvGenerator streams a CSV of rows×4 numbers without holding it, hashing what it
// hands out. Rows repeat every len(block) rows: few distinct values, exact in binary,
// keep the broker's compressed copy small.
type csvGenerator struct {
	rows, next int    // rows to hand out, rows handed out
	block      []byte // 1,000 rows
	pending    []byte
	h          interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newCSVGenerator(rows int) *csvGenerator {
	g := &csvGenerator{rows: rows, h: sha256.New(), pending: []byte("cpu,mem,disk,net,label\n")}
	for i := range 1000 {
		g.block = fmt.Appendf(g.block, "%d.%03d,%d.5,%d,0.%02d,%d\n", i, i%8*125, i%13, i%5, i%4*25, i%2)
	}
	return g
}

func (g *csvGenerator) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.next == g.rows {
			return 0, io.EOF
		}
		g.pending = g.block
		if left := g.rows - g.next; left < 1000 {
			g.pending = g.block[:lineEnd(g.block, left)]
		}
		g.next += min(1000, g.rows-g.next)
	}
	n := copy(p, g.pending)
	g.h.Write(p[:n])
	g.pending = g.pending[n:]
	return n, nil
}

// lineEnd is the length of the first n lines of b.
func lineEnd(b []byte, n int) int {
	end := 0
	for range n {
		end += bytes.IndexByte(b[end:], '\n') + 1
	}
	return end
}

// TestUploadDatasetStreams uploads a generated CSV of about 50 MB (4 MB with -short)
// and checks that the heap never grew by more than a small fraction of it: the upload
// streams instead of holding the body or its rows.
func TestUploadDatasetStreams(t *testing.T) {
	rows := 2_400_000
	if testing.Short() {
		rows = 200_000
	}
	store, brokers := chunkTestStore(t, 1)
	ctx := chunkTestCtx(t)
	gen := newCSVGenerator(rows)
	// The embedded broker keeps what it is sent in this process's heap: zstd keeps that
	// small (the generated rows repeat), so the heap measures the upload itself.
	store.Client = testkit.Client(t, brokers, kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.DisableClientMetrics())

	// The live heap as the last GC found it (garbage is not growth), sampled through the
	// upload; frequent GCs keep the figure fresh. The baseline follows three GCs: objects
	// with finalizers (the setup's connections) outlive the first.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	for range 3 {
		runtime.GC()
	}
	metrics.Read(live)
	base := live[0].Value.Uint64()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	d, err := store.UploadDataset(ctx, gen, "csv", "big")
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != rows || d.Hash != "sha256:"+hex.EncodeToString(gen.h.Sum(nil)) {
		t.Fatalf("%d rows, hash %s", d.Rows, d.Hash)
	}
	growth := int64(peak) - int64(base)

	perChunk := (maxChunkBytes - datasetChunkHeader) / (4*8 + 1)
	t.Logf("%d bytes (%d rows) in %v (%.0f MB/s), %d chunks; the live heap grew by at most %.1f MB",
		d.Bytes, d.Rows, elapsed.Round(time.Millisecond), float64(d.Bytes)/1e6/elapsed.Seconds(), len(d.Offsets), float64(growth)/1e6)
	if len(d.Offsets) != (rows+perChunk-1)/perChunk {
		t.Fatalf("%d chunks, want %d", len(d.Offsets), (rows+perChunk-1)/perChunk)
	}
	// Holding the body would take 51 MB, holding its rows 77 MB. What is live instead
	// (heap profiles say) is about 12 MB: the chunks in flight and the one being filled
	// (1.5 MB), the client's compressor and request buffers (3.5 MB), and the embedded
	// broker's compressed copy of the chunks (4 MB and growing with the data).
	const limit = 20 << 20
	if growth > limit {
		t.Fatalf("the heap grew by %d bytes during an upload of %d: more than %d", growth, d.Bytes, limit)
	}
}

// TestChunkProducerBoundsInFlight: while the broker holds its acks, chunksInFlight
// chunks are sent and the next one waits; once the acks come, it goes too.
func TestChunkProducerBoundsInFlight(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "chunks"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	store := &Store{Client: testkit.Client(t, c.ListenAddrs())}
	p := store.newChunkProducer(chunkTestCtx(t), "chunks", "ds_x")
	for i := range chunksInFlight {
		if err := p.send([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- p.send([]byte{chunksInFlight}) }()
	select {
	case err := <-sent:
		t.Fatalf("chunk %d was sent with %d unacknowledged (error %v)", chunksInFlight+1, chunksInFlight, err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	partition, offsets, err := p.wait()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int64, chunksInFlight+1)
	for i := range want {
		want[i] = int64(i)
	}
	if partition != 0 || !slices.Equal(offsets, want) {
		t.Fatalf("partition %d, offsets %v", partition, offsets)
	}
}

// parseODDSWithEncodingCSV reads an ODDS file (last column the label) with encoding/csv,
// independently of the reader under test.
func parseODDSWithEncodingCSV(t *testing.T, raw []byte) (detectors.Matrix, []float64, []string) {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := recs[0]
	X := detectors.NewMatrix(len(recs)-1, len(header)-1)
	labels := make([]float64, X.Rows)
	for i, rec := range recs[1:] {
		for j := range X.Cols {
			v, err := strconv.ParseFloat(rec[j], 64)
			if err != nil {
				t.Fatal(err)
			}
			X.Row(i)[j] = v
		}
		labels[i], _ = strconv.ParseFloat(rec[X.Cols], 64)
	}
	return X, labels, header[:len(header)-1]
}

// FuzzDatasetCSV: the CSV reader never panics; every error names a line of the input;
// whatever it accepts is finite and, written back as CSV, reads the same.
func FuzzDatasetCSV(f *testing.F) {
	for _, s := range []string{
		"a,b\n1,2\n3,4\n", "\ufeffa, b ,Label\r\n1,2,0\r\n\"3\",\" 4 \",1\r\n\r\n", "\"x,y\",\"say \"\"hi\"\"\"\n-1e-3,+7\n1E2,0x1p-2",
		"a,b\n1,2\n3\n", "a,b\n1,abc\n", "a,,c\n", "a,\"b\n", "label\n1\n", "a\n1e999\n", "a,label\n1,2\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		got, err := scanTestDataset(input, "csv")
		checkFuzzedDataset(t, input, got, err)
		if err != nil {
			return
		}
		var b strings.Builder
		quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
		for j, c := range got.cols {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(quote(c))
		}
		if got.labels {
			b.WriteString(",label")
		}
		b.WriteByte('\n')
		for i, row := range got.rows {
			for j, v := range row {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
			}
			if got.labels {
				fmt.Fprintf(&b, ",%g", got.lab[i])
			}
			b.WriteByte('\n')
		}
		again, err := scanTestDataset(b.String(), "csv")
		if err != nil {
			t.Fatalf("%q read, but written back as %q: %v", input, b.String(), err)
		}
		if !slices.Equal(again.cols, got.cols) || !slices.EqualFunc(again.rows, got.rows, slices.Equal) || !slices.Equal(again.lab, got.lab) {
			t.Fatalf("%q: read back as %+v, first read %+v", input, again, got)
		}
	})
}

// FuzzDatasetNDJSON is FuzzDatasetCSV for NDJSON.
func FuzzDatasetNDJSON(f *testing.F) {
	for _, s := range []string{
		"{\"b\":2,\"a\":1,\"LABEL\":1}\n\n{\"a\":3, \"LABEL\":0 ,\"b\":-4e1}\n", "{\"c\\u00e9\":1,\"d\\\"\":0.5}\r\n{\"d\\\"\":2,\"cé\":3}",
		"{\"a\":1,\"b\":2}\n{\"a\":1}\n", "{\"a\":\"x\"}\n", "[1]\n", "{\"a\":1}{\"a\":2}", "{\"a\":-0.0e+00}\n", "{\"a\":1,\"a\":2}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		got, err := scanTestDataset(input, "ndjson")
		checkFuzzedDataset(t, input, got, err)
		if err != nil {
			return
		}
		var b bytes.Buffer
		for i, row := range got.rows {
			obj := make(map[string]float64, len(row)+1)
			for j, v := range row {
				obj[got.cols[j]] = v
			}
			if got.labels {
				obj["label"] = got.lab[i]
			}
			line, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(append(line, '\n'))
		}
		again, err := scanTestDataset(b.String(), "ndjson")
		if err != nil {
			t.Fatalf("%q read, but written back as %q: %v", input, b.String(), err)
		}
		if !slices.Equal(again.cols, got.cols) || !slices.EqualFunc(again.rows, got.rows, slices.Equal) || !slices.Equal(again.lab, got.lab) {
			t.Fatalf("%q: read back as %+v, first read %+v", input, again, got)
		}
	})
}

func checkFuzzedDataset(t *testing.T, input string, got scannedDataset, err error) {
	t.Helper()
	if err != nil {
		var de *DatasetError
		lines := strings.Count(input, "\n") + 1
		if !errors.As(err, &de) || de.Line < 1 || de.Line > lines+1 {
			t.Fatalf("%q: error %v does not name a line of the input (1..%d)", input, err, lines+1)
		}
		return
	}
	if len(got.rows) == 0 || len(got.cols) == 0 {
		t.Fatalf("%q: accepted %d rows of %d columns", input, len(got.rows), len(got.cols))
	}
	for i, row := range got.rows {
		if len(row) != len(got.cols) {
			t.Fatalf("%q: row %d has %d values for %d columns", input, i, len(row), len(got.cols))
		}
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%q: accepted %v", input, v)
			}
		}
		if got.labels && got.lab[i] != 0 && got.lab[i] != 1 {
			t.Fatalf("%q: label %v", input, got.lab[i])
		}
	}
}

// FuzzDatasetChunk: the chunk decoder never panics nor reads out of bounds, and what it
// accepts is exactly what the writer encodes for the rows it decoded.
func FuzzDatasetChunk(f *testing.F) {
	f.Add(encodeTestDatasetChunk(5, [][]float64{{1, 2}, {3, math.Inf(1)}}, nil))
	f.Add(encodeTestDatasetChunk(0, [][]float64{{-0.5}, {1e300}, {0}}, []byte{1, 0, 1}))
	f.Add([]byte{1})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeDatasetChunk(b)
		if err != nil {
			return
		}
		rows := make([][]float64, c.rows)
		for i := range rows {
			for j := range c.cols {
				rows[i] = append(rows[i], c.value(i, j))
			}
		}
		if again := encodeTestDatasetChunk(c.first, rows, c.labels); !bytes.Equal(again, b) {
			t.Fatalf("decoded %x as rows from %d %v labels %v, which encode as %x", b, c.first, rows, c.labels, again)
		}
	})
}

// encodeTestDatasetChunk encodes one chunk with datasetWriter's own code, without Kafka.
func encodeTestDatasetChunk(first int, rows [][]float64, labels []byte) []byte {
	w := &datasetWriter{cols: len(rows[0]), labels: labels != nil, rowsPerChunk: len(rows), first: first}
	for i, row := range rows {
		l := 0.0
		if labels != nil {
			l = float64(labels[i])
		}
		w.appendRow(row, l)
	}
	return w.seal()
}

// BenchmarkScanDataset measures the text readers alone: MB/s of input scannedDataset.
func BenchmarkScanDataset(b *testing.B) {
	const rows = 100_000
	var csvBody, ndjsonBody bytes.Buffer
	csvBody.WriteString("cpu,mem,disk,net,label\n")
	for i := range rows {
		cpu, mem := math.Sin(float64(i))*100, math.Cos(float64(i))
		fmt.Fprintf(&csvBody, "%g,%g,%d,%g,%d\n", cpu, mem, i%1000, float64(i%97)/7, i%2)
		fmt.Fprintf(&ndjsonBody, "{\"cpu\":%g,\"mem\":%g,\"disk\":%d,\"net\":%g,\"label\":%d}\n", cpu, mem, i%1000, float64(i%97)/7, i%2)
	}
	for _, tc := range []struct {
		format string
		body   []byte
	}{{"csv", csvBody.Bytes()}, {"ndjson", ndjsonBody.Bytes()}} {
		b.Run(tc.format, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				_, _, n, err := scanDataset(bytes.NewReader(tc.body), tc.format, func([]string, bool) {}, func([]float64, float64) error { return nil })
				if err != nil || n != rows {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkUploadDataset measures an upload end to end into the embedded broker: parse,
// encode, produce and wait for every ack.
func BenchmarkUploadDataset(b *testing.B) {
	store, _ := chunkTestStore(b, 1)
	var body bytes.Buffer
	body.WriteString("cpu,mem,disk,net,label\n")
	for i := range 200_000 {
		fmt.Fprintf(&body, "%g,%g,%d,%g,%d\n", math.Sin(float64(i))*100, math.Cos(float64(i)), i%1000, float64(i%97)/7, i%2)
	}
	b.SetBytes(int64(body.Len()))
	for b.Loop() {
		if _, err := store.UploadDataset(chunkTestCtx(b), bytes.NewReader(body.Bytes()), "csv", ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadDataset measures reading a stored dataset back into a matrix; bytes are
// those of the encoded chunks.
func BenchmarkReadDataset(b *testing.B) {
	store, _ := chunkTestStore(b, 1)
	X := detectors.NewMatrix(200_000, 4)
	for i := range X.Data {
		X.Data[i] = math.Sin(float64(i))
	}
	d, err := store.PutDataset(chunkTestCtx(b), "", "", []string{"a", "b", "c", "d"}, X, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(d.Bytes)
	for b.Loop() {
		if _, _, _, err := store.ReadDataset(chunkTestCtx(b), d, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
