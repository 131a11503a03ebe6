"""IOI on SmolLM2: logit difference and accuracy, then exact per-head patching of z vs AtP in both directions
(Spearman, top-10 overlap = recall of exact's top-10 in AtP's top-10), and AtP's peak memory at a long input.

Like is compared with like: for each direction (``denoising``: clean z into the corrupted run; ``noising``:
corrupted z into the clean run) exact patching and AtP estimate the same quantity, both divided by
``m_source − m_base``. The cross row (AtP noising against exact denoising) is what the two methods' frames gave
side by side before the direction was named. AtP* changes only the q/k estimates, so the head-output (``atp:z``)
column is the same with and without it (checked here).

    python benchmarks/ioi_atp.py [--prompts 100] [--compare-prompts 20] [--long 4096] [--no-long]
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
    p.add_argument("--no-long", action="store_true", help="skip the long-input AtP memory run")
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
    from interp.stats import mean_ci, rate

    acc = rate(round(d.accuracy(logits) * a.prompts), a.prompts)
    print(f"IOI, {a.prompts} prompts (5 templates, ABBA/BABA): logit difference {mean_ci(d.metric.per_prompt(logits).tolist())}, "
          f"accuracy {acc}; pABC corrupted LD {float(d.metric(interp.run(model, d.corrupted))):.3f}", flush=True)
    c = ioi(model, a.compare_prompts, seed=1)
    top = lambda v: [f"L{i // 9}H{i % 9}" for i in np.argsort(-np.abs(v))[:10]]  # noqa: E731
    vals = {}
    for direction in ("denoising", "noising"):
        t0 = time.perf_counter()
        exact = activation_patching(model, c.clean, c.corrupted, c.metric, site="z", by="head", direction=direction)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        atp = attribution_patching(model, c.clean, c.corrupted, c.metric, qk_fix=True, direction=direction)
        t_atp = time.perf_counter() - t0
        plain = attribution_patching(model, c.clean, c.corrupted, c.metric, qk_fix=False, direction=direction)
        z = atp.query("metric == 'atp:z'")["value"].to_numpy()
        assert np.array_equal(z, plain.query("metric == 'atp:z'")["value"].to_numpy()), "AtP* changed a head-output row"
        vals[direction] = (exact["value"].to_numpy(), z / atp.attrs["scale"])
        print(f"\n{direction}: exact per-head z patching ({a.compare_prompts} prompts, normalized) {t_exact:.0f} s; "
              f"AtP+AtP* {t_atp:.0f} s; atp:z identical with and without AtP*")
        e, est = vals[direction]
        te, ta = top(e), top(est)
        print("| rank | exact head | exact effect | AtP head | AtP estimate |")
        print("|---|---|---|---|---|")
        for i, (x, y) in enumerate(zip(te, ta)):
            xi, yi = int(x[1:].split("H")[0]) * 9 + int(x.split("H")[1]), int(y[1:].split("H")[0]) * 9 + int(y.split("H")[1])
            print(f"| {i + 1} | {x} | {e[xi]:.3f} | {y} | {est[yi]:.3f} |")
    print("\n| AtP direction | exact direction | Spearman (270 heads) | Spearman on abs | top-10 overlap |")
    print("|---|---|---|---|---|")
    for da, de in (("denoising", "denoising"), ("noising", "noising"), ("noising", "denoising")):
        est, e = vals[da][1], vals[de][0]
        print(f"| {da} | {de} | {spearmanr(est, e).correlation:.3f} | {spearmanr(np.abs(est), np.abs(e)).correlation:.3f} "
              f"| {len(set(top(e)) & set(top(est)))}/10 |")
    if a.no_long:
        return
    out = subprocess.run([sys.executable, __file__, "--long-only", "--long", str(a.long)], capture_output=True, text=True)
    if out.returncode:
        print("long AtP failed:", out.stderr.strip().splitlines()[-1:])
    else:
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"AtP + AtP* at n={r['n']} (one prompt): {r['seconds']:.0f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
              f"(model loaded: {r['rss_after_load_gb']:.2f} GB), threads {r['threads']}")


if __name__ == "__main__":
    main()
