#!/usr/bin/env bash
# The two pictures of docs/tracking.md, from a real run: `pyro-lvm train collapse` logged to
# TensorBoard and MLflow, then the TensorBoard scalar page and the MLflow run listing taken
# with headless Chromium (Debian: apt-get install -y chromium).
#
#   bash scripts/tracking_screenshots.sh [MLFLOW]
#
# MLFLOW is an `mlflow` executable of the full package (the UI is not in mlflow-skinny), for
# example from a separate venv: python3 -m venv /tmp/mlui && /tmp/mlui/bin/pip install mlflow.
# Servers listen on 127.0.0.1 only and are stopped at the end. One torch thread (as in the
# benchmarks): on a busy 2-core machine a second thread mostly waits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
MLFLOW="${1:-mlflow}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

OMP_NUM_THREADS=1 "$PY" -m pyro_lvm train collapse --methods vae anneal free-bits --epochs 12 --warmup-epochs 4 \
    --out "$WORK/collapse" --tensorboard "$WORK/tb" --mlflow "$WORK/mlflow" > "$WORK/train.log"

shoot() {  # URL PNG: wait until the page answers, let its scripts draw, take the picture
    for _ in $(seq 60); do "$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" \
        2>/dev/null && break; sleep 1; done
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
        --disable-sync --no-first-run --user-data-dir="$WORK/chrome-$(basename "$2")" --hide-scrollbars \
        --window-size=1400,900 --virtual-time-budget=15000 --screenshot="$2" "$1" 2>/dev/null
}

setsid "$PY" -m tensorboard.main --logdir "$WORK/tb" --host 127.0.0.1 --port 6123 > "$WORK/tb.log" 2>&1 &
PIDS+=($!)
# The scalar page, the curves of the three fit runs: KL, MI, KL weight and validation loss per epoch.
shoot "http://127.0.0.1:6123/?darkMode=false#scalars&_smoothingWeight=0&tagFilter=%5E(kl%7Cmi%7Ckl_weight%7Cvalid_loss)%24&regexInput=%5E(vae%7Canneal%7Cfree-bits)%24" \
    docs/figures/tracking_tensorboard.png

setsid "$MLFLOW" ui --backend-store-uri "sqlite:///$WORK/mlflow/mlflow.db" --host 127.0.0.1 --port 6124 \
    > "$WORK/mlflow.log" 2>&1 &
PIDS+=($!)
EXPERIMENT="$("$PY" -c "
import sys; from mlflow import MlflowClient
print(MlflowClient(sys.argv[1]).get_experiment_by_name('collapse').experiment_id)" "sqlite:///$WORK/mlflow/mlflow.db")"
shoot "http://127.0.0.1:6124/#/experiments/$EXPERIMENT" docs/figures/tracking_mlflow.png
echo "wrote docs/figures/tracking_tensorboard.png and docs/figures/tracking_mlflow.png"
