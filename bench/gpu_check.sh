#!/usr/bin/env bash
# One-shot GPU check for the lent device machine (see README "On a GPU"): the 7B memory proof
# (bench/memory.py), the whole test suite with the kernels compiled for the GPU, then
# bench/kernels.py at the real shapes. Writes logs and results under $OUT.
# Wheels the machine lacks (bitsandbytes, liger-kernel, typer) travel in .whl/ and go to /tmp/site.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || echo "editable install failed" >>"$OUT/install.log"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)"
  python3 -c "import importlib.metadata as m; print('liger-kernel', m.version('liger-kernel'))"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# Run from /tmp so the repo's top-level kernels/ folder never shadows Hugging Face's `kernels`.
REPO=$(pwd)
( cd /tmp && timeout "${MEMORY_TIMEOUT:-240}" python3 "$REPO/bench/memory.py" ${MEMORY_ARGS:-} --json "$OUT/memory.json" \
    --markdown "$OUT/memory.md" ) 2>&1 | tee "$OUT/memory.log" | grep -v "^{" | tail -30
( cd /tmp && timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider -W ignore::RuntimeWarning \
    --rootdir "$REPO" "$REPO/tests" ) 2>&1 | tee "$OUT/pytest.log" | tail -15
timeout "${BENCH_TIMEOUT:-360}" python3 bench/kernels.py ${BENCH_ARGS:-} --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
  2>&1 | tee "$OUT/bench.log" | tail -30
