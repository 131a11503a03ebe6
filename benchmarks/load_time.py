"""Load time of the bundled SmolLM2: first load (GGUF dequantization + cache write) vs cached reloads.

Each load runs in a fresh subprocess against a fresh temporary ``INTERP_CACHE``.

    python benchmarks/load_time.py --reloads 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

# Libraries are imported before the clock starts: the figure is the load itself, not Python start-up.
CODE = ("import time, interp, transformers, transformer_lens.model_bridge; t = time.perf_counter(); "
        "interp.load_model('smollm2-135m'); print(time.perf_counter() - t)")


def _load(cache: str) -> float:
    env = {**os.environ, "INTERP_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = _load(cache)
        again = [_load(cache) for _ in range(args.reloads)]
    med = statistics.median(again)
    print(f"{'load':<22} {'seconds':>8}")
    print(f"{'first (dequantize)':<22} {first:>8.2f}")
    print(f"{'cached (median of ' + str(args.reloads) + ')':<22} {med:>8.2f}")
    print(f"{'ratio first/cached':<22} {first / med:>8.1f}")


if __name__ == "__main__":
    main()
