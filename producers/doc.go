// Package producers turns sources of records into messages on the records topic:
// sources → Kafka.
//
// A Source yields schemas.Record values one at a time: the Synthetic generator (with
// labelled, injected anomalies for evaluation and demos), CSVSource (NAB-style files)
// and NDJSONSource (the Record JSON form of DESIGN.md, one per line). A Publisher
// drains a Source into a topic with a kgo.Client, keyed by series so every record of a
// series lands on the same partition, with an optional rate cap and progress reports.
package producers
