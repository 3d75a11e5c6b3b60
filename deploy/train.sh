#!/bin/sh
# train.sh RECIPE [--key=value ...]: train recipes/RECIPE.json, then export it to /models/<name>/$MODEL_VERSION.
# The export verifies the ONNX graph against torch and refuses to overwrite an existing version.
#
# Data-parallel (training/distributed.py): NPROC ranks on this machine, launched by torchrun; the recipe's
# batch_size stays the global batch (it must divide by the number of ranks). Give each rank its share of the
# cores, e.g. NPROC=2 with --threads=1 on 2 cores. Across machines, every node runs this script with the same
# NNODES, NPROC and RDZV_ENDPOINT (host:port of a c10d rendezvous all nodes reach, e.g. the first node's
# address) and RDZV_ID; rank 0 writes the checkpoint into its own runs/, so only its node exports.
set -eu
recipe="${1:?usage: train.sh RECIPE [--key=value ...]}"
shift
version="${MODEL_VERSION:-1}"
nproc="${NPROC:-1}"
nnodes="${NNODES:-1}"
name=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "recipes/$recipe.json")
if [ "$nnodes" != 1 ]; then
    launch="torchrun --nnodes=$nnodes --nproc-per-node=$nproc --rdzv-backend=c10d --rdzv-id=${RDZV_ID:-rnnserve-$recipe}"
    launch="$launch --rdzv-endpoint=${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port when NNODES > 1}"
elif [ "$nproc" != 1 ]; then
    launch="torchrun --standalone --nproc-per-node=$nproc"
else
    launch="python"
fi
# $launch is split into words on purpose: a command and its flags, none with spaces.
$launch -m training train --config "recipes/$recipe.json" --out_dir="runs/$recipe" --quiet "$@"
if [ -f "runs/$recipe/last.pt" ]; then
    python -m training export "runs/$recipe/last.pt" "${MODELS_OUT:-/models}/$name/$version"
fi
