#!/usr/bin/env bash
# One-shot GPU check for the lent device machine (see docs/distributed.md, "On a GPU"). Writes logs and results
# under $OUT. PARTS picks what runs, in this order (default: the decode-engine checks, ~10 min):
#   rollout      bench/rollout.py, 7B shape NF4 + LoRA r=64, 448x448, 256 tokens forced: old loop vs
#                engine (CUDA graph) vs engine on bf16 rollout weights, 8 and 64 rows, greedy first
#                differences (rollout.json / rollout.md)
#   memory_step  bench/memory.py --grad-accum 8: the 7B config's step with its 8 images (64 rows)
#                rolled out together on the engine (memory_step.json / .md); MEMORY_STEP_ARGS adds
#                e.g. "--rollout-weights bf16"
#   tests        the whole test suite with CUDA (tests/test_decode.py::test_cuda_graph_matches_eager
#                is the capture check: fp32 and NF4 + LoRA) (pytest.log)
#   memory       bench/memory.py as measured before (one image per step, old numbers to compare)
#   kernels      bench/kernels.py at the real shapes
#   loss_passes  bench/loss_passes.py, 7B shape: the loss passes with the prompt once per image
#                (model.shared_prefix) vs once per rollout (loss_passes.json / .md)
#   qwen3        bench/memory.py --preset qwen3-4b and qwen3-8b (the configs' step: 8 images, 4 decoded at a
#                time, 512x512) and bench/rollout.py --preset qwen3-4b (qwen3_{memory_4b,memory_8b,rollout}.json)
#   score        bench/score_throughput.py, 7B shape NF4 + LoRA, 96 mixed-size JPEGs (up to 512 visual
#                tokens), K=8, 64 tokens: the Scorer loop before score_iter vs score_iter (score.json)
# e.g. PARTS="rollout tests" bash bench/gpu_check.sh; each part has a *_TIMEOUT (seconds).
# Wheels the machine lacks (bitsandbytes, liger-kernel, typer) travel in .whl/ and go to /tmp/site.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PARTS=${PARTS:-"rollout memory_step tests"}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || echo "editable install failed" >>"$OUT/install.log"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)"
  python3 -c "import importlib.metadata as m; print('liger-kernel', m.version('liger-kernel'))"
  echo "parts: $PARTS"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# Run from /tmp so the repo's top-level kernels/ folder never shadows Hugging Face's `kernels`.
REPO=$(pwd)
for part in $PARTS; do
  echo "=== $part ($(date -u +%T))"
  case $part in
    rollout)
      ( cd /tmp && timeout "${ROLLOUT_TIMEOUT:-240}" python3 "$REPO/bench/rollout.py" ${ROLLOUT_ARGS:-} \
          --json "$OUT/rollout.json" --markdown "$OUT/rollout.md" ) 2>&1 | tee "$OUT/rollout.log" | grep -v "^{" | tail -30 ;;
    memory_step)
      ( cd /tmp && timeout "${MEMORY_STEP_TIMEOUT:-150}" python3 "$REPO/bench/memory.py" --grad-accum 8 ${MEMORY_STEP_ARGS:-} \
          --json "$OUT/memory_step.json" --markdown "$OUT/memory_step.md" ) 2>&1 | tee "$OUT/memory_step.log" | grep -v "^{" | tail -40 ;;
    tests)
      ( cd /tmp && timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider -W ignore::RuntimeWarning \
          --rootdir "$REPO" "$REPO/tests" -rs ) 2>&1 | tee "$OUT/pytest.log" | tail -15 ;;
    memory)
      ( cd /tmp && timeout "${MEMORY_TIMEOUT:-240}" python3 "$REPO/bench/memory.py" ${MEMORY_ARGS:-} --json "$OUT/memory.json" \
          --markdown "$OUT/memory.md" ) 2>&1 | tee "$OUT/memory.log" | grep -v "^{" | tail -30 ;;
    kernels)
      timeout "${BENCH_TIMEOUT:-360}" python3 bench/kernels.py ${BENCH_ARGS:-} --json "$OUT/bench.json" --markdown "$OUT/bench.md" \
        2>&1 | tee "$OUT/bench.log" | tail -30 ;;
    loss_passes)
      ( cd /tmp && timeout "${LOSS_PASSES_TIMEOUT:-180}" python3 "$REPO/bench/loss_passes.py" ${LOSS_PASSES_ARGS:-} \
          --json "$OUT/loss_passes.json" --markdown "$OUT/loss_passes.md" ) 2>&1 | tee "$OUT/loss_passes.log" | tail -12 ;;
    qwen3)
      for size in 4b 8b; do
        ( cd /tmp && timeout "${QWEN3_TIMEOUT:-200}" python3 "$REPO/bench/memory.py" --preset "qwen3-$size" --grad-accum 8 \
            --rollout-batch-size 4 --image-size 512 --json "$OUT/qwen3_memory_$size.json" --markdown "$OUT/qwen3_memory_$size.md" ) \
          2>&1 | tee "$OUT/qwen3_memory_$size.log" | grep -v "^{" | tail -25
      done
      ( cd /tmp && timeout "${QWEN3_TIMEOUT:-200}" python3 "$REPO/bench/rollout.py" --preset qwen3-4b \
          --json "$OUT/qwen3_rollout.json" --markdown "$OUT/qwen3_rollout.md" ) 2>&1 | tee "$OUT/qwen3_rollout.log" | grep -v "^{" | tail -20 ;;
    score)
      ( cd /tmp && timeout "${SCORE_TIMEOUT:-300}" python3 "$REPO/bench/score_throughput.py" --preset 7b --device cuda \
          --images 96 --max-pixels 401408 --samples 8 --max-new-tokens 64 --batch-size 8 --reps 1 ${SCORE_ARGS:-} \
          --json "$OUT/score.json" ) 2>&1 | tee "$OUT/score.log" | tail -30 ;;
    *) echo "unknown part: $part (rollout memory_step tests memory kernels loss_passes score qwen3)" ;;
  esac
done
