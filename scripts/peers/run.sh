#!/usr/bin/env bash
# `make bench-peers`: the same detectors on the same data in gonomaly and in Python
# (scikit-learn, PyOD, River), one thread each, and a markdown table of the ratios.
#
#   scripts/peers/run.sh [--out DIR] [--strict]
#
# --out DIR   where the JSON of both sides and peers.md go (default ./peers-report)
# --strict    exit 1 when a goal of issue 7 is not met (default: report only)
# Environment: GONOMALY_DATA (default <repo>/../shared/data), PEERS_REPEAT (default 3),
# XDG_CACHE_HOME (the virtual environment lives in $XDG_CACHE_HOME/gonomaly/peers-venv,
# reused while requirements.txt and the Python version are unchanged), GO (default go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="./peers-report"
strict=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --strict) strict="--strict"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (want --out DIR, --strict)" >&2; exit 2 ;;
  esac
done
data="${GONOMALY_DATA:-$root/../shared/data}"
repeat="${PEERS_REPEAT:-3}"
GO="${GO:-go}"
start=$(date +%s)
say() { echo "== peers [$(( $(date +%s) - start ))s] $*" >&2; }

for f in odds/shuttle.csv odds/cover.csv.gz nab/combined_windows.json nab/realKnownCause/machine_temperature_system_failure.csv; do
  if [ ! -f "$data/$f" ]; then
    echo "run.sh: $data/$f is missing; set GONOMALY_DATA to the shared data directory" >&2
    exit 1
  fi
done
command -v "$GO" >/dev/null || { echo "run.sh: $GO not found: the Go toolchain is needed to build gonomaly" >&2; exit 1; }
command -v python3 >/dev/null || {
  echo "run.sh: python3 not found: install Python 3.11 (Debian: apt-get install python3 python3-venv)" >&2; exit 1; }

# --- the virtual environment -----------------------------------------------------------
venv="${XDG_CACHE_HOME:-$HOME/.cache}/gonomaly/peers-venv"
stamp="$( (cat "$here/requirements.txt"; python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$stamp" ]; then
  say "reusing $venv"
else
  say "creating $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" 2>/tmp/peers-venv.err.$$; then
    # Debian splits ensurepip out of python3 into python3-venv.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "python3 -m venv failed ($(tail -1 /tmp/peers-venv.err.$$)); installing python3-venv"
      pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      apt-get update -qq >&2
      apt-get install -y -qq python3-venv >&2 || apt-get install -y -qq "python${pyver}-venv" >&2
      rm -rf "$venv"
      python3 -m venv "$venv" || {
        echo "run.sh: python3 -m venv still fails after installing python3-venv; is python3 ($(command -v python3)) Debian's?" >&2
        exit 1; }
    else
      cat /tmp/peers-venv.err.$$ >&2
      echo "run.sh: python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv) and rerun" >&2
      rm -f /tmp/peers-venv.err.$$
      exit 1
    fi
  fi
  rm -f /tmp/peers-venv.err.$$
  say "pip install -r scripts/peers/requirements.txt (wheels only)"
  "$venv/bin/python" -m pip install --quiet --only-binary=:all: -r "$here/requirements.txt" >&2
  echo "$stamp" > "$venv/.stamp"
fi
py="$venv/bin/python"

# --- gonomaly, built as users run it: no race detector --------------------------------
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/gonomaly-*.json "$out"/python-*.json
bin="$out/.gonomaly-bench"
trap 'rm -f "$bin"' EXIT
say "go build -o $bin ./cmd/gonomaly"
(cd "$root" && "$GO" build -o "$bin" ./cmd/gonomaly)

# --- the runs ---------------------------------------------------------------------------
# Same hyperparameters on both sides: the registry defaults for iforest (100 trees, 256
# samples), hbos (10 bins) and knn (k 5, largest), with knn's own standardising off since
# the protocol has already standardised and PyOD's KNN does not; River's HalfSpaceTrees
# defaults (10 trees, height 8, window 250) for hst with a work space of [-1, 1], which is
# where the stream is scaled; window 64 and 8 warm-up values for GaussianScorer, against
# both zscore (robust: median/MAD) and windowed_gaussian (the same estimator: mean/sd).
common=(--seed 0 --repeat "$repeat")
commands=()
# run_job NAME ARGS...: Go then Python with the same arguments, so that both sides see
# about the same load on a shared machine.
run_job() {
  local name="$1"; shift
  say "$name: gonomaly"
  "$bin" bench detectors "$@" "${common[@]}" --json > "$out/gonomaly-$name.json"
  say "$name: python"
  "$py" "$here/peers.py" "$@" "${common[@]}" > "$out/python-$name.json"
  commands+=("gonomaly bench detectors $* ${common[*]} --json" "python scripts/peers/peers.py $* ${common[*]}")
}
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
run_job 1-shuttle --dataset "$data/odds/shuttle.csv" --detectors iforest,ecod,hbos,knn --param knn.standardize=0
run_job 2-cover --dataset "$data/odds/cover.csv.gz" --detectors iforest,ecod,hbos,knn --param knn.standardize=0
run_job 3-stream --stream-series "$data/nab/realKnownCause/machine_temperature_system_failure.csv" \
  --labels "$data/nab/combined_windows.json" --stream-detectors hst,zscore,windowed_gaussian \
  --param hst.trees=10 --param hst.height=8 --param hst.window=250 --param hst.limit=1 \
  --param zscore.window=64 --param zscore.min_samples=8 \
  --param windowed_gaussian.window=64 --param windowed_gaussian.min_samples=8
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)"
"$py" - "$out/meta.json" "$root/" "$(nproc) cores${cpu:+, $cpu}, $(uname -sr)" "$load_before" "$load_after" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ -d @"$start")" "$(( $(date +%s) - start ))" "${commands[@]}" <<'PY'
import json, sys
path, root, machine, before, after, started, seconds, *commands = sys.argv[1:]
# Paths relative to the repository, as a reader would type them.
json.dump({"machine": machine, "load_before": before, "load_after": after, "started": started,
           "seconds": int(seconds), "commands": [c.replace(root, "") for c in commands]},
          open(path, "w"), indent=2)
PY
say "writing $out/peers.md"
"$py" "$here/compare.py" --dir "$out" --meta "$out/meta.json" --out "$out/peers.md" $strict
say "done"
