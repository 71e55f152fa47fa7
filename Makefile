# The call agent's build. `make demo` runs the single-host demo, `make test` the
# test suite (what CI runs through .ci/run).

GO      ?= go
BIN     ?= bin
PLUGINS := email telegram webhook sheets jsonl

.PHONY: all build plugins test test-cluster test-race fuzz demo demo-fast cluster-demo load load-cluster bench clean tools chromium

all: build

## build: every binary into bin/, plugins into bin/plugins/
build: plugins
	$(GO) build -o $(BIN)/ ./cmd/...

plugins:
	@mkdir -p $(BIN)/plugins
	@for p in $(PLUGINS); do \
		[ -d plugins/$$p ] && $(GO) build -o $(BIN)/plugins/$$p ./plugins/$$p || exit 1; \
	done

## chromium: Debian's chromium, which the status page test drives headless
##   (internal/e2e TestStatusPageInChromium); `make test` runs this first
##   when no chromium is on the PATH and $$CHROMIUM is not set
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && $$SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	@command -v chromium >/dev/null 2>&1 && chromium --version || chromium-browser --version

## test: go.mod tidy, vet, then the whole suite (race detector on the concurrent core)
test:
	@if [ -z "$$CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		$(MAKE) chromium; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) test -count=1 -race -timeout 10m ./internal/bus/... ./internal/resilience/... ./internal/observer/lease/...
	$(MAKE) test-cluster

## test-cluster: the tests on a 3-node cluster of real nats-server processes
##   (build tag "cluster": node loss with kill -9 of stream leaders)
test-cluster:
	$(GO) vet -tags cluster ./internal/e2e/
	$(GO) test -count=1 -tags cluster -run 'Cluster' -timeout 5m ./internal/e2e/

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

## cluster-demo: the seed scenario on a 3-node cluster (nats-cluster/node-*.conf,
##   stores and logs in var/nats-cluster), streams and buckets at R3; waits for
##   JetStream's meta leader and provisions (dispatcher provision) first, and
##   stops the nodes after
CLUSTER_URL := nats://127.0.0.1:4223,nats://127.0.0.1:4224,nats://127.0.0.1:4225

cluster-demo: build
	$(GO) build -o $(BIN)/ github.com/nats-io/nats-server/v2
	@rm -rf var/nats-cluster; mkdir -p var/nats-cluster
	@set -e; pids=""; \
	trap 'kill $$pids 2>/dev/null; wait $$pids 2>/dev/null' EXIT; \
	for n in 1 2 3; do \
		$(BIN)/nats-server -c nats-cluster/node-$$n.conf >var/nats-cluster/node-$$n.log 2>&1 & pids="$$pids $$!"; \
	done; \
	for i in $$(seq 60); do \
		$(GO) tool nats --server nats://127.0.0.1:4223 --user admin --password admin-dev-password \
			account info >/dev/null 2>&1 && break; sleep 0.5; \
	done; \
	export AGENT_NATS__STREAMS__CALLS__REPLICAS=3 AGENT_NATS__STREAMS__EVENTS__REPLICAS=3 \
		AGENT_NATS__STREAMS__ALERTS__REPLICAS=3 AGENT_NATS__BUCKETS__REPLICAS=3; \
	$(BIN)/dispatcher provision --config config.example.yaml --set nats.url=$(CLUSTER_URL); \
	$(BIN)/demo --bin $(BIN) --fast --nats-url $(CLUSTER_URL) $(DEMOFLAGS)

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

## load-cluster: calls/s on a 3-node cluster vs one node, and the stall of node loss
load-cluster:
	$(GO) run ./cmd/loadtest cluster

clean:
	rm -rf $(BIN) var
