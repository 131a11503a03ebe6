"""Attention entropy collapse at a high learning rate, plain vs σReparam (Zhai et al. 2023; methods.md §6).

Trains the same tiny causal LM (``interp.train.tiny_lm.TinyLM``, byte-level, on Python's pydoc text) twice
from the same initialization and data order with the same learning rate: once plain, once with every linear
layer σReparam'd. ``EntropyTracker`` logs per-head attention entropy; the script prints a per-checkpoint
table and a summary, and writes ``entropy_collapse.parquet`` + ``entropy_collapse.html`` (entropy and loss
curves) to ``--out``. CPU only, single thread, a few minutes at the defaults.

    python benchmarks/entropy_collapse.py [--lr 0.03] [--steps 400] [--out runs/entropy_collapse]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from interp.io import write_parquet
from interp.plot import write_report
from interp.plot.entropy import entropy_curves
from interp.tasks.texts import pydoc_text
from interp.train import EntropyTracker, sigma_reparam
from interp.train.tiny_lm import TinyLM


def batches(data: torch.Tensor, steps: int, batch: int, seq_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=g)
        idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
        chunk = data[idx]  # [batch seq_len+1]
        yield chunk[:, :-1], chunk[:, 1:]


def train(args, data: torch.Tensor, reparam: bool) -> pd.DataFrame:
    torch.manual_seed(args.seed)
    lm = TinyLM(256, args.d_model, args.layers, args.heads, args.seq_len)
    if reparam:
        sigma_reparam(lm, "all")
    opt = torch.optim.AdamW(lm.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    cond = "sigma_reparam" if reparam else "plain"
    tr = EntropyTracker(lm, every=args.every, task="entropy_collapse", condition=cond, model_name="tiny-lm")
    lm.train()
    for step, (x, y) in enumerate(batches(data, args.steps, args.batch, args.seq_len, args.seed)):
        tr.step = step
        loss = F.cross_entropy(lm(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(lm.parameters(), float("inf"))
        opt.step()
        tr.log(step, "loss", loss.item() if math.isfinite(loss.item()) else 1e3)
        tr.log(step, "grad_norm", min(float(gnorm), 1e6))
    tr.close()
    return tr.frame()


def summarize(df: pd.DataFrame, window: int) -> pd.DataFrame:
    out = []
    for cond, d in df.groupby("condition"):
        loss = d[d.metric == "loss"].sort_values("step")["value"].reset_index(drop=True)
        ent = d[(d.metric == "entropy") & (d["head"] >= 0)].groupby("step")["value"].mean()
        nent = d[(d.metric == "normalized_entropy") & (d["head"] >= 0)].groupby("step")["value"].mean()
        per_head = d[(d.metric == "normalized_entropy") & (d["head"] >= 0)]
        last = per_head[per_head.step == per_head.step.max()]
        smooth = loss.rolling(window, min_periods=1).mean()
        out.append({"run": cond, "final_loss": float(loss.iloc[-window:].mean()), "best_loss": float(smooth.min()),
                    "max_loss_after_100": float(loss.iloc[100:].max()) if len(loss) > 100 else float("nan"),
                    "loss_spikes": int(((loss.iloc[1:].values - smooth.shift(1).iloc[1:].values) > 0.5).sum()),
                    "loss_jitter_after_100": float(loss.iloc[100:].diff().std()) if len(loss) > 101 else float("nan"),
                    "entropy_start": float(ent.iloc[0]), "entropy_min": float(ent.min()), "entropy_final": float(ent.iloc[-1]),
                    "norm_entropy_final": float(nent.iloc[-1]),
                    "heads_collapsed_final": f"{int((last.value < 0.1).sum())}/{len(last)}"})
    return pd.DataFrame(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/entropy_collapse"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = torch.tensor(list(pydoc_text(400_000).encode("utf-8")), dtype=torch.long)
    frames, times = [], {}
    for reparam in (False, True):
        t0 = time.perf_counter()
        frames.append(train(args, data, reparam))
        times["sigma_reparam" if reparam else "plain"] = time.perf_counter() - t0
    df = pd.concat(frames, ignore_index=True)
    # per-checkpoint table: mean loss over the window, mean entropy over heads
    rows = []
    for cond, d in df.groupby("condition"):
        loss = d[d.metric == "loss"].set_index("step")["value"]
        ent = d[(d.metric == "entropy") & (d["head"] >= 0)].groupby("step")["value"].mean()
        for s in ent.index[:: max(1, len(ent) // 10)]:
            rows.append({"run": cond, "step": int(s), "loss": float(loss.loc[s: s + args.every - 1].mean()), "mean_entropy": float(ent.loc[s])})
    table = pd.DataFrame(rows).pivot(index="step", columns="run", values=["loss", "mean_entropy"])
    print(f"lr={args.lr} steps={args.steps} batch={args.batch} seq_len={args.seq_len} d_model={args.d_model} "
          f"layers={args.layers} heads={args.heads} seed={args.seed}; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(table.round(3).to_string())
    summary = summarize(df, window=max(1, args.every))
    print(summary.round(3).to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    write_parquet(args.out / "entropy_collapse.parquet", df.drop(columns=[c for c in ("prompt_id",) if c in df]))
    write_report(args.out / "entropy_collapse.html", f"Entropy collapse at lr={args.lr}: plain vs σReparam",
                 [("Mean attention entropy per layer", entropy_curves(df)),
                  ("Training loss", entropy_curves(df, metric="loss")),
                  ("Summary", summary.round(3).to_html(index=False))])
    return summary


if __name__ == "__main__":
    main()
