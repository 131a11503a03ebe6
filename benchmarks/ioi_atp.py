"""IOI on SmolLM2: logit difference and accuracy, then exact per-head patching of z vs AtP / AtP* (Spearman, top-10
overlap, recall of exact's top-10 in AtP's top-10), and AtP's peak memory at a long input.

Exact and AtP both measure the *noising* effect (corrupted z into the clean run), as AtP estimates it;
values are divided by ``m_corrupt − m_clean``.

    python benchmarks/ioi_atp.py [--prompts 100] [--compare-prompts 20] [--long 4096]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def long_atp(n: int) -> dict:
    """AtP + AtP* on one n-token prose input, in this process; peak RSS from the kernel."""
    import torch

    import interp
    from interp.analyze.attribution import attribution_patching
    from interp.tasks.texts import text_tokens

    model = interp.load_model("smollm2-135m")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    import pydoc_data.topics as topics

    text = " ".join(topics.topics.values())
    clean = text_tokens(model.tokenizer, text, n)
    bad = clean.clone()
    bad[0, n // 2] = clean[0, n // 2 + 1]
    target = int(clean[0, -1])
    metric = lambda lg: lg[0, -2].log_softmax(-1)[target]  # noqa: E731
    t0 = time.perf_counter()
    df = attribution_patching(model, clean, bad, metric, qk_fix=True, block=256)
    return {"n": n, "seconds": time.perf_counter() - t0, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_after_load_gb": before, "rows": len(df), "threads": torch.get_num_threads()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--compare-prompts", type=int, default=20)
    p.add_argument("--long", type=int, default=4096)
    p.add_argument("--long-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.long_only:
        print(json.dumps(long_atp(a.long)))
        return
    import numpy as np
    from scipy.stats import spearmanr

    import interp
    from interp.analyze.attribution import attribution_patching
    from interp.analyze.patching import activation_patching
    from interp.tasks.ioi import ioi

    model = interp.load_model("smollm2-135m")
    d = ioi(model, a.prompts, seed=0)
    logits = interp.run(model, d.clean)
    print(f"IOI, {a.prompts} prompts (5 templates, ABBA/BABA): logit difference {float(d.metric(logits)):.3f}, "
          f"accuracy {d.accuracy(logits):.3f}; pABC corrupted LD {float(d.metric(interp.run(model, d.corrupted))):.3f}")
    c = ioi(model, a.compare_prompts, seed=1)
    t0 = time.perf_counter()
    exact = activation_patching(model, c.corrupted, c.clean, c.metric, site="z", by="head", normalize=False)
    t_exact = time.perf_counter() - t0
    m_clean, m_bad = exact.attrs["corrupt"], exact.attrs["clean"]  # roles swapped: the clean run is patched
    e = (exact["value"].to_numpy() - m_clean) / (m_bad - m_clean)
    t0 = time.perf_counter()
    atp = attribution_patching(model, c.clean, c.corrupted, c.metric, qk_fix=True)
    t_atp = time.perf_counter() - t0
    est = atp.query("metric == 'atp:z'")["value"].to_numpy() / (m_bad - m_clean)
    top = lambda v: [f"L{i // 9}H{i % 9}" for i in np.argsort(-np.abs(v))[:10]]  # noqa: E731
    te, ta = top(e), top(est)
    print(f"Exact per-head z patching ({a.compare_prompts} prompts, noising, normalized): {t_exact:.0f} s; AtP (+AtP*): {t_atp:.0f} s")
    print("| rank | exact head | exact effect | AtP head | AtP estimate |")
    print("|---|---|---|---|---|")
    for i, (x, y) in enumerate(zip(te, ta)):
        xi, yi = int(x[1:].split("H")[0]) * 9 + int(x.split("H")[1]), int(y[1:].split("H")[0]) * 9 + int(y.split("H")[1])
        print(f"| {i + 1} | {x} | {e[xi]:.3f} | {y} | {est[yi]:.3f} |")
    print(f"overlap of the top-10 sets: {len(set(te) & set(ta))}/10 (= recall@10 of exact's top-10 within AtP's top-10); "
          f"Spearman(AtP, exact) over 270 heads: {spearmanr(est, e).correlation:.3f}; on |effect|: {spearmanr(np.abs(est), np.abs(e)).correlation:.3f}")
    out = subprocess.run([sys.executable, __file__, "--long-only", "--long", str(a.long)], capture_output=True, text=True)
    if out.returncode:
        print("long AtP failed:", out.stderr.strip().splitlines()[-1:])
    else:
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"AtP + AtP* at n={r['n']} (one prompt): {r['seconds']:.0f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(model loaded: {r['rss_after_load_gb']:.2f} GB), threads {r['threads']}")


if __name__ == "__main__":
    main()
