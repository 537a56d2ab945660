#!/usr/bin/env bash
# One-shot GPU check for the lent device machine (see README "On a GPU"): kernel tests compiled
# for the GPU, then bench/kernels.py at the real shapes. Writes logs and results under $OUT.
# Missing wheels (liger-kernel, typer) travel in .whl/ and go to /tmp/site.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || echo "editable install failed" >>"$OUT/install.log"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
  python3 -c "import liger_kernel, importlib.metadata as m; print('liger-kernel', m.version('liger-kernel'))"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -W ignore::RuntimeWarning \
  tests/test_kernels_gpu.py tests/test_group_advantages.py tests/test_token_stats.py tests/test_policy_loss.py \
  tests/test_package.py 2>&1 | tee "$OUT/pytest.log" | tail -40
timeout "${BENCH_TIMEOUT:-360}" python3 bench/kernels.py ${BENCH_ARGS:-} --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
  2>&1 | tee "$OUT/bench.log"
