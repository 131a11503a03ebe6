"""Peak CPU memory of ``attention_stats`` at long context (8k/16k/32k tokens) on a tiny random Llama.

The model (2 layers, 4 heads over 2 KV heads, d_head 16, hidden 64) has its rotary embedding scaled linearly to
32768 positions (factor 16 over 2048). Each length runs in a fresh subprocess, which reports its peak RSS
(``ru_maxrss``) and its RSS before the call (model built, libraries imported); memory linear in n shows as a
constant growth per token. An ``n×n`` float32 pattern of one head would be 4 GiB at 32k.

    python benchmarks/long_context.py --sizes 8192 16384 32768
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

RUN = """
import json, resource, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
from interp.attnstats import attention_stats
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) * 1024
n = int(sys.argv[1])
cfg = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=32768,
                  rope_parameters={"rope_type": "linear", "factor": 16.0, "rope_theta": 10000.0})
torch.manual_seed(0)
hf = LlamaForCausalLM(cfg).eval()
toks = torch.randint(3, 259, (1, n), generator=torch.Generator().manual_seed(0))
before = rss()
t = time.perf_counter()
st = attention_stats(hf, toks, key_mass=True)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
assert torch.isfinite(st.entropy).all()
print(json.dumps(dict(n=n, before=before, peak=peak, seconds=sec, backend=st.backend)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    args = ap.parse_args()
    if any(n < 1 or n > 32768 for n in args.sizes):
        print("error: sizes must lie in 1..32768 (the scaled rotary range)", file=sys.stderr)
        sys.exit(2)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'n':>6} {'peak GiB':>9} {'peak-before MiB':>16} {'KiB per token':>14} {'seconds':>8} backend")
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-c", RUN, str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        grow = r["peak"] - r["before"]
        print(f"{n:>6} {r['peak'] / 2**30:>9.2f} {grow / 2**20:>16.1f} {grow / n / 1024:>14.1f} {r['seconds']:>8.1f} {r['backend']}")


if __name__ == "__main__":
    main()
