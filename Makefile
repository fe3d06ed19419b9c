# agentaccounts — developer entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= .venv/bin/python
export GOTOOLCHAIN := local
export PYTHONPATH := tests
KUBECONFIG_LOCAL := $(CURDIR)/.local/kubeconfig

.PHONY: help venv binaries cluster cluster-down node node-down demo demo-node test unit lint chart-lint chart-crds bench image kind

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: .venv/.installed  ## create .venv with the package and test tools

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[test]'
	touch $@

binaries: venv  ## build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and helm (Go module proxy, cached)
	$(PY) tests/cluster/build.py
	$(PY) tests/e2e/helm.py >/dev/null

cluster: binaries  ## start the local control plane; writes .local/kubeconfig
	$(PY) -m cluster.launcher up --dir .local

cluster-down:  ## stop the local control plane started by `make cluster`
	$(PY) -m cluster.launcher down --dir .local

node: cluster  ## start a real node for it (containerd + kubelet + scheduler; root); builds/imports the images (cached)
	$(PY) -m cluster.node up --cluster-dir .local

node-down:  ## stop the node started by `make node` (containers, shims, mounts, cgroups)
	$(PY) -m cluster.node down

demo-node: node  ## the operator as a pod from its image, agent pods using its Secret, expiry seen from a pod
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply --server-side -f crds/
	$(PY) -m e2e.node_support

demo: cluster  ## walk through an AgentAccount's whole life on the local control plane
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply --server-side -f crds/
	KUBECONFIG=$(KUBECONFIG_LOCAL) .venv/bin/agentaccounts demo

lint: venv  ## ruff, mypy (strict), the import-layering contracts, helm lint and hadolint
	.venv/bin/ruff check operator tests
	.venv/bin/ruff format --check operator tests
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(MAKE) chart-lint

chart-lint: venv  ## helm lint (defaults and every option on) and hadolint on the Dockerfile
	h=$$($(PY) tests/e2e/helm.py) && $$h lint --strict charts/agentaccounts && \
	  $$h lint --strict charts/agentaccounts -f charts/agentaccounts/ci/all-options-values.yaml
	h=$$($(PY) tests/e2e/helm.py) && $$h lint --strict charts/agentaccounts -f tests/e2e/node-values.yaml
	.venv/bin/hadolint operator/Dockerfile

chart-crds:  ## refresh the chart's byte-identical CRD copies from crds/
	cp crds/*.yaml charts/agentaccounts/files/crds/

image:  ## build the operator image (needs a Docker engine)
	docker build -f operator/Dockerfile -t agentaccounts:dev .

kind: image  ## kind cluster + image + chart (needs Docker and kind)
	kind create cluster --config kind-config.yaml
	kind load docker-image agentaccounts:dev --name agentaccounts
	h=$$($(PY) tests/e2e/helm.py) && $$h install agentaccounts charts/agentaccounts \
	  -n agentaccounts-system --create-namespace --set image.tag=dev

unit: venv  ## unit tests only (no cluster)
	.venv/bin/pytest tests/unit -q

test: binaries  ## the whole suite: lint, unit, integration, e2e, and the benchmarks at --quick size
	$(MAKE) lint
	.venv/bin/pytest -q
	.venv/bin/pytest tests/bench/test_bench_scale.py tests/bench/test_bench_cloudflare.py -q -p no:cacheprovider --quick

bench: binaries  ## benchmarks at full size (~30 min on 2 CPUs); results in tests/bench/results/
	.venv/bin/pytest tests/bench -q -s -p no:cacheprovider
