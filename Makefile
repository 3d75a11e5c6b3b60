# rnnserve: every command sets itself up (virtualenv, packages, generated code).
PY      := .venv/bin/python
VENV    := .venv/.installed
DATA    := ../shared/data

.PHONY: all check lint typecheck unit test system-packages data run serve bench-serve demo proto models clean wheels \
	images cells

all: test

# The package, editable, with every extra: the versions come from requirements/*.txt (pyproject.toml reads them).
$(VENV): pyproject.toml requirements/serve.txt requirements/train.txt requirements/tools.txt requirements/deploy.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[train,dev]'
	touch $@

venv: $(VENV)

# ---- the fast loop (CI runs it first): lint, types, and the tests that need no extra process, container or long run
check: lint typecheck unit

lint: $(VENV)
	.venv/bin/ruff check .

# Which modules mypy checks, and which legacy ones it does not yet hold to its rules: [tool.mypy] in pyproject.toml.
typecheck: $(VENV) proto
	.venv/bin/mypy

unit: $(VENV) proto
	$(PY) -m pytest -q -m "not slow and not process and not container"

# ---- the whole suite (the README's test command; CI runs it after `make check`)
test: $(VENV) proto system-packages
	$(PY) -m pytest -q

# Debian packages the full suite drives for real: Chromium renders the cell pages, nginx/Prometheus/podman run
# the deploy tests. The one target that installs system packages; as root, and only what is missing.
SYSTEM_TOOLS    := chromium nginx prometheus promtool podman podman-compose docker-compose debootstrap runc
SYSTEM_PACKAGES := chromium nginx prometheus podman podman-compose docker-compose runc debootstrap
system-packages:
	@missing=$$(for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || printf '%s ' $$t; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing $$missing (not root: the tests that need them will skip)"; exit 0; fi; \
	echo "installing Debian packages for: $$missing"; \
	apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
		$(SYSTEM_PACKAGES) >/dev/null

# Where each recipe's data comes from ($(DATA), never copied in) and whether it is there.
data:
	python3 scripts/check_data.py

# ---- serving: generated gRPC code (not committed), the server, a client, the benchmark
PROTO_GEN := service/gen/.stamp

proto: $(PROTO_GEN)

$(PROTO_GEN): $(VENV) $(wildcard protos/*/*.proto protos/*/*/*.proto) protos/build.py
	$(PY) -m protos.build

# Serve every model under models/ (gRPC :50051, /metrics :9090); settings: python -m service --help
serve: proto
	$(PY) -m service --model-dir models

# Stream a generation from the running server.
run: proto
	$(PY) -m service.client generate --model shakespeare-lstm "ROMEO:" -n 300

# Serving targets (docs/serving.md); QUICK=1 for a short run.
bench-serve: proto
	$(PY) -m bench.serve_bench --model-dir models --model shakespeare-lstm $(if $(QUICK),--quick)

# The main job: serve the bundled models and stream a generation from a client, then stop.
demo: proto
	scripts/demo.sh

# ---- bundled models: each recipe retrains and re-exports one artifact from ../shared/data
models: model-shakespeare-lstm model-shakespeare-gru model-sst2-bilstm model-python-lstm model-multi30k-de-en \
	model-flickr8k-captioner

model-%: $(VENV)
	$(PY) -m training train --config recipes/$*.json
	$(PY) -m training export runs/$*/last.pt models/$$($(PY) -c "import json;print(json.load(open('recipes/$*.json'))['name'])")/$${VERSION:-1}

# The code corpus is this machine's Python standard library, gathered at run time and never committed.
CODE_CORPUS := runs/data/python-stdlib.txt
$(CODE_CORPUS): | $(VENV)
	$(PY) -m training code-corpus $@
model-python-lstm model-python-lstm-20min: $(CODE_CORPUS)

# Interpretable cells of the bundled models (docs/cells.md): ranked tables, cells.json, pictures and pages in runs/cells/.
cells: $(VENV) $(CODE_CORPUS)
	$(PY) -m service.interpret cells models/python-lstm/1 --features code --chars 120000
	$(PY) -m service.interpret cells models/shakespeare-lstm/1 --features prose --chars 100000 --labels $(DATA)/sst2/dev.tsv

# ---- deployment (docs/deploy.md): wheelhouses for the images, the images, the compose stack
WHEELS    := deploy/wheels
BASE_IMAGE ?= python:3.11-slim
PODMAN    := CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/deploy/podman-containers.conf} BUILDAH_FORMAT=docker podman

# The images install from these with --no-index: made here, on a machine that reaches the package index.
wheels: $(WHEELS)/serve/.stamp $(WHEELS)/train/.stamp

$(WHEELS)/serve/.stamp: requirements/serve.txt | $(VENV)
	rm -rf $(WHEELS)/serve
	.venv/bin/pip download -q --only-binary=:all: -d $(WHEELS)/serve -r requirements/serve.txt \
		"grpcio-tools==1.85.*" setuptools pip
	touch $@

$(WHEELS)/train/.stamp: requirements/serve.txt requirements/train.txt | $(VENV)
	rm -rf $(WHEELS)/train
	.venv/bin/pip download -q --only-binary=:all: -d $(WHEELS)/train -r requirements/serve.txt -r requirements/train.txt pip
	touch $@

# Service and training images with podman (docker build takes the same arguments);
# BASE_IMAGE=localhost/rnnserve-base:bookworm after deploy/local-images.sh where no registry is reachable.
images: wheels
	$(PODMAN) build -f deploy/rnnserve.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t localhost/rnnserve:latest .
	$(PODMAN) build -f deploy/train.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t localhost/rnnserve-train:latest .

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache .mypy_cache service/gen $(WHEELS)
