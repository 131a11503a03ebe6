"""Held-out evaluation of the shipped tinyvlm: accuracy per question type (with chance), the trap-set
hallucination rate and CHAIR-style caption rates.

    python benchmarks/eval_tinyvlm.py                 # 200 ordinary scenes, 100 trap scenes, 40 captions
    python benchmarks/eval_tinyvlm.py --subset        # the fixed subset the test checks (12 / 6 scenes)
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--ordinary", type=int, default=200)
    ap.add_argument("--trap", type=int, default=100)
    ap.add_argument("--captions", type=int, default=40)
    ap.add_argument("--subset", action="store_true", help="the test's fixed subset: 12 ordinary, 6 trap scenes, no captions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.subset:
        args.ordinary, args.trap, args.captions = 12, 6, 0
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    import interp
    from interp.analyze import vision as V
    from interp.analyze.vision_interventions import evaluate

    t0 = time.perf_counter()
    m = interp.load_model("tinyvlm")
    ordinary, traps, caps = V.eval_sets(args.seed, args.ordinary, args.trap, max(args.captions, 1))
    its = V.items(m, ordinary, kinds=("color", "shape", "count", "exist")) + V.items(m, traps)
    frames = [V.answer_frame(m, its, V.baseline_answers(m, its), "baseline")]
    if args.captions:
        cap_items = V.items(m, caps[: args.captions], kinds=("caption",))
        out = evaluate(m, [], cap_items, lambda i, ref: None)
        frames.append(V.chair_frame(m, out.captions, [c.objects for c in cap_items], "baseline"))
        for text, item in list(zip(out.captions, cap_items))[:3]:
            print(f"caption: {text!r}  truth: {shapes_caption(item)!r}")
    df = pd.concat(frames)
    wide = df.pivot_table(index="prompt_id", columns="metric", values="value")
    print(wide.round(3).to_string())
    print(f"\n{len(its)} questions, {args.captions} captions, {time.perf_counter() - t0:.0f} s")


def shapes_caption(item) -> str:
    from interp.tasks.shapes import caption_text

    return caption_text(item.objects)


if __name__ == "__main__":
    main()
