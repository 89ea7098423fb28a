#!/usr/bin/env bash
# One prepared GPU comparison: the kit's stock fit (JAX, float32 and
# mixed_bfloat16) against the hand-written jax.jit step, the PyTorch step
# (eager and torch.compile, float32/TF32 and bf16 autocast) and the
# dictionary_learning peer (SAELens where importable), at every GPU size;
# then the TopK SAE on the dense step and on the sparse path
# (compile(sparse=True)), to say whether "auto" should take the sparse path
# on a GPU. In at most 8 minutes. Runs `python -m benchmarks.throughput`
# twice from the repository root (the script cds there itself). Writes to
# $OUT (at most 8 files, none in subfolders):
#   throughput_gpu.json  all gated results (rewritten after every worker)
#   throughput_gpu.log   the printed tables
#   throughput_topk_gpu.json / .log   the TopK dense vs sparse run
#   workers.log          every worker's stdout/stderr
#   profile.tgz          jax.profiler traces of 3 stock-fit and 3 hand-written
#                        steps per size (DIR/<size>/<config>/plugins/profile/...)
#   env.txt              nvidia-smi, python and package versions
#
# The lent machine (nvidia-h200) has python3 with JAX and torch, but neither
# TensorFlow nor keras; keras, namex and optree travel as wheels in .whl
# (dictionary-learning too: pure Python, it needs only torch and einops).
#
# 1. Once, here (a CPU machine with pip), from the repository root:
#        bash benchmarks/gpu_check.sh --prepare
#    (adds /.whl/ to .git/info/exclude and downloads the wheels for
#    Python 3.12 into .whl; WHEEL_DIR=... to put them elsewhere.)
# 2. In the GPU session, one call of the device tool:
#        run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#    then read throughput_gpu.log; give the machine back unless rerunning.
#
# CPU rehearsal of the same script at tiny sizes (no wheels needed when
# keras is importable, e.g. in the project's venv):
#        GPU_CHECK_TINY=1 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# Knobs (environment): GPU_CHECK_SECONDS (total budget, default 470),
# GPU_CHECK_SIZES, GPU_CHECK_CONFIGS, GPU_CHECK_PROFILE=0 (no traces),
# PYTHON (default python3), WHEEL_DIR (default .whl).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PYTHON=${PYTHON:-python3}
WHEEL_DIR=${WHEEL_DIR:-.whl}
WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 dictionary-learning==0.1.0)

if [ "${1:-}" = "--prepare" ]; then
    if [ "$WHEEL_DIR" = ".whl" ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
        echo /.whl/ >> .git/info/exclude
    fi
    $PYTHON -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$WHEEL_DIR" "${WHEELS[@]}" || exit 1
    ls -la "$WHEEL_DIR"
    exit 0
fi

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_SECONDS:-470}
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2

if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PYTHON -c "import keras, jax" 2>"$OUT/env.txt"; then
    echo "keras or jax is not importable: carry the wheels (bash" \
         "benchmarks/gpu_check.sh --prepare, then carry=[\".whl\"])" | tee -a "$OUT/env.txt"
    exit 1
fi

{
    date -u
    nvidia-smi 2>&1 | head -15
    $PYTHON - <<'EOF'
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("keras", "jax", "jaxlib", "torch", "numpy", "optree", "einops",
             "dictionary-learning", "sae-lens", "tensorflow"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
} >> "$OUT/env.txt" 2>&1

if [ -n "${GPU_CHECK_TINY:-}" ]; then
    # The CPU rehearsal: same flow, tiny sizes, one timing of few steps.
    SIZES=${GPU_CHECK_SIZES:-64x256@128,32x512@64:bfloat16}
    TOPK_SIZES=${GPU_CHECK_TOPK_SIZES:-64x2048@128,32x1024@64:bfloat16}
    TIMING=(--steps 2 --epochs 1 --repeats 1 --gemm-n 256 --gemm-reps 1)
else
    # Priority order: the headline size first, then the largest (bf16 only),
    # then the others; what the budget does not reach is marked skipped.
    SIZES=${GPU_CHECK_SIZES:-2048x32768@4096,2304x131072@4096:bfloat16,768x24576@4096,512x4096@1024}
    TOPK_SIZES=${GPU_CHECK_TOPK_SIZES:-2304x131072@4096:bfloat16,768x24576@4096}
    # 32 steps an epoch and >= 1.5 s a timing: `fit` uploads the numpy data
    # once per call and has a per-epoch cost (metrics reset, state sync) that
    # real epochs of thousands of steps do not notice.
    TIMING=(--steps 32 --epochs 2 --repeats 3 --min-time 1.5 --gpu-gemm-n 8192)
fi
CONFIGS=${GPU_CHECK_CONFIGS:-gpu}
PROFILE_DIR=/tmp/gsae_profile
PROFILE=()
if [ "${GPU_CHECK_PROFILE:-1}" != "0" ]; then
    rm -rf "$PROFILE_DIR"
    PROFILE=(--profile "$PROFILE_DIR")
fi

LEFT=$(( BUDGET - ($(date +%s) - START) - 20 ))   # 20 s for the archive
GATED_LEFT=$(( LEFT * 60 / 100 ))                  # the rest for the TopK run
$PYTHON -m benchmarks.throughput --configs "$CONFIGS" --size "$SIZES" \
    "${TIMING[@]}" "${PROFILE[@]}" --time-budget "$GATED_LEFT" --timeout 300 \
    --json "$OUT/throughput_gpu.json" --log-dir "$OUT" 2>&1 \
    | tee "$OUT/throughput_gpu.log"
STATUS=${PIPESTATUS[0]}

# The sparse path on a GPU: TopK (k=64), dense step vs sparse path, no profile.
LEFT=$(( BUDGET - ($(date +%s) - START) - 20 ))
$PYTHON -m benchmarks.throughput --architecture topk --k 64 \
    --configs "${GPU_CHECK_TOPK_CONFIGS:-jax,jax-sparse,jax-bf16,jax-sparse-bf16}" \
    --size "$TOPK_SIZES" "${TIMING[@]}" --time-budget "$LEFT" --timeout 240 \
    --json "$OUT/throughput_topk_gpu.json" --log-dir "$OUT" 2>&1 \
    | tee "$OUT/throughput_topk_gpu.log"
[ "$STATUS" = 0 ] && STATUS=${PIPESTATUS[0]}

if [ ${#PROFILE[@]} -gt 0 ] && [ -d "$PROFILE_DIR" ]; then
    tar czf "$OUT/profile.tgz" -C "$PROFILE_DIR" .
    # $OUT files come back only up to 16 MiB: keep the first size alone if need be.
    if [ "$(stat -c %s "$OUT/profile.tgz")" -gt $((15 * 1024 * 1024)) ]; then
        FIRST=${SIZES%%,*}
        FIRST=${FIRST%%:*}
        tar czf "$OUT/profile.tgz" -C "$PROFILE_DIR" "$FIRST"
    fi
fi
echo "gpu_check: exit $STATUS after $(( $(date +%s) - START )) s; files in $OUT:"
ls -la "$OUT"
exit "$STATUS"
