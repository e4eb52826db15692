#!/usr/bin/env bash
# One prepared GPU check of ganfn (under 8 minutes on one H100/H200): the
# CUDA-marked tests, the harness on CUDA, vmap scaling and DCGAN-64 bf16 FLOP
# utilisation, each section under its own time limit, one markdown table in
# $OUT/gpu_check.md (or bench/gpu_check_out/). See bench/gpu_check.py.
#
#   bash bench/gpu_check.sh               # on the GPU machine, from the repo root
#   bash bench/gpu_check.sh --cpu-smoke   # the script's logic on a CPU (~1 min)
#
# The GPU image has torch but not optree: bring its wheel in .whl/ (gitignored;
# the download command is in bench/README.md) and it is installed here first.
set -u
cd "$(dirname "$0")/.."
if ! python3 -c "import optree" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "optree is missing and .whl/ holds no wheel: see bench/README.md (GPU check)" >&2
        exit 1
    fi
fi
exec python3 bench/gpu_check.py "$@"
