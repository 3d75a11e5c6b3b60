# rnnserve: every command sets itself up (virtualenv, packages, generated code).
PY      := .venv/bin/python
VENV    := .venv/.installed
DATA    := ../shared/data

.PHONY: all test lint run serve bench-serve demo proto models clean wheels images deploy-tools chromium cells

all: test

$(VENV): requirements/serve.txt requirements/train.txt requirements/dev.txt requirements/deploy.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements/dev.txt
	touch $@

venv: $(VENV)

lint: $(VENV)
	.venv/bin/ruff check .

test: $(VENV) proto chromium deploy-tools
	$(PY) -m pytest -q

# Debian's headless Chromium: the tests render the cell pages in it and check the screenshot's pixels.
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q -o DPkg::Lock::Timeout=600 chromium)

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
models: model-shakespeare-lstm model-shakespeare-gru model-sst2-bilstm model-python-lstm model-multi30k-de-en

model-%: $(VENV)
	$(PY) -m training train --config recipes/$*.json
	$(PY) -m training export runs/$*/last.pt models/$$($(PY) -c "import json;print(json.load(open('recipes/$*.json'))['name'])")/$${VERSION:-1}

# The code corpus is this machine's Python standard library, gathered at run time and never committed.
CODE_CORPUS := runs/data/python-stdlib.txt
$(CODE_CORPUS): | $(VENV)
	$(PY) -m training code-corpus $@
model-python-lstm: $(CODE_CORPUS)

# Interpretable cells of the bundled models (docs/cells.md): ranked tables, cells.json, pictures and pages in runs/cells/.
cells: $(VENV) $(CODE_CORPUS)
	$(PY) -m training cells models/python-lstm/1 --features code --chars 120000
	$(PY) -m training cells models/shakespeare-lstm/1 --features prose --chars 100000 --labels $(DATA)/sst2/dev.tsv

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
	.venv/bin/pip download -q --only-binary=:all: -d $(WHEELS)/train -r requirements/train.txt pip
	touch $@

# Service and training images with podman (docker build takes the same arguments);
# BASE_IMAGE=localhost/rnnserve-base:bookworm after deploy/local-images.sh where no registry is reachable.
images: wheels
	$(PODMAN) build -f deploy/rnnserve.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t localhost/rnnserve:latest .
	$(PODMAN) build -f deploy/train.Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t localhost/rnnserve-train:latest .

# System tools of the deploy tests (tests/deploy/), from Debian's packages; skipped when all are there.
DEPLOY_TOOLS := nginx prometheus promtool podman podman-compose docker-compose debootstrap runc
deploy-tools:
	@missing=$$(for t in $(DEPLOY_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing $$missing (not root: the deploy tests will skip)"; exit 0; fi; \
	echo "installing $$missing"; \
	apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
		nginx prometheus podman podman-compose docker-compose runc debootstrap >/dev/null

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache service/gen $(WHEELS)
