# pipe: make demo runs the main job on embedded data; make test runs the tests.
GO      ?= go
BIN     := bin/pipe
PKGS    := ./...

.PHONY: all build test integration demo bench lint deps clean

all: build

deps:
	$(GO) mod download

build:
	$(GO) build -o $(BIN) ./cmd/pipe

test:
	$(GO) test -count=1 -timeout 15m $(PKGS)

# Tests on the real benchmark data in ../shared/data (skipped with a message when absent).
integration:
	$(GO) test -count=1 -timeout 30m -tags integration $(PKGS)

demo: build
	./$(BIN) run dags/demo.yaml
	./$(BIN) report dags/demo.yaml

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 -timeout 60m $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
