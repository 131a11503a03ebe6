"""Train tinyvlm's vision tower and projector (the language model, SmolLM2-135M-Instruct, stays frozen).

    python benchmarks/train_tinyvlm.py                      # the shipped run: writes data/tinyvlm/
    python benchmarks/train_tinyvlm.py --tiny --out /tmp/t  # seconds: checks the loop

Two stages, both on procedural images from ``interp.tasks.shapes`` (training distribution: squares red and
triangles green 90% of the time):

1. **Alignment (no LM forward).** Each of the 64 patch tokens is regressed (MSE) onto the SmolLM2 input
   embedding of a word: a cell's top-left patch its object's color, the top-right its shape, the rest a
   comma (:func:`patch_targets`). This places image tokens near words the frozen LM already reads, cheaply
   (a 2-core CPU cannot afford many LM backward passes).
2. **Instruction tuning through the frozen LM.** Conversations of 1-3 turns about one image (color, shape,
   count and existence questions, two existence questions per image, one of each answer, and captions);
   cross-entropy on the answer tokens only; gradients flow through the frozen LM into the projector and the
   tower.

The config (seed, steps, timings, losses) is saved beside the weights in ``config.json``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.images import to_pixels  # noqa: E402
from interp.models.tinyvlm import (PIXEL_MEAN, PIXEL_STD, WEIGHTS_DIR, build_tinyvlm, chat_ids,  # noqa: E402
                                   load_vision_weights, save_vision_weights)
from interp.tasks import shapes  # noqa: E402


def patch_targets(model, tok, samples) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch patches d_model]`` LM input embeddings that each patch should map to, in raster order, and the
    ``[batch patches]`` mask of the patches that hold an object's word (not the filler).

    With 2×2 patches per cell (patch 8) an object reads like text to the frozen LM: its cell's top-left patch
    is ``e(" <color>")``, the top-right ``e(" <shape>")``, and every other patch (the cell's lower half, empty
    cells) a comma, so a row of the image reads "blue triangle , , red circle". With one patch per cell
    (patch 16, the earlier weights) the patch is ``e(" <color>") + e(" <shape>")`` and background ``e(" empty")``.
    Zero-shot, with the alignment targets in place of image tokens, the frozen LM answers existence
    questions at ROC AUC 0.92 in the first layout and 0.68 in the second (80 scenes)."""
    emb = model.get_input_embeddings().weight.detach()
    e = lambda w: emb[tok(w, add_special_tokens=False)["input_ids"]].sum(0)  # noqa: E731
    cache = {w: e(f" {w}") for w in [*shapes.COLORS, *shapes.SHAPES, "empty", ","]}
    side = shapes.CELL // model.config.vision_config.patch_size  # patches per cell side
    width = shapes.GRID * side
    filler = cache["empty"] if side == 1 else cache[","]
    out = filler.repeat(len(samples), width * width, 1).clone()
    words = torch.zeros(len(samples), width * width, dtype=torch.bool)
    for i, s in enumerate(samples):
        for o in s.objects:
            top = o.row * side * width + o.col * side  # the cell's top-left patch
            if side == 1:
                out[i, top] = cache[o.color] + cache[o.shape]
            else:
                out[i, top], out[i, top + 1] = cache[o.color], cache[o.shape]
            words[i, top: top + min(side, 2)] = True
    return out, words


def pixels(samples) -> torch.Tensor:
    return to_pixels(np.stack([s.image() for s in samples]), PIXEL_MEAN, PIXEL_STD)


def align_loss(model, tok, batch, px: torch.Tensor, words_only: bool = False) -> torch.Tensor:
    """MSE of the projected patch tokens of ``px`` (the batch's pixels) to their word targets, relative to the
    embeddings' mean square; with ``words_only``, over the patches that hold a color or shape word only (the
    others are left free)."""
    feats = model.model.get_image_features(pixel_values=px).pooler_output
    pred = torch.stack(list(feats))  # [batch patches d_model]
    target, words = patch_targets(model, tok, batch)
    err = (pred - target).pow(2).mean(-1)  # [batch patches]
    if words_only:
        err = err[words]
    return err.mean() / model.get_input_embeddings().weight.pow(2).mean()


def stage_align(model, tok, args, rng_seed: int) -> list[float]:
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr_align, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr_align, total_steps=args.align_steps, pct_start=0.1)
    losses = []
    bar = tqdm(range(args.align_steps), desc="align", disable=args.quiet)
    for step in bar:
        batch = shapes.dataset(rng_seed * 100_003 + step, args.align_batch)
        loss = align_loss(model, tok, batch, pixels(batch))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return losses


def conversation(tok, sample, rng: random.Random, n_img: int, img_id: int,
                 balance_counts: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside answers) of a 1-3 turn conversation about one image. Besides the
    scene's ordinary questions it may ask a second existence question, of the other polarity (its "No" shares a
    word with a present object half the time): existence is the one kind the frozen LM cannot answer by copying
    a word from an image token, so it gets twice the supervision."""
    exist = [q for q in sample.questions if q.kind == "exist"]
    flip = "No" if exist and exist[0].answer == "Yes" else "Yes"
    qs = [*sample.questions, shapes.other_exist_question(sample.objects, rng, flip)]
    if balance_counts:  # the scene's own count question is 0 most of the time; draw its answer uniformly instead
        qs = [shapes.balanced_count_question(sample.objects, rng) if q.kind == "count" else q for q in qs]
    rng.shuffle(qs)
    qs = qs[: rng.randint(1, 3)]
    ids, labels = [], []
    for t, q in enumerate(qs):
        prompt = chat_ids(tok, q.text, n_img if t == 0 else 0, img_id)
        if t > 0:
            prompt = tok("\n", add_special_tokens=False)["input_ids"] + prompt
        ans = tok(f"{q.answer}<|im_end|>", add_special_tokens=False)["input_ids"]
        ids += prompt + ans
        labels += [-100] * len(prompt) + ans
    return ids, labels


def stage_lm(model, tok, args, rng_seed: int, deadline: float, ckpt=None) -> tuple[list[float], int]:
    cfg = model.config
    n_img, img_id = cfg.image_seq_length, cfg.image_token_id
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr_lm, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr_lm, total_steps=args.lm_steps, pct_start=0.05)
    rng = random.Random(rng_seed)
    losses, done = [], 0
    bar = tqdm(range(args.lm_steps), desc="lm", disable=args.quiet)
    for step in bar:
        if time.perf_counter() > deadline or (args.lm_stop_step and step >= args.lm_stop_step):
            print(f"time budget reached after {step} LM steps", flush=True)
            break
        batch = shapes.dataset(rng_seed * 7_919 + step, args.lm_batch, prefix="t")
        convs = [conversation(tok, s, rng, n_img, img_id, not args.no_balance_counts) for s in batch]
        n = max(len(i) for i, _ in convs)
        ids = torch.full((len(convs), n), tok.pad_token_id or 0, dtype=torch.long)
        lab = torch.full_like(ids, -100)
        att = torch.zeros_like(ids)
        for r, (i, l) in enumerate(convs):
            ids[r, : len(i)], lab[r, : len(l)], att[r, : len(i)] = torch.tensor(i), torch.tensor(l), 1
        px = pixels(batch)
        hidden = model.model(input_ids=ids, pixel_values=px, attention_mask=att).last_hidden_state
        sel = lab[:, 1:] != -100  # next-token targets: only answer positions get logits
        logits = model.lm_head(hidden[:, :-1][sel])
        loss = torch.nn.functional.cross_entropy(logits, lab[:, 1:][sel])
        if args.align_weight:  # keeps image tokens near their words, which existence answers rely on
            loss = loss + args.align_weight * align_loss(model, tok, batch, px, words_only=args.anchor_words)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        done = step + 1
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        if ckpt is not None and done % 50 == 0:
            ckpt(f"lm{done}")
    return losses, done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--align-steps", type=int, default=800)
    ap.add_argument("--align-batch", type=int, default=32)
    ap.add_argument("--lr-align", type=float, default=2e-3)
    ap.add_argument("--lm-steps", type=int, default=300)
    ap.add_argument("--lm-batch", type=int, default=8)
    ap.add_argument("--lr-lm", type=float, default=3e-4)
    ap.add_argument("--align-weight", type=float, default=0.0, help="weight of the alignment loss kept during the LM stage")
    ap.add_argument("--anchor-words", action="store_true", help="in the LM stage, keep only the word patches near their targets")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights and skip the alignment stage")
    ap.add_argument("--max-minutes", type=float, default=29.0, help="stop the LM stage when the whole run reaches this")
    ap.add_argument("--lm-stop-step", type=int, default=0,
                    help="stop the LM stage after this many steps, schedule unchanged (the shipped run stopped at 163 of 250 by time)")
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="also save intermediate weights here")
    ap.add_argument("--no-balance-counts", action="store_true",
                    help="train on the scenes' own count questions (mostly 0) as the 2026-11-23 weights did")
    ap.add_argument("--tiny", action="store_true", help="a few steps of each stage (checks the loop)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    check_args(args)
    if args.tiny:
        args.align_steps, args.lm_steps, args.align_batch, args.lm_batch = 5, 2, 4, 2
    try:
        train(args)
    except KeyboardInterrupt:
        fail(f"interrupted; nothing was written to {args.out} (any weights there are kept)", code=130)


def fail(message: str, code: int = 2) -> None:
    print(f"train_tinyvlm.py: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_args(args) -> None:
    """Bad arguments end in one line and exit code 2 before the model loads (a run is ~30 minutes)."""
    from interp.errors import InputError
    from interp.jobs.outdir import check_writable

    for name in ("threads", "align_steps", "align_batch", "lm_steps", "lm_batch"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("lr_align", "lr_lm", "max_minutes"):
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.align_weight < 0 or args.lm_stop_step < 0:
        fail("--align-weight and --lm-stop-step must not be negative")
    if args.anchor_words and not args.align_weight:
        fail("--anchor-words only chooses the patches that --align-weight holds; pass --align-weight too")
    if args.init is not None and not (args.init / "vision.safetensors").is_file():
        fail(f"--init {args.init}: no vision.safetensors there; pass a directory this script (or --ckpt-dir) wrote")
    if args.out.exists() and not args.out.is_dir():
        fail(f"--out {args.out} is a file; pass a directory (it is replaced as a whole when training ends)")
    try:
        check_writable(args.out.resolve().parent)  # the weights are written beside it, then renamed into place
        if args.ckpt_dir is not None:
            check_writable(args.ckpt_dir)
    except InputError as e:
        fail(str(e))


def train(args) -> None:
    from interp.errors import InterpError

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tok = build_tinyvlm(None, seed=args.seed)
    model.train()
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    model.lm_head.weight.requires_grad_(False)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt = None
    if args.ckpt_dir is not None:  # intermediate weights, to watch a long run from another process
        ckpt = lambda name: save_vision_weights(model, args.ckpt_dir / name, {"checkpoint": name})  # noqa: E731
    if args.init is not None:
        try:
            load_vision_weights(model, args.init)
        except InterpError as e:
            fail(f"--init: {e}")
        align = []
    else:
        align = stage_align(model, tok, args, args.seed + 1)
        if ckpt is not None:
            ckpt("align")
    t1 = time.perf_counter()
    lm_losses, lm_done = stage_lm(model, tok, args, args.seed + 2, t0 + 60 * args.max_minutes, ckpt)
    t2 = time.perf_counter()
    meta = {"seed": args.seed, "threads": args.threads, "trainable_params": n_train,
            "align": None if args.init is not None else {
                "steps": args.align_steps, "batch": args.align_batch, "lr": args.lr_align,
                "final_loss": float(np.mean(align[-20:])), "seconds": round(t1 - t0, 1)},
            "init": str(args.init) if args.init is not None else None,
            "lm": {"steps_planned": args.lm_steps, "steps_done": lm_done, "batch": args.lm_batch, "lr": args.lr_lm,
                   "align_weight": args.align_weight, "anchor_words": args.anchor_words,
                   "balance_counts": not args.no_balance_counts,
                   "first_loss": float(np.mean(lm_losses[:10])) if lm_losses else None,
                   "final_loss": float(np.mean(lm_losses[-10:])) if lm_losses else None, "seconds": round(t2 - t1, 1)},
            "train_seconds": round(t2 - t0, 1), "prior": shapes.PRIORS, "prior_p": shapes.PRIOR_P,
            "torch": torch.__version__, "command": " ".join(sys.argv)}
    out = save_vision_weights(model, args.out, meta)
    print(json.dumps(meta, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
