# switchyard — the two promises: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Heavy builds are cached outside the checkout, keyed by version, so a fresh
# clone on the same machine builds fast.
export SWITCHYARD_CACHE ?= $(HOME)/.cache/switchyard
export CARGO_TARGET_DIR ?= $(SWITCHYARD_CACHE)/target
CARGO ?= cargo

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

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
crds: ## Regenerate crds/ from operator/api
	$(CARGO) run --quiet --locked -p switchyard-operator --bin crdgen -- crds

.PHONY: unit
unit: ## Tier 1-3: unit, property, golden and privileged datapath tests (CRD drift included)
	$(CARGO) test --workspace --locked --exclude switchyard-e2e

.PHONY: test
test: deps fmt-check lint unit ## Everything CI runs
	@echo "make test: all tiers passed"
