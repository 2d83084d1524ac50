package api

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
)

// TestRecordsArePublishedKeyedBySeries posts a JSON array and NDJSON to a real broker
// and reads back exactly those records, keyed by series, in the canonical JSON form.
func TestRecordsArePublishedKeyedBySeries(t *testing.T) {
	brokers := testkit.Brokers(t)
	topic := testkit.Prefix(t) + "records"
	cl := testkit.Client(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 4, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Client: cl, Topics: Topics{Records: topic}})

	rec := do(s.Handler(), "POST", "/api/v1/records", "application/json", `[
		{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}},
		{"series": "host-18", "ts": 1795762800000, "values": {"cpu": 0.5}, "extra": "ignored"}
	]`)
	if rec.Code != 202 || strings.TrimSpace(rec.Body.String()) != `{"accepted":2}` {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	rec = do(s.Handler(), "POST", "/api/v1/records", "application/x-ndjson; charset=utf-8",
		"{\"series\": \"host-17\", \"values\": {\"cpu\": 1}}\r\n\n{\"series\": \"host-19\", \"values\": {\"cpu\": 2}}")
	if rec.Code != 202 || strings.TrimSpace(rec.Body.String()) != `{"accepted":2}` {
		t.Fatalf("ndjson: status %d: %s", rec.Code, rec.Body)
	}
	// A bad record anywhere publishes nothing.
	rec = do(s.Handler(), "POST", "/api/v1/records", "application/json", `[{"series":"host-20","values":{"cpu":1}},{"series":"host-20","values":{}}]`)
	if rec.Code != 400 {
		t.Fatalf("bad batch: status %d", rec.Code)
	}

	got := testkit.ReadN(t, brokers, topic, 4, 20*time.Second)
	if len(got) != 4 {
		t.Fatalf("read %d records, want 4", len(got))
	}
	if n := testkit.EndOffsets(t, brokers, topic); n != 4 {
		t.Fatalf("topic holds %d records, want 4 (the bad batch published something)", n)
	}
	byKey := map[string][]schemas.Record{}
	for _, r := range got {
		var dec schemas.Record
		if err := (schemas.RecordDecoder{Format: schemas.FormatJSON}).Decode(r.Value, &dec); err != nil {
			t.Fatalf("value %s: %v", r.Value, err)
		}
		if dec.Series != string(r.Key) {
			t.Fatalf("key %q, series %q", r.Key, dec.Series)
		}
		byKey[string(r.Key)] = append(byKey[string(r.Key)], dec)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range byKey {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, []string{"host-17", "host-18", "host-19"}) || len(byKey["host-17"]) != 2 {
		t.Fatalf("keys %v", keys)
	}
	first := byKey["host-17"][0]
	if first.TS != 1795762800000 || first.Values["cpu"] != 0.93 || first.Tags["dc"] != "eu-1" {
		b, _ := json.Marshal(first)
		t.Fatalf("host-17 record %s", b)
	}
	if byKey["host-18"][0].TS != 1795762800000 {
		t.Fatalf("host-18 ts %d", byKey["host-18"][0].TS)
	}
}
