"""Held-out evaluation of the shipped tinyvlm: accuracy per question type with its n, 95% Wilson interval,
majority-class baseline and chance; the count confusion matrix and the share of each answer (how often
existence says "Yes"); the trap-set hallucination rate and CHAIR-style caption rates.

    python benchmarks/eval_tinyvlm.py                 # 200 ordinary scenes, 100 trap scenes, 40 captions
    python benchmarks/eval_tinyvlm.py --subset        # the fixed subset the test checks (12 / 6 scenes)
    python benchmarks/eval_tinyvlm.py --kinds count,exist --trap 0 --captions 0   # counting and existence only
    python benchmarks/eval_tinyvlm.py --weights DIR   # other weights (e.g. a new training run) on the same sets
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
    ap.add_argument("--kinds", default="color,shape,count,exist", help="ordinary question kinds to ask")
    ap.add_argument("--weights", default=None, help="a directory with vision.safetensors (default: the shipped weights)")
    args = ap.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or any(k not in ("color", "shape", "count", "exist") for k in kinds) or min(args.ordinary, args.trap + 1, args.captions + 1) < 1:
        print("eval_tinyvlm.py: error: --kinds takes color,shape,count,exist; --ordinary must be at least 1, --trap and "
              "--captions at least 0", file=sys.stderr)
        raise SystemExit(2)
    if args.subset:
        args.ordinary, args.trap, args.captions = 12, 6, 0
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    import interp
    from interp.analyze import vision as V
    from interp.analyze.vision_interventions import evaluate

    t0 = time.perf_counter()
    if args.weights:  # assembled with those weights, then bridged as load_model("tinyvlm") does
        from interp.errors import InterpError
        from interp.models.tinyvlm import build_tinyvlm

        try:
            m = interp.models.from_hf(*build_tinyvlm(Path(args.weights)), name="tinyvlm")
        except InterpError as e:
            print(f"eval_tinyvlm.py: error: --weights {args.weights}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    else:
        m = interp.load_model("tinyvlm")
    ordinary, traps, caps = V.eval_sets(args.seed, args.ordinary, max(args.trap, 1), max(args.captions, 1))
    its = V.items(m, ordinary, kinds=kinds) + (V.items(m, traps) if args.trap else [])
    preds = V.baseline_answers(m, its)
    frames = [V.answer_frame(m, its, preds, "baseline")]
    if args.captions:
        cap_items = V.items(m, caps[: args.captions], kinds=("caption",))
        out = evaluate(m, [], cap_items, lambda i, ref: None)
        frames.append(V.chair_frame(m, out.captions, [c.objects for c in cap_items], "baseline"))
        for text, item in list(zip(out.captions, cap_items))[:3]:
            print(f"caption: {text!r}  truth: {shapes_caption(item)!r}")
    df = pd.concat(frames)
    rates = df[df["metric"].isin(["accuracy", "hallucination_rate", "trap_accuracy", "trap_positive_accuracy", "chair_i", "chair_s"])]
    cols = [c for c in ("metric", "prompt_id", "value", "n", "low", "high", "majority", "chance", "small_n") if c in rates.columns]
    print(rates[cols].round(3).to_string(index=False))
    shares = df[df["metric"] == "answer_share"]
    print("\nshare of each answer given:\n" + shares[["prompt_id", "value", "n"]].round(3).to_string(index=False))
    counts = [(it.answer, p) for it, p in zip(its, preds) if it.kind == "count" and it.group == "ordinary"]
    if counts:
        cm = pd.crosstab(pd.Series([a for a, _ in counts], name="true"), pd.Series([p for _, p in counts], name="answered"))
        print("\ncount confusion matrix (rows: true count, columns: answer):\n" + cm.to_string())
    print(f"\n{len(its)} questions, {args.captions} captions, {time.perf_counter() - t0:.0f} s")


def shapes_caption(item) -> str:
    from interp.tasks.shapes import caption_text

    return caption_text(item.objects)


if __name__ == "__main__":
    main()
