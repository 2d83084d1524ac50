# gonomaly — the two quick-start commands are `make run` and `make test`.
GO        ?= go
BIN       := bin/gonomaly
PKGS      := ./...
FUZZTIME  ?= 20s

.PHONY: all build run test test-long test-short lint vet fmt-check bench bench-pipeline fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gonomaly

# The whole pipeline on the embedded broker with a synthetic demo stream; anomaly events
# are printed on stdout as JSON lines, logs go to stderr. Ctrl-C stops it cleanly.
run: build
	./$(BIN) run --demo

# Unit, end-to-end (embedded broker, real processes) and interop tests, with the race
# detector, plus vet and format checks.
test: lint
	$(GO) test -race -count=1 -timeout 9m $(PKGS)

# The full accuracy checks: PyOD's 10-split protocol on the four reference datasets and
# Isolation Forest against its paper on the large gzipped ones (about 25 s; .ci/run runs it after make test).
test-long:
	GONOMALY_LONG=1 $(GO) test -count=1 -timeout 30m -run 'Quality|Paper|MatchPyOD' ./detectors/

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint: vet fmt-check

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Go micro-benchmarks of every package, then the end-to-end pipeline benchmark.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	$(MAKE) bench-pipeline

bench-pipeline: build
	./$(BIN) bench pipeline --records 1000000 --series 1000 --json
	./$(BIN) bench pipeline --records 1000000 --series 1000 --rate 50000 --json

# Run every fuzz target for FUZZTIME each (seeds are committed under testdata/fuzz).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

clean:
	rm -rf bin out
