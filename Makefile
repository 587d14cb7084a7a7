# switchyard — the two promises: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Heavy builds are cached outside the checkout, keyed by version, so a fresh
# clone on the same machine builds fast.
export SWITCHYARD_CACHE ?= $(HOME)/.cache/switchyard
export CARGO_TARGET_DIR ?= $(SWITCHYARD_CACHE)/target
# The checkout the binaries read config/ and e2e/hack/ from (the shared target
# dir may hold binaries built from another checkout).
export SWITCHYARD_SOURCE := $(CURDIR)
CARGO ?= cargo

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install the Debian packages and mounts the tests need (root)
	@e2e/hack/install-deps.sh
	@e2e/hack/host-setup.sh >/dev/null

.PHONY: fmt-check
fmt-check: ## cargo fmt --check
	$(CARGO) fmt --all -- --check

.PHONY: lint
lint: ## clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: crds
crds: ## Regenerate crds/ from operator/api (and the Helm chart's copy)
	$(CARGO) run --quiet --locked -p switchyard-operator --bin crdgen -- crds
	cp crds/*.switchyard.dev.yaml config/helm/switchyard/crds/

.PHONY: build
build: ## Build every binary (operator, agent, lab, load generator, demo)
	$(CARGO) build --workspace --bins --locked

# `make images` builds release images; the lab runs images of the debug
# binaries it is tested with (the same files otherwise).
IMAGES_PROFILE ?= release

.PHONY: images
images: ## Container images of the operator and the agent: OCI layout + docker tarball under ~/.cache/switchyard/images (IMAGES_PROFILE=release|debug)
	$(CARGO) build --locked $(if $(filter release,$(IMAGES_PROFILE)),--release) -p switchyard-operator -p switchyard-agent --bins
	config/images/build.sh --profile $(IMAGES_PROFILE)

.PHONY: lab-images
lab-images: build ## The images the lab runs (of the debug build)
	config/images/build.sh --profile debug >/dev/null

.PHONY: unit
unit: ## Tiers 1-3: unit, property, golden and privileged datapath tests (CRD drift, promtool on the alert rules, helm lint and template of the chart included)
	$(CARGO) test --workspace --locked --exclude switchyard-e2e

# Where each e2e cluster records switchyard's API requests (its audit log)
# for the RBAC check that follows the scenarios (e2e/README.md).
export SWITCHYARD_E2E_AUDIT_DIR ?= $(CARGO_TARGET_DIR)/debug/e2e-audit

.PHONY: e2e
e2e: build lab-images ## Tier 4: the local real cluster and the migration scenarios, then RBAC against their audit log (root)
	rm -rf $(SWITCHYARD_E2E_AUDIT_DIR)
	$(CARGO) test --locked -p switchyard-e2e -- --test-threads=1
	$(CARGO_TARGET_DIR)/debug/switchyard-rbac-check

.PHONY: test
test: deps fmt-check lint unit e2e ## Everything CI runs
	@echo "make test: all tiers passed"

.PHONY: demo
demo: deps build lab-images ## A live migration off kube-proxy on a local real 3-node cluster
	$(CARGO_TARGET_DIR)/debug/switchyard-demo

.PHONY: cluster-up
cluster-up: ## Start the local cluster by hand (NODES=3 MODE=iptables|nftables)
	e2e/hack/lab.sh up --nodes $(or $(NODES),3) --proxy-mode $(or $(MODE),iptables)

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it created
	e2e/hack/lab.sh down

SCALE_NODES ?= 100,1000
SCALE_RUNS ?= 1
KPROXY_SERVICES ?= 1000,10000
KPROXY_UPDATES ?= 5

.PHONY: bench-operator
bench-operator: deps ## Operator at scale: SCALE_NODES=100,1000 simulated nodes, waves of 10%, SCALE_RUNS=1 (writes node-datapath/bench/results/operator-scale.*)
	$(CARGO) build --release --locked -p switchyard-operator --bin switchyard-operator
	$(CARGO) build --locked -p switchyard-e2e -p switchyard-scale-bench --bins
	$(CARGO_TARGET_DIR)/debug/switchyard-operator-scale --nodes $(SCALE_NODES) --wave 10% --runs $(SCALE_RUNS) \
		--operator $(CARGO_TARGET_DIR)/release/switchyard-operator --out node-datapath/bench/results

.PHONY: bench-kube-proxy
bench-kube-proxy: deps ## kube-proxy's own programming time: KPROXY_SERVICES=1000,10000 Services, iptables and nftables modes (writes node-datapath/bench/results/kube-proxy-sync.*)
	$(CARGO) build --locked -p switchyard-e2e -p switchyard-scale-bench --bins
	$(CARGO_TARGET_DIR)/debug/switchyard-kube-proxy-sync --services $(KPROXY_SERVICES) --modes iptables,nftables \
		--updates $(KPROXY_UPDATES) --out node-datapath/bench/results

.PHONY: bench
bench: deps ## Every benchmark: datapath at scale vs kube-proxy and the floor, operator at scale, kube-proxy's own sync (writes BENCHMARKS.md)
	node-datapath/bench/run.sh
	@# The kube-proxy section compares with the agent figures just written to raw.csv.
	$(MAKE) --no-print-directory bench-operator bench-kube-proxy
	node-datapath/bench/run.sh --report-only
