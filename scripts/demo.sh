#!/usr/bin/env bash
# The main job: serve the bundled models, stream a generation, classify two sentences, translate two, caption a
# photo, stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${RNNSERVE_DEMO_PORT:-50051}
unset RNNSERVE_DEMO_PORT  # the server refuses RNNSERVE_* variables that are not its settings
TARGET="localhost:$PORT"

"$PY" -m service --model-dir models --port "$PORT" --metrics-port 0 --http-port 0 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 150); do  # up to 30 s for the models to load
  "$PY" -m service.client --target "$TARGET" --timeout 1 models >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "the server exited during start-up" >&2; exit 1; }
  sleep 0.2
done

echo "== models"
"$PY" -m service.client --target "$TARGET" models | cut -c1-160
echo
echo "== generate --model shakespeare-lstm \"ROMEO:\" (streamed as it is produced)"
"$PY" -m service.client --target "$TARGET" generate --model shakespeare-lstm "ROMEO:" -n 400 --temperature 0.8 --seed 1 --flush-chars 4
echo
echo "== classify --model sst2-bilstm"
"$PY" -m service.client --target "$TARGET" classify --model sst2-bilstm \
  "a gripping, beautifully acted film" "a dull, lifeless mess that never finds its footing"
if [ -d models/multi30k-de-en ]; then
  echo
  echo "== translate --model multi30k-de-en (German -> English, streamed as it is decoded)"
  for text in "Ein Mann schläft in einem grünen Raum auf einem Sofa." "Zwei kleine Kinder spielen im Sand am Strand."; do
    echo "$text"
    "$PY" -m service.client --target "$TARGET" translate --model multi30k-de-en --flush-chars 1 "$text"
  done
fi
PHOTO=../shared/data/flickr8k/images/1352410176_af6b139734.jpg  # a test-split photo the captioner never saw
if [ -d models/flickr8k-captioner ] && [ -f "$PHOTO" ]; then
  echo
  echo "== caption --model flickr8k-captioner --beam 3 $(basename "$PHOTO") (words streamed as they are decoded)"
  "$PY" -m service.client --target "$TARGET" caption --model flickr8k-captioner --beam 3 "$PHOTO"
fi
