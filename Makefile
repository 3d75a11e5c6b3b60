# rnnserve: every command sets itself up (virtualenv, packages, generated code).
PY      := .venv/bin/python
VENV    := .venv/.installed
DATA    := ../shared/data

.PHONY: all test lint run demo proto models clean

all: test

$(VENV): requirements/serve.txt requirements/train.txt requirements/dev.txt
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements/dev.txt
	touch $@

venv: $(VENV)

lint: $(VENV)
	.venv/bin/ruff check .

test: $(VENV)
	$(PY) -m pytest -q

# Sample from the bundled LSTM through ONNX Runtime.
demo: $(VENV)
	$(PY) -m training sample-onnx models/shakespeare-lstm/1 --prime "ROMEO:" -n 300

# ---- bundled models: each recipe retrains and re-exports one artifact from ../shared/data
models: model-shakespeare-lstm model-shakespeare-gru model-sst2-bilstm

model-%: $(VENV)
	$(PY) -m training train --config recipes/$*.json
	$(PY) -m training export runs/$*/last.pt models/$$($(PY) -c "import json;print(json.load(open('recipes/$*.json'))['name'])")/$${VERSION:-1}

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache
