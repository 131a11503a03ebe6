"""Does SmolLM2 do Colored Objects? Each prompt format of ``interp.tasks.colored_objects.FORMATS`` on the same
number of prompts: mean logit difference (clean colour − mindiff counterfactual colour) with its 95% t interval,
on the clean and on the counterfactual prompts, and top-1 accuracy over the 8 colours with its 95% Wilson interval
and the majority-class baseline.

    python benchmarks/colored_objects_formats.py [--prompts 400] [--formats 1shot,3shot] [--seed 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def last_logits(model, texts: list[str], batch: int) -> "torch.Tensor":
    """``[n 1 d_vocab]`` logits at the last token. The prompts' common token prefix (a format's fixed solved
    examples) runs once; its keys and values are reused by every batch, and the lm head runs on the last position."""
    import copy

    import torch

    from interp.inputs import to_batch
    from interp.intervene.hf import plain

    toks = to_batch(model, texts).tokens  # one length: colored_objects refuses prompts that would need padding
    common = int((toks == toks[:1]).all(0).long().cumprod(0).sum())
    p = max(0, min(common, toks.shape[1] - 1))
    out = []
    with torch.no_grad(), plain(model) as hf:
        prefix = hf.model(input_ids=toks[:1, :p], use_cache=True).past_key_values if p else None
        for i in range(0, len(texts), batch):
            rows = toks[i:i + batch]
            cache = None
            if prefix is not None:
                cache = copy.deepcopy(prefix)
                cache.batch_repeat_interleave(rows.shape[0])
            h = hf.model(input_ids=rows[:, p:], past_key_values=cache, use_cache=cache is not None).last_hidden_state
            out.append(hf.lm_head(h[:, -1:]).float().cpu())
    return torch.cat(out)


def measure(model, name: str, n: int, seed: int, batch: int, corrupted: bool = True) -> dict:
    import torch

    from interp.stats import mean_ci, rate_of
    from interp.tasks.colored_objects import COLORS, colored_objects

    data = colored_objects(model, n, seed=seed, format=name)
    metric = type(data.metric)(data.metric.io, data.metric.s, torch.zeros(n, dtype=torch.long))
    both = last_logits(model, data.clean + (data.corrupted if corrupted else []), batch)
    clean = both[:n]
    ld = metric.per_prompt(clean)
    ld_bad = metric.per_prompt(both[n:]) if corrupted else torch.full((n,), float("nan"))
    pred = clean[:, 0, data.label_ids].argmax(-1)
    acc = rate_of((pred == data.answer_index).tolist(), list(data.answer), chance=1 / len(COLORS))
    m, mb = mean_ci(ld.tolist()), mean_ci(ld_bad.tolist())
    return {"format": name, "tokens": len(model.tokenizer(data.clean[0])["input_ids"]), "n": n,
            "ld": m.mean, "ld_low": m.low, "ld_high": m.high, "ld_corrupt": mb.mean, "ld_corrupt_low": mb.low,
            "ld_corrupt_high": mb.high, **acc.as_dict("acc_")}


def main(argv=None) -> None:
    from interp.tasks.colored_objects import FORMATS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--clean-only", action="store_true", help="skip the counterfactual prompts (a quicker scan)")
    args = ap.parse_args(argv)
    names = [f for f in args.formats.split(",") if f]
    bad = [f for f in names if f not in FORMATS]
    if bad or args.prompts < 1 or args.batch < 1:
        print(f"colored_objects_formats.py: error: unknown format {bad[0]!r} (available: {', '.join(FORMATS)})" if bad
              else "colored_objects_formats.py: error: --prompts and --batch must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    import pandas as pd

    import interp
    from interp.runtime import set_threads

    set_threads(args.threads)
    model = interp.load_model("smollm2-135m")
    rows = []
    for name in names:
        t = time.perf_counter()
        rows.append(measure(model, name, args.prompts, args.seed, args.batch, not args.clean_only))
        r = rows[-1]
        print(f"{name}: LD {r['ld']:.3f} [{r['ld_low']:.3f}, {r['ld_high']:.3f}], corrupted {r['ld_corrupt']:.3f}; "
              f"accuracy {r['acc_rate']:.3f} [{r['acc_low']:.3f}, {r['acc_high']:.3f}] majority {r['acc_majority']:.3f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
