"""Peak CPU memory while loading a bf16 checkpoint with ``interp.load_model`` (target: <= 1.2x its weight bytes).

Writes a synthetic ~1.1B-parameter Llama (TinyLlama's shape: hidden 2048, 22 layers, 32 heads over 4 KV heads,
vocabulary 32000) to a temporary folder in bf16 safetensors shards, tensor by tensor (the writer never holds the
model), then loads it in fresh subprocesses and reads each one's peak RSS (``ru_maxrss``). The figure that the
target concerns is the growth of the peak over the process's RSS just before the load (Python, torch,
transformers and TransformerLens imported); the total peak is printed beside it. The safetensors files are
memory-mapped, so weight pages become resident as they are touched: the last column is the peak once one
16-token forward has touched every weight (file-backed pages, which the kernel can drop again). The temporary
checkpoint (~2.2 GB) is deleted afterwards.

    python benchmarks/load_memory.py            # bridge=False and the TransformerBridge
    python benchmarks/load_memory.py --fp32     # also the old path: the same checkpoint loaded as float32
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SHAPE = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False)
SHARD_BYTES = 500 * 2**20

LOAD = """
import json, resource, sys, torch, interp, transformers, transformer_lens.model_bridge
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) * 1024
before = rss()
m = interp.load_model(sys.argv[1], device='cpu', bridge=sys.argv[2] == '1', dtype=None if sys.argv[3] == 'auto' else sys.argv[3])
hf = getattr(m, 'original_model', m)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
after = rss()
with torch.no_grad():
    hf(input_ids=torch.arange(1, 17)[None])
fwd = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(before=before, peak=peak, after=after, fwd=fwd, dtype=str(next(hf.parameters()).dtype))))
"""


def write_checkpoint(path: str) -> int:
    """The synthetic bf16 Llama, shard by shard; returns its weight bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.models.tiny import byte_tokenizer

    cfg = LlamaConfig(**SHAPE, dtype="bfloat16")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    index, shard, size, n, total = {}, {}, 0, 0, 0

    def flush():
        nonlocal shard, size, n
        if shard:
            name = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
            index.update({k: name for k in shard})
            shard, size, n = {}, 0, n + 1

    for k, shape in shapes.items():
        t = torch.ones(shape, dtype=torch.bfloat16) if k.endswith("norm.weight") else \
            (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        shard[k] = t
        size += t.numel() * 2
        total += t.numel() * 2
        if size >= SHARD_BYTES:
            flush()
    flush()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": index}, f)
    cfg.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return total


def measure(path: str, bridge: bool, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, path, "1" if bridge else "0", dtype], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", action="store_true", help="also load the checkpoint as float32 (the old default)")
    ap.add_argument("--dir", default=None, help="where to write the temporary checkpoint (default: system temp)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="interp-load-memory-", dir=args.dir)
    try:
        weights = write_checkpoint(tmp)
        print(f"synthetic Llama: {weights / 2 / 1e9:.2f} B parameters, {weights / 2**30:.2f} GiB of bf16 weights; load average {os.getloadavg()[0]:.2f}")
        print(f"{'load':<34} {'dtype':<15} {'peak-before GiB':>16} {'ratio':>6} {'peak GiB':>9} {'+forward: peak-before GiB':>26} {'ratio':>6}")
        runs = [("load_model(bridge=False)", False, "auto"), ("load_model() (TransformerBridge)", True, "auto")]
        if args.fp32:
            runs.append(("load_model(dtype='float32')", False, "float32"))
        for label, bridge, dtype in runs:
            r = measure(tmp, bridge, dtype)
            grow = r["peak"] - r["before"]
            fwd = r["fwd"] - r["before"]
            print(f"{label:<34} {r['dtype']:<15} {grow / 2**30:>16.2f} {grow / weights:>6.2f} {r['peak'] / 2**30:>9.2f} "
                  f"{fwd / 2**30:>26.2f} {fwd / weights:>6.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
