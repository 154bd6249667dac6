#!/usr/bin/env bash
# The README's screenshot of TensorBoard's HParams view: a short real sweep on the digits example
# (sweeps/digits_sgd.yaml, 12 trials) in a temporary log dir, `lightopt tensorboard` on it, and
# headless Chromium (Debian's `chromium` package) on the dashboard's #hparams page.
#
#   bash examples/hparams_screenshot.sh [OUT.png]     # default: examples/images/hparams.png
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "${1:-$ROOT/examples/images/hparams.png}")"
WORK="$(mktemp -d)"
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cleanup() { [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"  # the sweep's log_dir (runs/) lands here
python -m lightopt sweep run "$ROOT/sweeps/digits_sgd.yaml" --n-trials 12
python -m lightopt tensorboard "$ROOT/sweeps/digits_sgd.yaml" --port "$PORT" &
SERVER=$!
for _ in $(seq 120); do  # until the HParams plugin lists the 12 trials
  if curl -sf -H 'Content-Type: application/json' -d '{"experimentName":"","allowedStatuses":["STATUS_SUCCESS","STATUS_FAILURE","STATUS_RUNNING","STATUS_UNKNOWN"],"colParams":[],"startIndex":0,"sliceSize":100}' \
       "http://127.0.0.1:$PORT/data/plugin/hparams/session_groups" | grep -Eq '"totalSize": ?12\b'; then break; fi
  sleep 1
done
mkdir -p "$(dirname "$OUT")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1920,1000 \
  --virtual-time-budget=15000 --screenshot="$OUT" "http://127.0.0.1:$PORT/#hparams"
echo "screenshot: $OUT"
