package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := Start(Config{Listen: "127.0.0.1:0", DataDir: dir, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 100 {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: "t", Partition: 0, At: 5})
	if _, err := adm.CommitOffsets(ctx, "g", offsets); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	b.Close()

	b2, err := Start(Config{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	cl2, err := kgo.NewClient(kgo.SeedBrokers(b2.Addr()), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	got := map[string]bool{}
	for len(got) < 100 && ctx.Err() == nil {
		cl2.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[string(r.Value)] = true })
	}
	if len(got) != 100 {
		t.Fatalf("after restart read %d distinct records, want 100", len(got))
	}
	fetched, err := kadm.NewClient(cl2).FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("t", 0); !ok || o.At != 5 {
		t.Fatalf("committed offset after restart: %+v, want 5", o)
	}
}

func TestListenErrors(t *testing.T) {
	for _, listen := range []string{"nonsense", "127.0.0.1:99999", "127.0.0.1:x"} {
		if _, err := Start(Config{Listen: listen}); err == nil {
			t.Errorf("Start(%q): want an error", listen)
		}
	}
	b, err := Start(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Start(Config{Listen: b.Addr()}); err == nil {
		t.Errorf("second broker on %s: want address-in-use error", b.Addr())
	}
}
