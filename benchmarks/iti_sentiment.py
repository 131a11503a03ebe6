"""ITI on SmolLM2 with the shipped sentiment items (data/mc): per-head probes, then steering the top-K heads.

Items alternate positive/negative; items 0-1, 4-5, 8-9, ... train the probes (70/30 train/validation split
inside ``probe_heads``), items 2-3, 6-7, ... measure steering (25 positive and 25 negative reviews in each half).
P(positive) is the softmax over the two answer tokens (" positive", " negative") at the last prompt token.

    python benchmarks/iti_sentiment.py [--k 8 16 32] [--alpha -10 -5 5 10]
"""
from __future__ import annotations

import argparse
import time

import torch


def p_positive(model, items, edits) -> torch.Tensor:
    from interp.inputs import to_batch
    from interp.tasks.mc import option_token_ids

    ids = option_token_ids(model.tokenizer, items)
    batch = to_batch(model, [it["prompt"] for it in items])
    logits = interp_run(model, batch, edits)
    last = batch.attention_mask.sum(1) - 1
    rows = logits[torch.arange(len(items)), last]  # [item d_vocab]
    two = torch.stack([rows[i, ids[i]] for i in range(len(items))])  # [item 2] (positive, negative)
    return two.softmax(-1)[:, 0]


def interp_run(model, batch, edits):
    import interp

    return interp.run(model, batch.tokens, edits, attention_mask=batch.attention_mask)


def main(argv=None):
    import interp
    from interp.tasks.mc import load_mc

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--alpha", type=float, nargs="+", default=[-10.0, -5.0, 5.0, 10.0])
    a = p.parse_args(argv)
    model = interp.load_model("smollm2-135m")
    items = load_mc("sentiment")
    # items come as (pos, neg, pos, neg, ...): alternate pairs, so both halves hold 25 of each
    train = [it for i, it in enumerate(items) if i % 4 < 2]
    test = [it for i, it in enumerate(items) if i % 4 >= 2]
    t0 = time.perf_counter()
    probes = interp.probe_heads(model, [it["prompt"] for it in train if it["answer"] == 0],
                                [it["prompt"] for it in train if it["answer"] == 1], val_fraction=0.3, seed=0)
    acc = probes.frame.query("metric == 'probe_val_acc'")["value"]
    print(f"probes: {len(train)} items, {time.perf_counter() - t0:.0f} s; validation accuracy over 270 heads: "
          f"mean {acc.mean():.3f}, median {acc.median():.3f}, max {acc.max():.3f}, heads at 1.0: {(acc == 1.0).sum()}")
    print("top-10 heads by validation accuracy:", ", ".join(f"{h}" for h in probes.top(10)))
    by_layer = probes.frame.query("metric == 'probe_val_acc'").groupby("layer")["value"].mean()
    print("mean validation accuracy by layer:", " ".join(f"{l}:{v:.2f}" for l, v in by_layer.items()))
    pos = torch.tensor([it["answer"] == 0 for it in test])
    base = p_positive(model, test, [])
    print(f"steering on {len(test)} held-out items; baseline mean P(positive): positive reviews {base[pos].mean():.3f}, "
          f"negative reviews {base[~pos].mean():.3f}, accuracy {((base > 0.5) == pos).float().mean():.3f}")
    print("| K | alpha | P(pos) on positive | P(pos) on negative | mean shift | accuracy |")
    print("|---|---|---|---|---|---|")
    for k in a.k:
        for alpha in a.alpha:
            pp = p_positive(model, test, interp.iti_edits(probes, k=k, alpha=alpha))
            print(f"| {k} | {alpha:g} | {pp[pos].mean():.3f} | {pp[~pos].mean():.3f} | {(pp - base).mean():+.3f} | "
                  f"{((pp > 0.5) == pos).float().mean():.3f} |")


if __name__ == "__main__":
    main()
