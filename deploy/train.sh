#!/bin/sh
# train.sh RECIPE [--key=value ...]: train recipes/RECIPE.json, then export it to /models/<name>/$MODEL_VERSION.
# The export verifies the ONNX graph against torch and refuses to overwrite an existing version.
set -eu
recipe="${1:?usage: train.sh RECIPE [--key=value ...]}"
shift
version="${MODEL_VERSION:-1}"
name=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "recipes/$recipe.json")
python -m training train --config "recipes/$recipe.json" --out_dir="runs/$recipe" --quiet "$@"
python -m training export "runs/$recipe/last.pt" "${MODELS_OUT:-/models}/$name/$version"
