#!/usr/bin/env bash
# `make gpu-check`: on a CUDA machine, install what is needed, run the kernel tests with compiled Triton and compiled
# FlexAttention, then print one table (benchmarks/gpu_table.py): per layer without and with key mass and the whole
# model at n=8192 in bf16 and fp16, the flex backend vs the Triton kernel vs SDPA, with peak memory, against the
# targets (<=1.3x, <=2.5x, <=1.3x). GPU_CHECK_SWEEPS=1 adds the older size sweeps (attn_kernel.py, gpu_model.py).
# Without CUDA it runs the CPU-checkable part: the kernel tests under Triton's interpreter, the flex/flash tests
# and a smoke run of the table's code.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${INTERP_PY:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever the venv points at
if [ ! -x "$PY" ]; then
    make install
    PY=.venv/bin/python
fi
"$PY" -m pip install -q "hypothesis>=6" "pytest>=8"   # test deps, in case the venv was built without [dev]
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: no CUDA device here; running the interpreter kernel tests only (TRITON_INTERPRET=1)"
    TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_kernels_flex.py
    "$PY" benchmarks/gpu_table.py --smoke --reps 1
    exit 0
fi
"$PY" -c "import torch, triton; print('gpu-check:', torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"
tests_rc=0  # the table is printed even when a test fails; the exit status still says so
TRITON_INTERPRET=0 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py || tests_rc=$?
if [ "${GPU_CHECK_SWEEPS:-0}" = 1 ]; then
    TRITON_INTERPRET=0 "$PY" benchmarks/attn_kernel.py --device cuda --dtypes float16,bfloat16 --sizes 1024,2048,4096,8192,16384
    TRITON_INTERPRET=0 "$PY" benchmarks/gpu_model.py --n 1024 2048 4096 8192 --dtypes bfloat16 float16
    # the real bundled weights, where this machine can unpack the bundled GGUF model (needs transformer_lens + gguf)
    if "$PY" -c "import transformer_lens, gguf" 2>/dev/null; then
        TRITON_INTERPRET=0 "$PY" benchmarks/attn_stats.py --device cuda --dtype bfloat16 --n 2048 8192
    fi
fi
TRITON_INTERPRET=0 "$PY" benchmarks/gpu_table.py --n 8192 --dtypes bfloat16 float16
exit $tests_rc
