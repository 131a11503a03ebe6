import sys, warnings
sys.path.insert(0, 'benchmarks')
import torch
from triton.testing import do_bench
from gpu_model import _model
import interp.attnstats.fused as fused
from interp.attnstats import attention_stats
from interp.attnstats.kernels import attn_stats_kernel as real
seen = {}
def spy(q, k, v, **kw):
    if not seen:
        seen.update(kw)
        print("q", q.dtype, tuple(q.shape), q.stride(), "k", tuple(k.shape), k.stride(), "kv", None if kw["key_valid"] is None else (kw["key_valid"].dtype, kw["key_valid"].all().item()),
              "seg", None if kw["segments"] is None else tuple(kw["segments"].shape), "edit", kw["edit"], "rows", kw["rows"], "backend", kw["backend"], "km", kw["key_mass"])
        for label, args, kw2 in [("as called", (q, k, v), kw), ("contiguous", (q.contiguous(), k.contiguous(), v.contiguous()), kw),
                                 ("no key_valid", (q, k, v), {**kw, "key_valid": None}), ("no edit", (q, k, v), {**kw, "edit": None})]:
            print(f"  {label:<14} {do_bench(lambda: real(*args, **kw2)):.3f} ms")
    return real(q, k, v, **kw)
fused.attn_stats_kernel = spy
m = _model(torch.bfloat16, "sdpa")
toks = torch.randint(0, 49152, (1, 4096)).cuda()
attention_stats(m, toks, segments={"first": "first", "span": (2048, 2064)}, key_mass=True)
