#!/usr/bin/env bash
# The pictures of docs/tracking.md, from a real run: `pyro-lvm train collapse` logged to
# TensorBoard and MLflow, then the TensorBoard scalar page taken with headless Chromium
# (Debian: apt-get install -y chromium) and the MLflow run listing (`mlflow runs list`).
#
#   [WORK=DIR] bash scripts/tracking_screenshots.sh
#
# The TensorBoard server listens on 127.0.0.1 only and is stopped at the end. One torch thread (as in the
# benchmarks): on a busy 2-core machine a second thread mostly waits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute (TensorBoard starts in $WORK), links kept
# WORK=DIR keeps the run there (and a second call takes the pictures again without training).
KEEP="${WORK:-}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; [ -n "$KEEP" ] || rm -rf "$WORK"; }
trap cleanup EXIT

[ -f "$WORK/collapse/metrics.json" ] || OMP_NUM_THREADS=1 "$PY" -m pyro_lvm train collapse --methods vae anneal free-bits \
    --epochs 12 --warmup-epochs 4 --out "$WORK/collapse" --tensorboard "$WORK/tb" --mlflow "$WORK/mlflow" > "$WORK/train.log"

shoot() {  # URL PNG WAIT: wait until the page answers, let its scripts draw, take the picture
    for _ in $(seq 120); do "$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" \
        2>/dev/null && break; sleep 1; done
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
        --disable-sync --no-first-run --user-data-dir="$WORK/chrome-$(basename "$2")" --hide-scrollbars \
        --window-size=1400,900 "$3" --screenshot="$2" "$1" 2>/dev/null
}

(cd "$WORK" && exec setsid "$PY" -m tensorboard.main --logdir tb --host 127.0.0.1 --port 6123 > tb.log 2>&1) &
PIDS+=($!)
# The scalar page, the curves of the three fit runs: KL, MI, KL weight and validation loss per epoch.
shoot "http://127.0.0.1:6123/?darkMode=false#scalars&_smoothingWeight=0&tagFilter=%5E(kl%7Cmi%7Ckl_weight%7Cvalid_loss)%24&regexInput=%5E(vae%7Canneal%7Cfree-bits)%24" \
    docs/figures/tracking_tensorboard.png --virtual-time-budget=15000

# The MLflow run listing of the same command, by MLflow's own command line (in mlflow-skinny).
EXPERIMENT="$("$PY" -c "
import sys; from mlflow import MlflowClient
print(MlflowClient(sys.argv[1]).get_experiment_by_name('collapse').experiment_id)" "sqlite:///$WORK/mlflow/mlflow.db" 2>/dev/null)"
MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow/mlflow.db" "$(dirname "$PY")/mlflow" runs list --experiment-id "$EXPERIMENT" \
    2>/dev/null > docs/figures/tracking_mlflow_runs.txt
echo "wrote docs/figures/tracking_tensorboard.png and docs/figures/tracking_mlflow_runs.txt"
