"""Vision-aware heads of LLaVA-style models: VHD / T-VHD (methods.md §9), visual attention sinks and
image-centric heads (§4), and answer/caption evaluation on :mod:`interp.tasks.shapes`.

Every forward pass runs the language model through the fused attention path (:mod:`interp.attnstats.fused`):
the image features are computed first (vision tower + projector, outside the fused path, whose kernels serve
the decoder) and scattered into the prompt embeddings, as ``LlavaModel.forward`` does. The image tokens form
a key segment named ``"image"``.

**VHD** (He et al. 2025). At a generation step the head's output is read in two branches: with the image,
and without it. "Without" drops the image tokens from the sequence but keeps every other token's position,
so the branches differ only in the image keys (a head that cannot see the image in the first layer has VHD
exactly 0). The head output is what it writes to the residual stream, ``z_h · W_O^h``; VHD is the L2
distance between the branches (the paper's notes name an L2-type distance without normalization). T-VHD of
a step is the mean of the ``top_k`` largest head VHDs at that step.

**Visual sinks** (Kang et al. 2025). For the hidden state entering layers ``2..L-1``, RMS-normalize without
weight and take ``|x̂|``; a token is a sink in a layer if ``max_{d ∈ D_sink} |x̂_d| > τ`` (τ = 20). ``D_sink`` is
inherited from the language model: :func:`sink_dims` finds it as the dimensions where the first token of
text-only prompts is massive (for SmolLM2-135M: dim 507). Note that RMS-normalized entries are bounded by
``sqrt(d_model)`` (24 for SmolLM2), so τ = 20 means nearly all of the token's energy in one dimension.
Image-centric heads (per head and answer query): image attention ``≥ summ`` (0.2) and visual-sink share of
it ``≤ ρ`` (0.5).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp.attnstats import AttnStats, _assemble, position_ids
from interp.attnstats.fused import Recorder, activate, hf_model_of
from interp.attnstats.segments import build_segments
from interp.edits import Edit, compile_edits
from interp.errors import InputError
from interp.images import VlmBatch, check_image_tokens, vlm_batch, vlm_config
from interp.inputs import Batch
from interp.schema import make_frame
from interp.tasks import shapes

DEFAULT_TOP_K = 10
SINK_TAU = 20.0
RHO = 0.5
SUMM = 0.2


# ----------------------------------------------------------------------------------------------- forward passes
def image_embeds(model, batch: VlmBatch) -> torch.Tensor:
    """``[batch pos d_model]`` prompt embeddings with the image features in the image-token slots."""
    hf = hf_model_of(model)
    cfg = vlm_config(model)
    emb = hf.get_input_embeddings()(batch.tokens.to(_device(hf)))
    if batch.pixels is None:
        return emb
    with torch.no_grad():
        feats = hf.model.get_image_features(pixel_values=batch.pixels.to(_device(hf), emb.dtype),
                                            vision_feature_layer=cfg.vision_feature_layer,
                                            vision_feature_select_strategy=cfg.vision_feature_select_strategy).pooler_output
    feats = torch.cat(list(feats), 0).to(emb.dtype)  # [batch*n_img d_model]
    mask = batch.image_mask.to(emb.device)
    if int(mask.sum()) != feats.shape[0]:
        raise InputError(f"{int(mask.sum())} image tokens for {feats.shape[0]} image features; build prompts with interp.images.vlm_batch")
    return emb.masked_scatter(mask[..., None], feats)


def text_only(batch: VlmBatch) -> tuple[VlmBatch, torch.Tensor]:
    """The no-image branch: image tokens dropped, each row left-aligned; returns it and the kept tokens'
    original positions ``[batch pos]`` (padding positions 0)."""
    keep = batch.attention_mask.bool() & ~batch.image_mask
    n = int(keep.sum(1).max())
    tokens = torch.zeros(batch.tokens.shape[0], n, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    pos = torch.zeros_like(tokens)
    orig = position_ids(Batch(batch.tokens, batch.attention_mask, "right"))
    for r in range(tokens.shape[0]):
        idx = keep[r].nonzero()[:, 0]
        tokens[r, : len(idx)], mask[r, : len(idx)], pos[r, : len(idx)] = batch.tokens[r, idx], 1, orig[r, idx]
    return VlmBatch(tokens, mask, torch.zeros_like(tokens, dtype=torch.bool), None), pos


def vlm_stats(model, batch: VlmBatch, *, image: bool = True, segments: dict | None = None, edits: Sequence[Edit] = (),
              key_mass: bool = False, return_z: bool = False, backend: str = "auto") -> AttnStats:
    """One fused pass over a batch of image prompts (``image=False``: the no-image branch, positions kept).

    Segments: ``"image"`` (the image tokens) plus any ``segments`` given as ``[batch pos]`` masks in the
    batch's coordinates. Returns :class:`interp.AttnStats` (``logits`` included)."""
    if image:
        b, pos = batch, position_ids(Batch(batch.tokens, batch.attention_mask, "right"))
    else:
        b, pos = text_only(batch)
    segments = dict(segments or {})
    if "image" in segments:  # a user's image segment must be exactly the model's image tokens
        check_image_tokens(model, batch.tokens, segments.pop("image"))
    segs = {"image": b.image_mask.float()}  # empty in the no-image branch, so edits naming it still compile
    for name, m in segments.items():
        segs[name] = torch.as_tensor(m).float() if image else _drop_image(batch, torch.as_tensor(m).float())
    names, seg = build_segments(segs, b.attention_mask, allow_overlap=True)
    hf = hf_model_of(model)
    n_layers, n_heads = _dims(model)
    rec = Recorder(seg, key_valid=b.attention_mask.bool(), key_mass=key_mass, edits=compile_edits(edits, n_layers, n_heads, names),
                   backend=backend, keep_z=return_z)
    emb = image_embeds(model, b)
    with torch.no_grad(), activate(model, rec) as run:
        out = run(inputs_embeds=emb, attention_mask=b.attention_mask.to(emb.device), position_ids=pos.to(emb.device), use_cache=False)
    return _assemble(model, Batch(b.tokens, b.attention_mask, "right"), rec.calls, names, out.logits, backend, hf)


def _drop_image(batch: VlmBatch, m: torch.Tensor) -> torch.Tensor:
    keep = batch.attention_mask.bool() & ~batch.image_mask
    n = int(keep.sum(1).max())
    out = torch.zeros(m.shape[0], n)
    for r in range(m.shape[0]):
        v = m[r][keep[r]]
        out[r, : len(v)] = v
    return out


def _dims(model) -> tuple[int, int]:
    cfg = vlm_config(model).text_config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def _device(hf) -> torch.device:
    return next(hf.parameters()).device


def head_results(model, z: torch.Tensor) -> torch.Tensor:
    """``z [..., layer, head_index, d_head]`` → what each head writes, ``[..., layer, head_index, d_model]``."""
    hf = hf_model_of(model)
    layers = hf.model.language_model.layers
    n_heads = z.shape[-2]
    w = torch.stack([l.self_attn.o_proj.weight.detach().float().cpu() for l in layers])  # [layer d_model head*d_head]
    w = w.view(w.shape[0], w.shape[1], n_heads, -1)  # [layer d_model head_index d_head]
    return torch.einsum("...lhd,lmhd->...lhm", z.float(), w)


# ------------------------------------------------------------------------------------------------ prompts / tasks
@dataclass(frozen=True)
class Item:
    """One question about one image, ready to run: ``prompt`` token ids (image tokens included)."""

    prompt_id: str
    kind: str
    prompt: tuple[int, ...]
    image: object
    answer: str
    prior: str | None
    trap: bool
    objects: tuple = ()
    group: str = "ordinary"  # "trap" for every question of the trap set (traps and their matched positives)


def items(model, samples: Sequence[shapes.Sample], kinds: Sequence[str] | None = None) -> list[Item]:
    """Flatten shapes samples into prompts for ``model`` (its tokenizer, image token and count). The prompts use
    tinyvlm's (SmolLM2's) chat markup; for a LLaVA checkpoint with another template, build token ids with its
    own template and :func:`interp.images.vlm_batch`."""
    from interp.images import n_image_tokens
    from interp.models.tinyvlm import chat_ids

    cfg = vlm_config(model)
    out = []
    for s in samples:
        img = s.image()
        for j, q in enumerate(s.questions):
            if kinds is not None and q.kind not in kinds:
                continue
            ids = chat_ids(model.tokenizer, q.text, n_image_tokens(model), int(cfg.image_token_id))
            group = "trap" if s.sample_id.startswith("trap") else "ordinary"
            out.append(Item(f"{s.sample_id}/{j}", q.kind, tuple(ids), img, q.answer, q.prior, q.trap, s.objects, group))
    return out


def option_ids(tokenizer, kind: str) -> dict[str, int]:
    """First token of each option of a question kind; they must differ."""
    opts = shapes.OPTIONS[kind]
    ids = {o: tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in opts}
    if len(set(ids.values())) != len(ids):
        raise InputError(f"options {opts} of {kind!r} questions share first tokens under this tokenizer")
    return ids


def batches(model, its: Sequence[Item], size: int = 8):
    for i in range(0, len(its), size):
        chunk = its[i: i + size]
        yield chunk, vlm_batch(model, [it.prompt for it in chunk], [it.image for it in chunk], pad_id=_pad(model))


def _pad(model) -> int:
    t = model.tokenizer
    return int(t.pad_token_id if t.pad_token_id is not None else 0)


def last_index(batch) -> torch.Tensor:
    return batch.attention_mask.sum(1) - 1


def predict(tokenizer, kind: str, logits: torch.Tensor) -> str:
    """The option whose first token has the highest next-token logit."""
    ids = option_ids(tokenizer, kind)
    names = list(ids)
    return names[int(torch.argmax(logits[list(ids.values())]))]


# ------------------------------------------------------------------------------------------------------- VHD
def vhd(model, its: Sequence[Item], *, batch_size: int = 8, top_k: int = DEFAULT_TOP_K, task: str = "vhd",
        backend: str = "auto", edits: Sequence[Edit] = ()) -> pd.DataFrame:
    """Per-head VHD at each item's answer step, in the tidy schema: per-head means (``vhd``), and per item
    ``t_vhd`` (layer −1, head −1, with ``prompt_id``). ``edits`` apply in both branches (e.g. to mask heads)."""
    per_item, rows = [], []
    for chunk, b in batches(model, its, batch_size):
        d = answer_step_vhd(model, b, backend=backend, edits=edits)  # [batch layer head_index]
        per_item.append(d)
        for it, v in zip(chunk, d):
            rows.append({"layer": -1, "head": -1, "metric": "t_vhd", "value": t_vhd(v, top_k), "prompt_id": it.prompt_id,
                         "kind": it.kind})
    if not per_item:
        raise InputError("vhd needs at least one item")
    mean = torch.cat(per_item).mean(0)
    rows += [{"layer": l, "head": h, "metric": "vhd", "value": float(mean[l, h])}
             for l in range(mean.shape[0]) for h in range(mean.shape[1])]
    return make_frame(pd.DataFrame(rows).assign(model=_name(model), task=task))


def answer_step_vhd(model, batch: VlmBatch, *, backend: str = "auto", edits: Sequence[Edit] = ()) -> torch.Tensor:
    """``[batch layer head_index]`` VHD at each row's last prompt position (the step that writes the answer)."""
    img = vlm_stats(model, batch, return_z=True, backend=backend, edits=edits)
    txt = vlm_stats(model, batch, image=False, return_z=True, backend=backend, edits=edits)
    r = torch.arange(batch.tokens.shape[0])
    zi = img.z[r, :, last_index(img)]  # [batch layer head_index d_head]
    zt = txt.z[r, :, last_index(txt)]
    return (head_results(model, zi) - head_results(model, zt)).norm(dim=-1)


def caption_t_vhd(model, item: Item, generated: Sequence[int], *, top_k: int = DEFAULT_TOP_K, backend: str = "auto",
                  task: str = "vhd") -> pd.DataFrame:
    """T-VHD of every generated token of a caption (teacher-forced: one pass per branch over prompt + caption).

    Rows ``t_vhd_token`` with ``position`` = step, the token text in ``token`` and ``shape_word`` = "correct",
    "hallucinated" (a shape not in the image) or "" for other tokens."""
    if not generated:
        return make_frame(pd.DataFrame(columns=["model", "task", "layer", "head", "metric", "value"]))
    ids = list(item.prompt) + list(generated[:-1])
    b = vlm_batch(model, [ids], [item.image], pad_id=_pad(model))
    img = vlm_stats(model, b, return_z=True, backend=backend)
    txt = vlm_stats(model, b, image=False, return_z=True, backend=backend)
    n_img, start = int(b.image_mask.sum()), len(item.prompt) - 1
    steps = torch.arange(start, start + len(generated))
    d = (head_results(model, img.z[0, :, steps].transpose(0, 1)) - head_results(model, txt.z[0, :, steps - n_img].transpose(0, 1))).norm(dim=-1)
    present = {o.shape for o in item.objects}
    rows = []
    for t, tok_id in enumerate(generated):
        word = model.tokenizer.decode([tok_id])
        shape = next((s for s in shapes.SHAPES if _first_piece(model.tokenizer, s) == tok_id), None)
        kind = "" if shape is None else ("correct" if shape in present else "hallucinated")
        rows.append({"layer": -1, "head": -1, "metric": "t_vhd_token", "value": t_vhd(d[t], top_k), "position": t,
                     "prompt_id": item.prompt_id, "token": word, "shape_word": kind})
    return make_frame(pd.DataFrame(rows).assign(model=_name(model), task=task))


def _first_piece(tokenizer, word: str) -> int:
    return tokenizer(f" {word}", add_special_tokens=False)["input_ids"][0]


def answer_attention(model, item: Item, *, backend: str = "auto") -> torch.Tensor:
    """``[layer head_index n_image]``: the answer query's attention on each image token, read from the fused
    path's key masses. After a cached prefill of the prompt but its last token, one single-query pass runs;
    its key mass is exactly that query's attention row (no pattern is materialized)."""
    from transformers import DynamicCache

    b = vlm_batch(model, [item.prompt], [item.image], pad_id=_pad(model))
    emb = image_embeds(model, b)
    n, n_layers = emb.shape[1], _dims(model)[0]
    cache = DynamicCache(config=vlm_config(model).text_config)
    pos = torch.arange(n, device=emb.device)[None]
    rec = Recorder(None, key_mass=True, backend=backend)
    with torch.no_grad():
        with activate(model, Recorder(None, backend=backend, keep=False)) as run:
            run(inputs_embeds=emb[:, :-1], position_ids=pos[:, :-1], past_key_values=cache, use_cache=True, logits_to_keep=1)
        with activate(model, rec) as run:
            run(inputs_embeds=emb[:, -1:], position_ids=pos[:, -1:], past_key_values=cache, use_cache=True, logits_to_keep=1)
    km = torch.stack([rec.calls[l][-1].key_mass[0] for l in range(n_layers)])  # [layer head_index key_pos]
    return km[:, :, b.image_mask[0]].cpu()


def t_vhd(v: torch.Tensor, top_k: int = DEFAULT_TOP_K) -> float:
    """Mean of the ``top_k`` largest head VHDs of one step (``v [layer head_index]``)."""
    flat = v.flatten()
    return float(flat.topk(min(top_k, flat.numel())).values.mean())


def top_heads(df: pd.DataFrame, k: int = 10, metric: str = "vhd") -> list[tuple[str, float]]:
    rows = df[(df["metric"] == metric) & (df["head"] >= 0)].nlargest(k, "value")
    return [(f"L{r.layer}H{r.head}", float(r.value)) for r in rows.itertuples()]


# ------------------------------------------------------------------------------------------ visual sinks (VAR)
def rms_abs(h: torch.Tensor) -> torch.Tensor:
    """``|x / sqrt(mean(x²) + 1e-6)|`` in fp32, the VAR sink statistic."""
    h = h.float()
    return (h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).abs()


def hidden_states(model, batch: VlmBatch) -> tuple[torch.Tensor, ...]:
    """The residual stream entering each decoder layer (and the final one), each ``[batch pos d_model]``."""
    hf = hf_model_of(model)
    emb = image_embeds(model, batch)
    with torch.no_grad():
        out = hf.model.language_model(inputs_embeds=emb, attention_mask=batch.attention_mask.to(emb.device),
                                      position_ids=position_ids(Batch(batch.tokens, batch.attention_mask, "right")).to(emb.device),
                                      output_hidden_states=True, use_cache=False)
    return tuple(h.detach().cpu() for h in out.hidden_states)


def sink_dims(model, *, n: int = 2, min_value: float = SINK_TAU) -> tuple[int, ...]:
    """The language model's massive-activation dims: where the first token of text-only prompts peaks
    (mean over layers 2..L-1 of its RMS-normalized ``|x̂|``); the top ``n`` dims, those above ``min_value``
    in some layer (at least the top one)."""
    from interp.models.tinyvlm import chat_ids

    prompts = [chat_ids(model.tokenizer, q, 0, 0) for q in ("Describe the image.", "What color is the square?", "How many circles are there?")]
    b = vlm_batch_text(prompts, _pad(model))
    hs = torch.stack(hidden_states(model, b)[2:-1])[:, :, 0]  # [layer batch d_model], first token
    x = rms_abs(hs)
    order = x.mean((0, 1)).argsort(descending=True)[:n]
    peak = x.amax((0, 1))
    keep = [int(d) for i, d in enumerate(order) if i == 0 or peak[d] > min_value]
    return tuple(keep)


def vlm_batch_text(prompts, pad_id: int) -> VlmBatch:
    n = max(len(p) for p in prompts)
    t = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    m = torch.zeros_like(t)
    for i, p in enumerate(prompts):
        t[i, : len(p)], m[i, : len(p)] = torch.tensor(p), 1
    return VlmBatch(t, m, torch.zeros_like(t, dtype=torch.bool), None)


@dataclass
class SinkScan:
    """Per row and decoder layer (2..L-1): which tokens are sinks. ``value [layer batch pos]`` is the max
    normalized activation over ``dims``; ``sinks = value > tau`` (padding excluded)."""

    dims: tuple[int, ...]
    tau: float
    layers: tuple[int, ...]
    value: torch.Tensor
    image_mask: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def sinks(self) -> torch.Tensor:
        return (self.value > self.tau) & self.attention_mask.bool()[None]

    def union(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(visual, text)`` sink masks ``[batch pos]``: sinks in any scanned layer."""
        s = self.sinks.any(0)
        return s & self.image_mask, s & ~self.image_mask

    def frame(self, model_name: str, task: str = "visual_sinks") -> pd.DataFrame:
        """Per layer: visual / text sink counts per prompt, and the max normalized activation in the sink dims
        over image tokens, over text tokens and on the first token (the evidence when no visual sink forms)."""
        rows = []
        valid = self.attention_mask.bool()
        img, txt = self.image_mask & valid, ~self.image_mask & valid
        for i, l in enumerate(self.layers):
            v, s = self.value[i], self.sinks[i]
            rows += [{"layer": l, "head": -1, "metric": "visual_sinks_per_prompt", "value": float((s & img).sum(1).float().mean())},
                     {"layer": l, "head": -1, "metric": "text_sinks_per_prompt", "value": float((s & txt).sum(1).float().mean())},
                     {"layer": l, "head": -1, "metric": "sink_dim_max_image", "value": float(v[img].max()) if img.any() else 0.0},
                     {"layer": l, "head": -1, "metric": "sink_dim_max_text", "value": float(v[txt].max()) if txt.any() else 0.0},
                     {"layer": l, "head": -1, "metric": "sink_dim_first_token", "value": float(v[:, 0].mean())}]
        return make_frame(pd.DataFrame(rows).assign(model=model_name, task=task))


def scan_sinks(model, batch: VlmBatch, dims: Sequence[int], *, tau: float = SINK_TAU) -> SinkScan:
    if not dims:
        raise InputError("scan_sinks needs at least one sink dimension; find them with sink_dims(model)")
    hs = hidden_states(model, batch)
    layers = tuple(range(2, len(hs) - 1))
    x = torch.stack([rms_abs(hs[l])[..., list(dims)].amax(-1) for l in layers])  # [layer batch pos]
    return SinkScan(tuple(int(d) for d in dims), float(tau), layers, x, batch.image_mask.clone(), batch.attention_mask.clone())


def image_centric(segment_mass: torch.Tensor, names: Sequence[str], *, rho: float = RHO, summ: float = SUMM) -> torch.Tensor:
    """Bool ``[...]`` from ``segment_mass [..., n_segments]`` holding ``"visual_sinks"`` and ``"image_rest"``:
    image attention ≥ ``summ`` and visual-sink share of it ≤ ``rho``."""
    vs = segment_mass[..., list(names).index("visual_sinks")]
    ir = segment_mass[..., list(names).index("image_rest")]
    total = vs + ir
    return (total >= summ) & (vs <= rho * total)


# --------------------------------------------------------------------------------------------- evaluation
def answer_frame(model, its: Sequence[Item], preds: Sequence[str], condition: str, task: str = "shapes",
                 summary_kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy per-kind accuracy, trap hallucination rate and trap accuracy for one condition. Every rate row carries
    :data:`interp.stats.RATE_COLUMNS`: its n, 95% Wilson interval, majority-class baseline (always giving the most
    frequent true answer; for a hallucination rate, NaN) and chance (1 / options); ``metric = "answer_share"`` rows
    give the share of each answer given (``prompt_id = "<kind>:<answer>"``), e.g. how often existence says Yes.
    The summary row (``prompt_id = "all"``) pools the ``summary_kinds`` (default: every kind); a kind the model
    does not answer better than its majority baseline (:func:`below_baseline`) should be left out of it."""
    from interp.stats import rate_of

    rows = []
    df = pd.DataFrame({"kind": [i.kind for i in its], "trap": [i.trap for i in its], "group": [i.group for i in its],
                       "correct": [p == i.answer for p, i in zip(preds, its)], "answer": [i.answer for i in its],
                       "pred": list(preds), "prior_answer": [i.prior is not None and p == i.prior for p, i in zip(preds, its)]})

    def row(metric, pid, hits, labels=None, chance=None):
        r = rate_of(hits, labels, chance=chance)
        return {"metric": metric, "value": r.rate, "prompt_id": pid, **r.columns()}

    ordinary = df[df.group == "ordinary"]
    for kind, d in ordinary.groupby("kind"):
        chance = 1.0 / len(shapes.OPTIONS[kind])
        rows += [row("accuracy", kind, d.correct, list(d.answer), chance),
                 {"metric": "chance", "value": chance, "prompt_id": kind},
                 {"metric": "n", "value": float(len(d)), "prompt_id": kind}]
        rows += [row("answer_share", f"{kind}:{a}", d.pred == a) for a in shapes.OPTIONS[kind] if (d.pred == a).any()]
    pooled = ordinary if summary_kinds is None else ordinary[ordinary.kind.isin(list(summary_kinds))]
    if len(pooled):
        rows.append(row("accuracy", "all", pooled.correct))
    traps = df[df.trap]
    if len(traps):
        rows += [row("hallucination_rate", "trap", traps.prior_answer), row("trap_accuracy", "trap", traps.correct, list(traps.answer))]
        for kind, d in traps.groupby("kind"):
            rows.append(row("hallucination_rate", f"trap_{kind}", d.prior_answer))
    positives = df[(df.group == "trap") & ~df.trap]
    if len(positives):  # the matched "Is there a <true color> square?" questions: a model that always says No fails these
        rows.append(row("trap_positive_accuracy", "trap", positives.correct, list(positives.answer)))
    return make_frame(pd.DataFrame(rows).assign(model=_name(model), task=task, layer=-1, head=-1, condition=condition))


def below_baseline(frame: pd.DataFrame) -> list[str]:
    """Question kinds whose accuracy in an :func:`answer_frame` does not beat their majority-class baseline
    (answering the most frequent true answer every time); e.g. count when the held-out answers are mostly 0."""
    acc = frame[(frame["metric"] == "accuracy") & (frame["prompt_id"] != "all")]
    if "majority" not in acc.columns:
        return []
    return sorted(str(k) for k, v, m in zip(acc["prompt_id"], acc["value"], acc["majority"]) if m == m and v <= m)


def chair_frame(model, captions: Sequence[str], objects: Sequence[tuple], condition: str, task: str = "shapes") -> pd.DataFrame:
    """CHAIR-style rates over generated captions: ``chair_i`` (hallucinated shape mentions / mentions),
    ``chair_s`` (captions with any), ``chair_attr`` ((color, shape) mentions not in the image / mentions), each with
    its n (mentions or captions) and 95% Wilson interval (:data:`interp.stats.RATE_COLUMNS`)."""
    from interp.stats import rate

    c = [shapes.chair(t, o) for t, o in zip(captions, objects)]
    mentioned = sum(x["mentioned"] for x in c)

    def row(metric, k, n):
        r = rate(k, n)
        return {"metric": metric, "value": r.rate if n else 0.0, **r.columns()}

    rows = [row("chair_i", sum(x["hallucinated"] for x in c), mentioned),
            row("chair_s", sum(x["hallucinated"] > 0 for x in c), len(c)),
            row("chair_attr", sum(x["attr_hallucinated"] for x in c), mentioned),
            {"metric": "mentions_per_caption", "value": mentioned / max(len(c), 1)}]
    return make_frame(pd.DataFrame(rows).assign(model=_name(model), task=task, layer=-1, head=-1, condition=condition,
                                                prompt_id="captions"))


def baseline_answers(model, its: Sequence[Item], *, batch_size: int = 8, backend: str = "auto") -> list[str]:
    """Predicted option per item from one batched fused pass (no edits)."""
    preds = []
    for chunk, b in batches(model, its, batch_size):
        st = vlm_stats(model, b, backend=backend)
        last = st.logits[torch.arange(len(chunk)), last_index(b)]
        preds += [predict(model.tokenizer, it.kind, lg) for it, lg in zip(chunk, last)]
    return preds


def _name(model) -> str:
    from interp.models import model_name

    return model_name(model)


def eval_sets(seed: int = 1000, n_ordinary: int = 60, n_trap: int = 40, n_captions: int = 20):
    """The fixed held-out sets: ordinary scenes (training distribution, new seed), traps, caption scenes."""
    return (shapes.dataset(seed, n_ordinary, prefix="test"), shapes.trap_set(seed + 1, n_trap),
            shapes.dataset(seed + 2, n_captions, prefix="cap"))


__all__ = ["vlm_stats", "image_embeds", "text_only", "head_results", "items", "Item", "option_ids", "predict", "vhd",
           "answer_step_vhd", "t_vhd", "top_heads", "caption_t_vhd", "answer_attention", "sink_dims", "scan_sinks", "SinkScan", "image_centric", "rms_abs",
           "hidden_states", "answer_frame", "below_baseline", "chair_frame", "baseline_answers", "eval_sets", "batches", "last_index"]
