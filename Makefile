# pipe: `make demo` runs the main job on embedded data; `make test` runs the tests.
GO      ?= go
BIN     := bin/pipe
PKGS    := ./...
# The go directive of go.mod: the oldest Go toolchain that builds pipe.
GO_MIN  := 1.26
# golangci-lint (errcheck, staticcheck, depguard layering rules in .golangci.yml), pinned.
GOLANGCI_VERSION := v2.15.0
GOLANGCI := bin/golangci-lint-$(GOLANGCI_VERSION)

.PHONY: all build test integration demo bench bench-dag bench-s3 lint deps modules clean slurm-up slurm-down s3-server

all: build

# modules checks the Go toolchain and downloads the modules (from the Go module proxy) so that
# later steps work offline. Everything else pipe needs (the embedded Fashion-MNIST subset)
# is in the repository.
modules:
	@command -v $(GO) >/dev/null 2>&1 || { echo "make: Go $(GO_MIN) or newer is needed (https://go.dev/dl/); it is not on PATH"; exit 1; }
	@v=$$($(GO) env GOVERSION | sed 's/^go//'); \
	  if [ "$$(printf '%s\n%s\n' "$(GO_MIN)" "$$v" | sort -V | head -1)" != "$(GO_MIN)" ]; then \
	    echo "make: Go $(GO_MIN) or newer is needed, found $$v (or set GOTOOLCHAIN=auto)"; exit 1; fi
	$(GO) mod download

# deps installs everything the targets below need: the modules and the pinned linter, built
# from source through the Go module proxy (about 2 minutes once; kept in bin/).
deps: modules $(GOLANGCI)

$(GOLANGCI):
	GOBIN=$(CURDIR)/bin/.golangci $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv bin/.golangci/golangci-lint $@ && rmdir bin/.golangci

build: modules
	$(GO) build -o $(BIN) ./cmd/pipe

test: modules
	$(GO) test -count=1 -timeout 15m $(PKGS)

# s3-server builds SeaweedFS's `weed` (a real S3-compatible server, Apache-2.0) into bin/weed,
# from the separate tools module tools/seaweedfs (pinned by its go.mod and go.sum; pipe's go.mod
# does not name it). Once: about 480 CPU-seconds and a 230 MB binary; make integration's S3
# tests and scripts/s3-local start it.
WEED := bin/weed
s3-server: $(WEED)

$(WEED): tools/seaweedfs/go.mod tools/seaweedfs/go.sum
	cd tools/seaweedfs && $(GO) build -trimpath -buildvcs=false -o ../../$(WEED) github.com/seaweedfs/seaweedfs/weed

# Tests on the real benchmark data in ../shared/data (skipped with a message when absent), and
# the S3 remote against a real SeaweedFS server (bin/weed, built first; PIPE_SKIP_S3=1 skips them).
# It also runs each fuzz target for FUZZTIME (what reads outside bytes: DAG YAML, images,
# stored Arrow IPC blobs, manifest JSON).
FUZZTIME ?= 20s
# Minimising a new interesting input may take 60 s by default and stalls the run meanwhile
# (0 execs/s): within a 20 s budget it would take the whole run, so keep it short.
FUZZMINIMIZE ?= 2s
integration: modules slurm-up $(WEED)
	$(GO) test -count=1 -timeout 30m -tags integration $(PKGS)
	$(GO) test -run '^$$' -fuzz '^FuzzCompile$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./pipeline/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./ahl/imgs/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeIPC$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./artifacts/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./artifacts/
	$(GO) test -run '^$$' -fuzz '^FuzzTableReader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./artifacts/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePyTorch$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./ahl/backbone/

# slurm-up brings up a real single-node Slurm cluster for the Slurm executor's integration
# tests (scripts/slurm-local; as root, no systemd). It installs Debian's packages when sinfo
# is missing (bookworm: 22.05.8). PIPE_SKIP_SLURM=1 skips it, and the tests that need it.
SLURM_PKGS := slurmctld slurmd slurm-client munge
slurm-up:
	@if [ "$(PIPE_SKIP_SLURM)" = 1 ]; then echo "make: PIPE_SKIP_SLURM=1: no Slurm cluster"; exit 0; fi; \
	  if ! command -v sinfo >/dev/null 2>&1 || ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(SLURM_PKGS); fi; \
	  scripts/slurm-local up
slurm-down:
	scripts/slurm-local down

# The demo: the AHL DAG on the embedded Fashion-MNIST subset, then its results table. The
# store is .pipe/store; run `make demo` again to see every stage cached.
demo: build
	./$(BIN) run dags/demo.yaml
	./$(BIN) report dags/demo.yaml

# Benchmarks (speed and memory targets); quote medians. BENCH selects them, e.g.
# make bench BENCH=NoopRerun PKGS=./cmd/pipe
# bench ends with bench-dag, the whole-DAG benchmark: ELPV general M = 10, one seed, cold,
# with each stage instance's wall and CPU time and peak private and total RSS as a table on
# stdout (minutes; skipped with a message without ../shared/data/elpv). Its build tag keeps
# it out of `make test`. PIPE_BENCH_DAG=dags/elpv_hard.yaml PIPE_BENCH_SEEDS=[0,1,2] choose
# another DAG and seeds. scripts/bench-torch compares resnet18 with Debian's PyTorch.
BENCH   ?= .
bench: modules
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count 5 -timeout 60m $(PKGS)
	$(MAKE) bench-dag

bench-dag: modules
	$(GO) test -tags benchdag -run '^$$' -bench '^BenchmarkDAGCold$$' -benchtime 1x -count 1 -timeout 120m ./cmd/pipe

# bench-s3: push and pull of a 10,000 x 512 float32 feature table (about 20 MB) against a
# SeaweedFS server started for it (scripts/s3-local); quote the medians of the 5 runs.
bench-s3: $(WEED)
	@trap 'S3_LOCAL_DIR=$(CURDIR)/bin/.s3-bench scripts/s3-local down' EXIT; \
	  eval "$$(S3_LOCAL_DIR=$(CURDIR)/bin/.s3-bench scripts/s3-local up)" && \
	  PIPE_REMOTE_BENCH="$$PIPE_S3_URL" $(GO) test -run '^$$' -bench '^BenchmarkPushPullFeatureTable$$' -benchtime 1x -count 5 ./artifacts/remote/

# lint: gofmt, go vet, and golangci-lint with the layering rules of .golangci.yml.
lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags benchdag ./cmd/pipe
	$(GOLANGCI) run $(PKGS)

clean:
	rm -rf bin
