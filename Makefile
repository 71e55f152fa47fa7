# The call agent's build. `make demo` runs the single-host demo, `make test` the
# test suite (what CI runs through .ci/run).

GO      ?= go
BIN     ?= bin
PLUGINS := email telegram webhook sheets jsonl

.PHONY: all build plugins test test-race fuzz demo demo-fast load bench clean tools

all: build

## build: every binary into bin/, plugins into bin/plugins/
build: plugins
	$(GO) build -o $(BIN)/ ./cmd/...

plugins:
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do \
		[ -d plugins/$$p ] && $(GO) build -o $(BIN)/plugins/$$p ./plugins/$$p || exit 1; \
	done

## test: go.mod tidy, vet, then the whole suite (race detector on the concurrent core)
test:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) test -count=1 -race -timeout 10m ./internal/bus/... ./internal/resilience/... ./internal/observer/lease/...

## fuzz: the event decoder's fuzzer, five minutes
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=5m ./events/

## demo: the seed scenario end to end with real 5/10/20 s delays
##   (more flags: make demo DEMOFLAGS="--keep --http-port 18080"; see bin/demo --help)
demo: build
	$(BIN)/demo --bin $(BIN) $(DEMOFLAGS)

## demo-fast: the same with delays scaled down
demo-fast: build
	$(BIN)/demo --bin $(BIN) --fast $(DEMOFLAGS)

## load: the load harness: 10,000 calls through two callers, then alert latency
load:
	$(GO) run ./cmd/loadtest calls --contacts 10000 --callers 2
	$(GO) run ./cmd/loadtest alert-latency --samples 200 --rate 5/s

## bench: the raw JetStream ceilings (go tool nats bench) and the project's
##   figures in one run, as one table of ratios (about five minutes; not part of
##   test; some figures only: make bench BENCHFLAGS="--rows realistic,replay")
bench: build
	$(GO) run ./cmd/loadtest bench --bin $(BIN) $(BENCHFLAGS)

## tools: the nats CLI and server as Go tool dependencies (go tool nats ...)
tools:
	$(GO) tool nats --version

clean:
	rm -rf $(BIN) var
