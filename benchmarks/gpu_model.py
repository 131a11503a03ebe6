"""CUDA only: whole-model forward of SmolLM2-135M's architecture, plain SDPA vs ``attention_stats`` (every
head's statistics with 2 segments and key mass), in fp16/bf16, batch 1.

The weights are random (seeded): the timings of these kernels do not depend on the weight values, and a GPU
machine without network access cannot fetch or unpack the bundled GGUF file. ``benchmarks/attn_stats.py``
is the same comparison on the real bundled weights (CPU, or CUDA where the bundled model can be loaded).
Prints medians of ``--reps`` timed forwards after one warm-up, and peak GPU memory of each."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# SmolLM2-135M-Instruct's config.json, the fields that shape the computation
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, head_dim=64, hidden_act="silu", max_position_embeddings=8192,
               rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=100000.0)
# the same architecture at toy size, for CPU smoke runs of the GPU scripts (benchmarks/gpu_table.py --smoke)
TINY = dict(SMOLLM2, vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8)


def model_for(dtype, impl: str, device: str = "cuda", config: dict = SMOLLM2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**config)
    cfg._attn_implementation = impl
    return LlamaForCausalLM(cfg).eval().to(device, dtype)


def _model(dtype, impl: str):
    return model_for(dtype, impl)


def _time(fn, reps: int) -> tuple[float, float]:
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device; this benchmark times the GPU path (use benchmarks/attn_stats.py on CPU)")
    from interp.attnstats import attention_stats

    print(f"CUDA ({torch.cuda.get_device_name()}): SmolLM2-135M architecture (30 layers, 9/3 heads), random weights, batch 1")
    print(f"{'dtype':>9} | {'n':>5} | {'sdpa ms':>8} | {'stats ms':>8} | {'b/a time':>8} | {'sdpa GiB':>8} | {'stats GiB':>9} | {'b/a mem':>7}")
    print("-" * 84)
    for name in a.dtypes:
        dt = getattr(torch, name)
        model = _model(dt, "sdpa")
        for n in a.n:
            toks = torch.randint(0, SMOLLM2["vocab_size"], (1, n), generator=torch.Generator().manual_seed(n)).cuda()
            segs = {"first": "first", "span": (n // 2, n // 2 + 16)}
            ta, ma = _time(lambda: model(input_ids=toks, use_cache=False).logits, a.reps)
            tb, mb = _time(lambda: attention_stats(model, toks, segments=segs, key_mass=True).logits, a.reps)
            print(f"{name:>9} | {n:>5} | {ta * 1e3:>8.2f} | {tb * 1e3:>8.2f} | {tb / ta:>8.2f} | {ma:>8.2f} | {mb:>9.2f} | {mb / ma:>7.2f}",
                  flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
