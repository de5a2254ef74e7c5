#!/usr/bin/env bash
# Every chapter in the full profile on a machine with an NVIDIA GPU, in one go of under nine minutes.
#
#   bash bench/gpu_wheels.sh      # beforehand, on a machine with a network: fills .whl/
#   bash bench/gpu_run.sh         # on the GPU machine, from the repository root, with .whl/ beside it
#
# The GPU machine needs Python 3.12 with torch and the packages bench/gpu_wheels.sh lists as expected
# there, and no network: the notebook tools come from the wheels in .whl/ (installed into a folder of
# their own, nothing else touched), the course's package from the repository itself (PYTHONPATH), and
# the data from .whl/course-data.tar.gz unless COMPANION_DATA names a folder already.
#
# Every chapter runs top to bottom through bench/run_notebooks.py with COMPANION_REQUIRE_GPU=1 (a kernel
# that lost the GPU fails instead of running on the CPU), several at a time on the one GPU, each within
# its own time limit; a failing chapter leaves the others running. Then, in the time left, the unit
# tests run on the GPU too. What comes out goes to $OUT (default _build/gpu-run/), six files:
#   full-cuda.jsonl        the chapters' times, cells' times and results (also in bench/results/)
#   reproducibility.md     the book's page with its GPU column (also in book/)
#   executed.zip           the executed notebooks, failing ones with their tracebacks
#   run.log, tests.log     what the chapters and the unit tests printed
#   machine.txt            the GPU, the driver and the versions
#
# Settings: PYTHON (default python3), GPU_RUN_LIMIT (seconds for the whole script, default 510),
# GPU_RUN_NOTEBOOK_LIMIT (seconds for one notebook's cells, default 400), GPU_RUN_JOBS (notebooks at a
# time, default every chapter at once, at most one per CPU core), GPU_RUN_CHAPTERS (names such as
# "01-neurons 07-cnn"; default every chapter that _toc.yml lists), GPU_RUN_TESTS (0 skips the unit tests), and
# COMPANION_REQUIRE_GPU=0 to try the script on a machine without a GPU (the results file is then named
# after the device that ran it, full-cpu.jsonl, which it replaces: try it in a copy).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/_build/gpu-run}
LIMIT=${GPU_RUN_LIMIT:-510}
NOTEBOOK_LIMIT=${GPU_RUN_NOTEBOOK_LIMIT:-400}
WORK=$(mktemp -d /tmp/companion-gpu-run.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

left() { echo $((LIMIT - SECONDS)); }
say() { echo "::: [$SECONDS s] $*"; }

# -- what the course needs, from the wheels and the repository -----------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl || { echo "installing the wheels of .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${COMPANION_DATA:-}" ] && [ -f .whl/course-data.tar.gz ]; then
    mkdir -p "$WORK/data" && tar -xzf .whl/course-data.tar.gz -C "$WORK/data"
    export COMPANION_DATA="$WORK/data"
fi
export COMPANION_PROFILE=full COMPANION_REQUIRE_GPU=${COMPANION_REQUIRE_GPU:-1} PYTHONUNBUFFERED=1 PYDEVD_DISABLE_FILE_VALIDATION=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLCONFIGDIR="$WORK/matplotlib"
say "installed; data in ${COMPANION_DATA:-(none)}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PYTHON" - <<'EOF'
import platform, sys
import torch
from companion import config
device = config.device()  # raises under COMPANION_REQUIRE_GPU=1 when there is no GPU
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), device {device}")
if device.type == "cuda":
    print(f"{torch.cuda.get_device_name(device)}, capability {torch.cuda.get_device_capability(device)}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
for name in ["nbformat", "nbclient", "ipykernel", "jupyter_client", "jupytext", "nbval", "numpy", "matplotlib"]:
    module = __import__(name)
    print(f"{name} {getattr(module, '__version__', '?')} from {module.__file__}")
EOF
} >"$OUT/machine.txt" 2>&1
status=$?
cat "$OUT/machine.txt"
if [ $status -ne 0 ]; then
    echo "the GPU or the notebook tools are missing: see above" >&2
    exit 1
fi

# -- every chapter, several at a time ------------------------------------------------------------------
listed=$("$PYTHON" -c 'import sys; sys.path.insert(0, "tools"); import twins
print(" ".join(source.stem for source in twins.in_book(twins.chapters())))')  # the chapters _toc.yml lists
read -r -a names <<<"${GPU_RUN_CHAPTERS:-$listed}"
chapters=${#names[@]}
cores=$(nproc)
jobs=${GPU_RUN_JOBS:-$((chapters < cores ? chapters : cores))}
threads=$((cores / jobs > 0 ? cores / jobs : 1))
device=$("$PYTHON" -c 'from companion import config; print(config.device().type)')
results=bench/results/full-$device.jsonl
rm -f "$results"
say "$chapters chapter(s) on $device, $jobs at a time, $threads thread(s) each, at most $NOTEBOOK_LIMIT s each"
timeout --kill-after=10 $(($(left) - 20)) "$PYTHON" bench/run_notebooks.py --profile full \
    --jobs "$jobs" --threads "$threads" --timeout "$NOTEBOOK_LIMIT" --base-models \
    --executed "$WORK/executed" --output "$results" "${names[@]}" 2>&1 | tee "$OUT/run.log"
run_status=${PIPESTATUS[0]}
say "chapters done (exit status $run_status)"

"$PYTHON" tools/reproducibility.py
cp "$results" book/reproducibility.md "$OUT"/ 2>/dev/null
if [ -d "$WORK/executed" ]; then
    (cd "$WORK/executed" && "$PYTHON" -m zipfile -c "$OUT/executed.zip" ./*.ipynb)
fi

# -- one summary line per chapter ----------------------------------------------------------------------
"$PYTHON" - "$results" "${names[@]}" <<'EOF'
import json, sys
from pathlib import Path
path, names = Path(sys.argv[1]), sys.argv[2:]
lines = {line["chapter"]: line for line in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
for name in names:
    line = lines.get(name)
    if line is None:
        print(f"{name:<16} FAILED or not finished (see run.log and executed.zip)")
    else:
        slowest = max(line["cells"], key=lambda cell: cell["seconds"])
        print(f"{name:<16} {line['seconds']:7.1f} s  {len(line['results'])} results  "
              f"slowest cell {slowest['cell']}: {slowest['seconds']:.1f} s")
print(f"{len(lines)} of {len(names)} chapters ran to the end")
EOF

# -- the unit tests on the GPU, in the time left ---------------------------------------------------------
if [ "${GPU_RUN_TESTS:-1}" != 0 ] && [ "$(left)" -gt 60 ]; then
    say "unit tests, $(($(left) - 25)) s at most"
    # At the limit pytest gets an interrupt, stops, and still reports what ran and what failed.
    COMPANION_REQUIRE_GPU=0 timeout --signal=INT --kill-after=15 $(($(left) - 25)) "$PYTHON" -m pytest tests \
        -q -rfE -p no:cacheprovider -n "$((cores > 8 ? 8 : cores))" --ignore=tests/test_colab.py --ignore=tests/test_browser.py \
        -o addopts="" >"$OUT/tests.log" 2>&1
    say "unit tests: exit status $? ($(tail -1 "$OUT/tests.log"))"
fi
say "done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$run_status"
