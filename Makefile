# Gatehouse developer targets. Run `make help` for the list.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
# The sidecar build: without the controller, and without net/http's
# HTTP/2 (the sidecar would use it only towards the IdP), which keeps the
# binary and its resident pages in every protected Pod smaller.
SIDECAR_TAGS := sidecar,nethttpomithttp2
FUZZTIME ?= 30s
BENCH_DURATION ?= 10s

IDP_DEPS := hack/idp/node_modules/.package-lock.json
TOOLS := $(CURDIR)/bin/tools
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(TOOLS)/controller-gen-$(CONTROLLER_GEN_VERSION)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(TOOLS)/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: build $(IDP_DEPS) ## Run the demo: local control plane, controller, token broker, real IdP, sample app, injected sidecar
	go build -o bin/demo ./hack/demo
	bin/demo

.PHONY: demo-gateway-api
demo-gateway-api: build $(IDP_DEPS) ## The demo with the sample app behind a Gateway API HTTPRoute instead of an Ingress
	go build -o bin/demo ./hack/demo
	bin/demo -gateway-api

.PHONY: build
build: ## Build bin/gatehouse and bin/gatehouse-sidecar (static, version stamped)
	$(GO_BUILD) -o bin/gatehouse ./cmd/gatehouse
	$(GO_BUILD) -tags $(SIDECAR_TAGS) -o bin/gatehouse-sidecar ./cmd/gatehouse

.PHONY: test
test: $(IDP_DEPS) envtest ## Run unit, envtest, integration and end-to-end tests with the race detector
	mkdir -p bin/test-output
	KUBEBUILDER_CONTROLPLANE_START_TIMEOUT=60s go test -race -count=1 -timeout 20m -artifacts -outputdir $(CURDIR)/bin/test-output ./...
	go test -race -count=1 -tags $(SIDECAR_TAGS) ./cmd/gatehouse

.PHONY: envtest
envtest: ## Build the test control plane (kube-apiserver, etcd, ...) into bin/k8s (cached per machine)
	hack/envtest-binaries.sh >/dev/null

.PHONY: helm
helm: ## Build helm (pinned in hack/helm.sh) into bin/tools (cached per machine) and print its path
	@hack/helm.sh

.PHONY: chart
chart: ## Lint charts/gatehouse and check its golden renderings (rewrite them: go test ./charts -run TestGolden -update)
	go test ./charts -count=1 -run '^Test(Lint|Golden|SchemaRejects|SchemaMatchesFileConfig|Notes|Wiring|RBACMatchesGeneratedRole|WebhookMatchesGenerated)$$'

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate RBAC and webhook manifests into config/ from code markers
	$(CONTROLLER_GEN) rbac:roleName=gatehouse-controller webhook paths=./controllers/... \
	  output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook

$(CONTROLLER_GEN):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(TOOLS)/controller-gen $@

$(IDP_DEPS): hack/idp/package.json hack/idp/package-lock.json
	npm ci --prefix hack/idp --no-audit --no-fund
	@touch $@

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $$(go list ./...); do \
	  dir=$$(go list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$f"; \
	    go test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

.PHONY: bench
bench: build ## Measure the proxy against a plain reverse proxy (needs wrk)
	go test ./proxy/... -run '^$$' -bench . -benchmem
	go run ./hack/bench -gatehouse bin/gatehouse-sidecar -duration $(BENCH_DURATION) -markdown bin/bench.md

.PHONY: bench-controller
bench-controller: envtest ## Scale test: 10,000 Pods, 2,000 Ingresses, the controller on its production client settings
	GATEHOUSE_SCALE=10000 GATEHOUSE_SCALE_REPORT=$(CURDIR)/bin/bench-controller.md \
	  go test ./controllers -run '^TestScale$$' -count=1 -v -timeout 60m
	@# Alone, so that the scale test's control plane does not share the cores.
	go test ./controllers -run '^$$' -bench WebhookDecision -benchmem -count=1

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(TOOLS)/golangci-lint $@

.PHONY: vet
vet: ## go vet and gofmt
	go vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run gofmt -w on the files above"; exit 1; }

.PHONY: verify
verify: vet manifests chart ## Check that go.mod is tidy, generated files are current and the chart lints and renders as its golden files
	go mod tidy
	git diff --exit-code -- go.mod go.sum config/

.PHONY: clean
clean: ## Remove build outputs
	rm -rf bin/gatehouse
