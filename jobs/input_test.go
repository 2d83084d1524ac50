package jobs

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/schemas"
)

func TestLoadInputDataset(t *testing.T) {
	store, _ := chunkTestStore(t, 2)
	ctx := chunkTestCtx(t)
	d, err := store.UploadDataset(ctx, strings.NewReader("a,b,label\n1,2,0\n3,4,1\n5,6,0\n"), "csv", "")
	if err != nil {
		t.Fatal(err)
	}
	var progress int
	X, labels, cols, err := store.LoadInput(ctx, Input{Dataset: d.ID, Columns: []string{"b"}}, func(n int) { progress = n })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(X.Data, []float64{2, 4, 6}) || !slices.Equal(labels, []float64{0, 1, 0}) || !slices.Equal(cols, []string{"b"}) || progress != 3 {
		t.Fatalf("%v %v %v, progress %d", X, labels, cols, progress)
	}

	_, _, _, err = store.LoadInput(ctx, Input{Dataset: "ds_nope"}, nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `input.dataset: dataset "ds_nope"`) {
		t.Fatalf("unknown dataset: %v", err)
	}
	_, _, _, err = store.LoadInput(ctx, Input{Dataset: d.ID, Columns: []string{"a", "c"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `input.columns: unknown column "c"`) || errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown column: %v", err)
	}

	// A dataset another replica stored a moment ago: this store's view has not seen it,
	// and LoadInput catches up before saying it is unknown.
	other, err := Open(ctx, store.Client, store.Topics, store.NewConsumer)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	d2, err := other.UploadDataset(ctx, strings.NewReader("{\"z\":1}\n{\"z\":2}\n"), "ndjson", "")
	if err != nil {
		t.Fatal(err)
	}
	X, _, cols, err = store.LoadInput(ctx, Input{Dataset: d2.ID}, nil)
	if err != nil || !slices.Equal(X.Data, []float64{1, 2}) || !slices.Equal(cols, []string{"z"}) {
		t.Fatalf("dataset of another replica: %v %v %v", X, cols, err)
	}
}

func TestLoadInputInlineRows(t *testing.T) {
	store := &Store{} // inline rows need no Kafka
	X, labels, cols, err := store.LoadInput(t.Context(), Input{Rows: [][]float64{{1, 2}, {3, 4}}}, nil)
	if err != nil || X.Rows != 2 || X.Cols != 2 || !slices.Equal(X.Data, []float64{1, 2, 3, 4}) || labels != nil || !slices.Equal(cols, []string{"x0", "x1"}) {
		t.Fatalf("%v %v %v %v", X, labels, cols, err)
	}
	_, _, cols, err = store.LoadInput(t.Context(), Input{Rows: [][]float64{{1, 2}}, Columns: []string{"cpu", "mem"}}, nil)
	if err != nil || !slices.Equal(cols, []string{"cpu", "mem"}) {
		t.Fatalf("named columns: %v %v", cols, err)
	}
	for _, tc := range []struct {
		name string
		in   Input
		msg  string
	}{
		{"nothing", Input{}, "want exactly one of dataset, rows or records, got 0"},
		{"two sources", Input{Dataset: "ds_x", Rows: [][]float64{{1}}}, "got 2"},
		{"ragged", Input{Rows: [][]float64{{1, 2}, {3}}}, "input.rows[1]: 1 values, but row 0 has 2"},
		{"empty row", Input{Rows: [][]float64{{}}}, "input.rows[0]: empty row"},
		{"names", Input{Rows: [][]float64{{1, 2}}, Columns: []string{"a"}}, "input.columns: 1 names for rows of 2 values"},
		{"duplicate name", Input{Rows: [][]float64{{1, 2}}, Columns: []string{"a", "a"}}, `input.columns: "a" is named twice`},
		{"count only", Input{InlineRows: 5}, "inline rows are missing"},
		{"too many", Input{Rows: make([][]float64, MaxInlineRows+1)}, "more than the 10000 allowed"},
	} {
		if _, _, _, err := store.LoadInput(t.Context(), tc.in, nil); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}

func TestLoadInputRecords(t *testing.T) {
	store, _ := chunkTestStore(t, 3)
	ctx := chunkTestCtx(t)
	base := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	at := func(minutes int) int64 { return base.Add(time.Duration(minutes) * time.Minute).UnixMilli() }
	type rec struct {
		key    string
		r      schemas.Record
		avro   bool
		kafkaT int64 // the Kafka timestamp; 0: now
		raw    string
	}
	recs := []rec{
		{r: schemas.Record{Series: "a", TS: at(-10), Values: map[string]float64{"cpu": -1, "mem": -1}}, kafkaT: at(-10)}, // before From
		{r: schemas.Record{Series: "a", TS: at(2), Values: map[string]float64{"cpu": 2, "mem": 20}}},
		{r: schemas.Record{Series: "b", TS: at(1), Values: map[string]float64{"cpu": 1, "mem": 10, "disk": 5}}, avro: true},
		{r: schemas.Record{Series: "c", TS: at(3), Values: map[string]float64{"cpu": 99, "mem": 99}}}, // another series
		{key: "a", r: schemas.Record{Values: map[string]float64{"cpu": 4, "mem": 40}}, kafkaT: at(4)}, // series from the key, ts from Kafka
		{r: schemas.Record{Series: "b", TS: at(60), Values: map[string]float64{"cpu": 9, "mem": 9}}},  // at To: out
		{key: "a", raw: "not a record"},
		{r: schemas.Record{Series: "a", TS: at(0), Values: map[string]float64{"cpu": 0, "mem": 0}}}, // at From: in
	}
	var krs []*kgo.Record
	for _, rc := range recs {
		kr := &kgo.Record{Topic: store.Topics.Records, Key: []byte(rc.key)}
		if rc.key == "" {
			kr.Key = []byte(rc.r.Series)
		}
		switch {
		case rc.raw != "":
			kr.Value = []byte(rc.raw)
		case rc.avro:
			kr.Value = schemas.AppendRecordAvro(nil, &rc.r)
		default:
			kr.Value = schemas.AppendRecordJSON(nil, &rc.r)
		}
		if rc.kafkaT != 0 {
			kr.Timestamp = time.UnixMilli(rc.kafkaT)
		}
		krs = append(krs, kr)
	}
	if err := store.Client.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rr := &RecordRange{Series: []string{"a", "b"}, From: base, To: base.Add(time.Hour)}

	X, labels, cols, err := store.LoadInput(ctx, Input{Records: rr, Columns: []string{"mem", "cpu"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// In time order: a@0, b@1, a@2, a@4.
	if !slices.Equal(cols, []string{"mem", "cpu"}) || labels != nil || !slices.Equal(X.Data, []float64{0, 0, 10, 1, 20, 2, 40, 4}) {
		t.Fatalf("%v %v %v", X, labels, cols)
	}

	// Without columns, every value name: b's record has disk, the others do not.
	_, _, _, err = store.LoadInput(ctx, Input{Records: rr}, nil)
	if err == nil || !strings.Contains(err.Error(), `has no value "disk"`) || !strings.Contains(err.Error(), `series "a"`) {
		t.Fatalf("union of columns: %v", err)
	}
	X, _, cols, err = store.LoadInput(ctx, Input{Records: &RecordRange{Series: []string{"b"}, From: base, To: base.Add(time.Hour)}}, nil)
	if err != nil || !slices.Equal(cols, []string{"cpu", "disk", "mem"}) || !slices.Equal(X.Data, []float64{1, 5, 10}) {
		t.Fatalf("one series: %v %v %v", X, cols, err)
	}

	for _, tc := range []struct {
		name string
		rr   RecordRange
		msg  string
	}{
		{"no series", RecordRange{From: base, To: base.Add(time.Hour)}, "input.records.series"},
		{"empty range", RecordRange{Series: []string{"a"}, From: base, To: base}, "input.records.to"},
		{"nothing in range", RecordRange{Series: []string{"zz"}, From: base, To: base.Add(time.Hour)}, "input.records: no records of series zz"},
	} {
		if _, _, _, err := store.LoadInput(ctx, Input{Records: &tc.rr}, nil); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}
