package schemas

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/linkedin/goavro/v2"
)

// The .avsc files are the contract with other Kafka clients; the hand-written codecs in
// this package must stay byte-compatible with them (the tests check against goavro).
var (
	//go:embed record.avsc
	recordAVSC string
	//go:embed features.avsc
	featuresAVSC string
	//go:embed scores.avsc
	scoresAVSC string
	//go:embed result.avsc
	resultAVSC string
	//go:embed anomaly_event.avsc
	anomalyEventAVSC string
)

// Schema is one of the embedded Avro schemas.
type Schema struct {
	Name        string // full name, e.g. "io.gonomaly.Record"
	File        string // file name under schemas/, e.g. "record.avsc"
	Text        string // the schema as written in the file
	Canonical   string // Parsing Canonical Form
	Fingerprint uint64 // CRC-64-AVRO (Rabin) of Canonical, as in single-object headers
}

// Single-object encoding: 0xC3 0x01, then the schema fingerprint, little-endian.
const (
	soeMagic0    = 0xC3
	soeMagic1    = 0x01
	soeHeaderLen = 10
)

// Confluent wire format: magic byte 0, then the registry's schema id, big-endian.
const confluentHeaderLen = 5

type schemaID int

const (
	schemaRecord schemaID = iota
	schemaFeatures
	schemaScores
	schemaResult
	schemaAnomalyEvent
	numSchemas
)

var (
	allSchemas [numSchemas]Schema
	// soeHeaders are the 10-byte single-object prefixes, precomputed for the encoders.
	soeHeaders [numSchemas][soeHeaderLen]byte
	// javaFingerprints are the fingerprints Java Avro computes for the same schemas.
	// Implementations disagree on the canonical form of a logical type: goavro (and
	// Rust) keep {"type":"long"}, Java reduces it to "long". We write goavro's and
	// accept both, so Java single-object writers are understood too.
	javaFingerprints [numSchemas]uint64
)

func init() {
	files := [numSchemas]struct{ file, text string }{
		schemaRecord:       {"record.avsc", recordAVSC},
		schemaFeatures:     {"features.avsc", featuresAVSC},
		schemaScores:       {"scores.avsc", scoresAVSC},
		schemaResult:       {"result.avsc", resultAVSC},
		schemaAnomalyEvent: {"anomaly_event.avsc", anomalyEventAVSC},
	}
	for id, f := range files {
		// A broken embedded schema is a build defect, not a runtime condition.
		c, err := goavro.NewCodec(f.text)
		if err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", f.file, err))
		}
		tn := c.TypeName()
		allSchemas[id] = Schema{
			Name:        tn.String(),
			File:        f.file,
			Text:        f.text,
			Canonical:   c.CanonicalSchema(),
			Fingerprint: c.Rabin,
		}
		javaCanonical := strings.ReplaceAll(c.CanonicalSchema(), `{"type":"long"}`, `"long"`)
		jc, err := goavro.NewCodec(javaCanonical)
		if err != nil {
			panic(fmt.Sprintf("schemas: %s: Java canonical form: %v", f.file, err))
		}
		javaFingerprints[id] = jc.Rabin
		h := &soeHeaders[id]
		h[0], h[1] = soeMagic0, soeMagic1
		binary.LittleEndian.PutUint64(h[2:], c.Rabin)
	}
}

// Schemas returns the embedded schemas: Record, Features, Scores, Result, AnomalyEvent.
func Schemas() []Schema {
	out := make([]Schema, numSchemas)
	copy(out, allSchemas[:])
	return out
}

// RecordSchema returns the input schema, the one to register with a schema registry for
// producers that use the Confluent wire format.
func RecordSchema() Schema { return allSchemas[schemaRecord] }

// schemaByFingerprint maps a single-object header's fingerprint to the schema; -1 if unknown.
func schemaByFingerprint(fp uint64) schemaID {
	for id := range allSchemas {
		if allSchemas[id].Fingerprint == fp || javaFingerprints[id] == fp {
			return schemaID(id)
		}
	}
	return -1
}
