"""Attention sinks (Gu et al. 2024; methods.md §2), hidden sinks (ACT, §3) and massive activations.

Everything here reads the fused statistics (``attention_stats(..., key_mass=True)``), so no ``n×n`` pattern
is ever built.

Definitions (positions are 0-indexed and counted from each row's first real token, so left padding is
handled; the paper's ``Sink_1`` is position 0 here):

- key importance ``α^{l,h}_k = key_mass[k] / (number of real queries that see key k)``; for causal
  attention that is ``T − k`` queries in an unpadded row of ``T`` tokens (the key itself included), for
  bidirectional attention every real query. ``key_mass`` already sums over real queries only.
- sink rate ``Sink_k^ε = mean over (prompts, layers, heads) of 1[α_k > ε]`` (ε = 0.3), reported as a
  fraction in ``[0, 1]`` (×100 for the paper's percent) per position, per layer and overall.
- hidden sinks (ACT): keys other than the first whose α exceeds τ = 0.1. ACT's reference code drops the
  *first element* of the sink set rather than position 0; the two differ when the first token is not itself
  a sink, which on SmolLM2 happens in layers 0–2, 10 and 11 (154 of 778 prompt-heads with hidden sinks on
  4 × 64 pydoc tokens). We exclude position 0 by default; ``act_quirk=True`` reproduces the reference rule.
  The last keys of a prompt are seen by very few queries, so their α is noisy (the final key's α is the
  last query's self-attention); ``min_queries`` drops keys seen by fewer queries. It defaults to 1 (the
  ACT definition) in the functions, and the reports use 16.
- massive activations: a token's hidden state is flagged in a layer when its L2 norm exceeds
  ``ratio`` (default 20) × the median token norm of that layer (over all real tokens of the batch). Sun et
  al. ("Massive activations", 2024) flag single scalars > 100 and ~1000× the median |activation|; a whole
  token's norm dilutes one huge coordinate over ``d_model`` ordinary ones, so the per-token ratio is lower.
  On SmolLM2-135M (4 × 64 pydoc tokens) the first token's norm is 40–180× the layer median in hidden
  states 12–28 and about 10× in hidden states 3–9, where every other token stays below 3×; 20 flags the
  first group only (the "massive" regime) with a wide margin. Pass ``ratio=`` to change it; the
  ``max_norm_ratio`` rows report the raw ratio per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InputError
from interp.schema import make_frame
from interp.stats import SMALL_N, mean_ci, rate

DEFAULT_EPS = 0.3
DEFAULT_TAU = 0.1
DEFAULT_MASSIVE_RATIO = 20.0
REPORT_MIN_QUERIES = 16


def check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise InputError(f"sink threshold {name}={value:g} must lie strictly between 0 and 1 (an attention weight); e.g. {name}=0.3")
    return value


def queries_seeing(attention_mask: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """``[batch key_pos]`` number of real queries that can attend to each key (0 at padding keys)."""
    m = attention_mask.to(torch.float32)
    if causal:
        seen = m.flip(-1).cumsum(-1).flip(-1)  # real queries at positions >= k
    else:
        seen = m.sum(-1, keepdim=True).expand_as(m)
    return seen * m


def key_importance(key_mass: torch.Tensor, attention_mask: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """α: ``key_mass [batch layer head_index key_pos]`` divided by the queries that see each key (0 at padding)."""
    if key_mass.ndim != 4 or key_mass.shape[0] != attention_mask.shape[0] or key_mass.shape[-1] != attention_mask.shape[-1]:
        raise InputError(f"key_mass has shape {tuple(key_mass.shape)}; expected [batch layer head_index key_pos] matching the "
                         f"attention mask {tuple(attention_mask.shape)}")
    n = queries_seeing(attention_mask.cpu(), causal=causal)[:, None, None, :]  # [batch 1 1 key_pos]
    return torch.where(n > 0, key_mass.float() / n.clamp_min(1), torch.zeros((), dtype=torch.float32))


def alpha(stats) -> torch.Tensor:
    """α ``[batch layer head_index key_pos]`` of an ``AttnStats`` computed with ``key_mass=True``."""
    if stats.key_mass is None:
        raise InputError("these statistics have no key_mass; run attention_stats(..., key_mass=True)")
    return key_importance(stats.key_mass, stats.attention_mask, causal=stats.meta.get("causal", True))


def align_left(x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each row so that its first real token sits at position 0.

    ``x [batch ... pos]`` → (``x' [batch ... pos]``, ``valid [batch pos]``) with padding moved to the end."""
    mask = attention_mask.bool().cpu()
    b, n = mask.shape
    start = mask.float().argmax(1)
    length = mask.sum(1)
    idx = (start[:, None] + torch.arange(n)[None, :]).clamp_max(n - 1)  # [batch pos]
    valid = torch.arange(n)[None, :] < length[:, None]
    view = idx.view(b, *([1] * (x.ndim - 2)), n).expand_as(x)
    out = torch.gather(x, -1, view)
    return out * valid.view(b, *([1] * (x.ndim - 2)), n).to(out.dtype), valid


def sink_rate(alpha_: torch.Tensor, attention_mask: torch.Tensor, *, eps: float = DEFAULT_EPS,
              max_positions: int | None = None) -> dict[str, torch.Tensor]:
    """Sink rates as fractions: ``per_position [pos]`` (over prompts, layers, heads), ``per_layer_position
    [layer pos]`` (over prompts and heads) and ``per_head_first [layer head_index]`` (fraction of prompts with
    α_0 > ε). Positions are relative to each row's first real token; a position counts only prompts long
    enough to have it."""
    eps = check_threshold("eps", eps)
    a, valid = align_left(alpha_, attention_mask)
    if max_positions is not None:
        a, valid = a[..., :max_positions], valid[:, :max_positions]
    hit = (a > eps).float() * valid[:, None, None, :]
    n_prompts = valid.sum(0).clamp_min(1).float()  # [pos]
    per_prompt = hit.mean(2)  # [batch layer pos]: the prompts are the independent units for intervals
    per_layer_position = per_prompt.sum(0) / n_prompts  # [layer pos]
    return {"per_position": per_layer_position.mean(0), "per_layer_position": per_layer_position,
            "per_head_first": hit[..., 0].mean(0), "n_prompts": n_prompts, "per_prompt": per_prompt, "valid": valid}


def hidden_sinks(alpha_: torch.Tensor, attention_mask: torch.Tensor, *, tau: float = DEFAULT_TAU, min_queries: int = 1,
                 causal: bool = True, act_quirk: bool = False) -> torch.Tensor:
    """``[batch layer head_index key_pos]`` bool: keys other than each row's first real token with α > τ
    that at least ``min_queries`` real queries see. ``act_quirk=True``: instead drop the first key of each
    head's sink set, whatever its position (ACT's released code)."""
    tau = check_threshold("tau", tau)
    mask = attention_mask.bool().cpu()
    first = torch.zeros_like(mask)
    first[torch.arange(mask.shape[0]), mask.float().argmax(1)] = True
    seen = mask & (queries_seeing(mask, causal=causal) >= max(1, int(min_queries)))
    if act_quirk:
        s = (alpha_ > tau) & seen[:, None, None, :]
        lead = s & (s.long().cumsum(-1) == 1)  # the first element of each sink set
        return s & ~lead
    return (alpha_ > tau) & (seen & ~first)[:, None, None, :]


def sink_token_mask(hidden: torch.Tensor, heads=None) -> torch.Tensor:
    """``[batch key_pos]`` keys that are hidden sinks in any of ``heads`` (``HeadId`` list; None = all)."""
    if heads is None:
        return hidden.any(2).any(1)
    sel = torch.zeros(hidden.shape[1], hidden.shape[2], dtype=torch.bool)
    for h in heads:
        sel[h.layer, h.head] = True
    return (hidden & sel[None, :, :, None]).any(2).any(1)


def sink_frame(stats, *, eps: float = DEFAULT_EPS, tau: float = DEFAULT_TAU, min_queries: int = REPORT_MIN_QUERIES,
               max_positions: int = 64, task: str = "sinks", tokenizer=None) -> pd.DataFrame:
    """The tidy sink table of one ``AttnStats`` (computed with ``key_mass=True``).

    Per head (``position`` empty): ``alpha_first`` (α_0 averaged over prompts), ``sink_first`` (fraction of
    prompts with α_0 > ε), ``first_token_mass`` (mean attention of real queries after the first on the first
    token, when the stats have the ``"first"`` segment), ``hidden_sink_count`` (hidden sinks per prompt).
    Per head and position < ``max_positions``: ``alpha``. Per layer (head −1) and position: ``sink_rate``; overall
    (layer −1, head −1) and position: ``sink_rate``. Hidden sinks (layer −1, head −1, position, prompt_id):
    ``hidden_sink_heads`` = number of heads in which the key is a hidden sink, with a ``token`` column."""
    a = alpha(stats)
    mask = stats.attention_mask
    model = stats.model
    rates = sink_rate(a, mask, eps=eps, max_positions=max_positions)
    hid = hidden_sinks(a, mask, tau=tau, min_queries=min_queries, causal=stats.meta.get("causal", True))
    L, H = a.shape[1], a.shape[2]
    al, valid = align_left(a, mask)
    first = al[..., 0]  # [batch layer head]
    rows = []

    def add(metric, t, **extra):
        for l, row in enumerate(t.tolist()):
            for h, v in enumerate(row):
                rows.append({"layer": l, "head": h, "metric": metric, "value": float(v), **extra})

    add("alpha_first", first.mean(0))
    n_b = int(mask.shape[0])
    for l, row in enumerate(rates["per_head_first"].tolist()):  # a binomial over prompts: Wilson interval
        for h, v in enumerate(row):
            rows.append({"layer": l, "head": h, "metric": "sink_first", "value": float(v),
                         **rate(round(v * n_b), n_b).columns()})
    add("hidden_sink_count", hid.float().sum(-1).mean(0))
    if "first" in stats.segment_names:
        w = stats.query_valid[:, None, None, :].float()
        fm = stats.segment_mass[..., stats.segment_names.index("first")].nan_to_num(0.0)
        add("first_token_mass", (fm * w).sum((0, 3)) / w.sum((0, 3)).clamp_min(1))
    npos = min(max_positions, al.shape[-1])
    cnt = valid[:, :npos].sum(0).clamp_min(1).float()  # [pos]
    mean_alpha = al[..., :npos].sum(0) / cnt  # [layer head pos]
    for l in range(L):
        for h in range(H):
            for k, v in enumerate(mean_alpha[l, h].tolist()):
                rows.append({"layer": l, "head": h, "metric": "alpha", "value": v, "position": k})
        for k, v in enumerate(rates["per_layer_position"][l].tolist()):
            rows.append({"layer": l, "head": -1, "metric": "sink_rate", "value": v, "position": k,
                         **_prompt_interval(rates["per_prompt"][:, l, k], rates["valid"][:, k])})
    overall = rates["per_prompt"].mean(1)  # [batch pos]
    for k, v in enumerate(rates["per_position"].tolist()):
        rows.append({"layer": -1, "head": -1, "metric": "sink_rate", "value": v, "position": k,
                     **_prompt_interval(overall[:, k], rates["valid"][:, k])})
    counts = hid.sum((1, 2))  # [batch key_pos]
    starts = mask.float().argmax(1)
    for b, k in counts.nonzero().tolist():
        tok = int(stats.tokens[b, k])
        rows.append({"layer": -1, "head": -1, "metric": "hidden_sink_heads", "value": float(counts[b, k]),
                     "position": k - int(starts[b]), "prompt_id": str(b),
                     "token": tokenizer.decode([tok]) if tokenizer is not None else str(tok)})
    df = pd.DataFrame(rows).assign(model=model, task=task)
    if "token" not in df.columns:
        df["token"] = None
    return make_frame(df)


def _prompt_interval(per_prompt: torch.Tensor, valid: torch.Tensor) -> dict:
    """The interval columns of a sink rate over (prompt, layer, head) cells: the cells of one prompt are not
    independent, so the 95% interval is the t interval of the per-prompt rates and ``n`` counts prompts."""
    m = mean_ci(per_prompt[valid.bool()].tolist())
    return {"n": m.n, "low": max(0.0, m.low), "high": min(1.0, m.high), "small_n": m.n < SMALL_N}


@dataclass
class SinkSummary:
    """Headline numbers of a sink analysis (all fractions in [0, 1])."""

    sink_rate_first: float  # Sink_1^ε over prompts, layers and heads
    sink_rate_first_ci: tuple[float, float, int]  # its 95% interval over prompts and the number of prompts
    sink_rate_first_by_layer: list[float]
    strongest: list[tuple[str, float]]  # heads by α_0, descending
    hidden_sink_tokens: pd.DataFrame  # token, n (prompt positions), heads (total head hits)


def summarize(df: pd.DataFrame, *, k: int = 10) -> SinkSummary:
    """Headline numbers from a :func:`sink_frame` table."""
    first = df[(df.metric == "sink_rate") & (df.layer == -1) & (df.position == 0)]
    rate = first["value"]
    ci = ((float(first["low"].iloc[0]), float(first["high"].iloc[0]), int(first["n"].iloc[0]))
          if len(first) and "low" in first.columns else (float("nan"), float("nan"), 0))
    by_layer = df[(df.metric == "sink_rate") & (df.layer >= 0) & (df.position == 0)].sort_values("layer")["value"]
    heads = df[df.metric == "alpha_first"].groupby(["layer", "head"])["value"].mean().nlargest(k)
    hs = df[df.metric == "hidden_sink_heads"]
    tokens = (hs.groupby("token").agg(n=("value", "size"), heads=("value", "sum")).sort_values("heads", ascending=False)
              .reset_index()) if not hs.empty else pd.DataFrame(columns=["token", "n", "heads"])
    return SinkSummary(float(rate.iloc[0]) if len(rate) else float("nan"), ci, [float(v) for v in by_layer],
                       [(f"L{l}H{h}", float(v)) for (l, h), v in heads.items()], tokens)


def massive_activations(model, inputs, *, ratio: float = DEFAULT_MASSIVE_RATIO, max_positions: int = 64,
                        task: str = "sinks") -> pd.DataFrame:
    """Per-token hidden-state norms of all ``L+1`` hidden states (index 0 = the embeddings, index l+1 =
    ``resid_post`` of layer l, as in transformers' ``hidden_states``) and the flags of tokens above ``ratio`` × layer median.

    Rows: per layer (head −1) ``hidden_norm`` by position < ``max_positions`` (mean over prompts),
    ``hidden_norm_median``, ``massive_count`` (flagged tokens per prompt), ``massive_first`` (fraction of
    prompts whose first token is flagged), ``max_norm_ratio``; per layer ``key_norm`` / ``value_norm`` with
    ``condition`` "first" or "other" (norm per token averaged over KV heads, as the bridge's ``hook_k`` /
    ``hook_v`` report them, i.e. before rotary embedding)."""
    from interp.hooks import CaptureSpec, capture
    from interp.models import model_name

    if not ratio > 1:
        raise InputError(f"massive-activation ratio must be > 1 (times the layer median), got {ratio}")
    L = model.cfg.n_layers
    cap = capture(model, inputs, CaptureSpec(sites=("resid_pre", "resid_post", "k", "v")), return_logits=False)
    mask = cap.attention_mask.bool()
    # hidden state 0 is the embedding (resid_pre of layer 0); hidden state l+1 is resid_post of layer l
    hidden = [cap["resid_pre", 0].float().norm(dim=-1)] + [cap["resid_post", l].float().norm(dim=-1) for l in range(L)]
    norms = torch.stack(hidden, 1)  # [batch layer+1 pos]
    first = torch.zeros_like(mask)
    first[torch.arange(mask.shape[0]), mask.float().argmax(1)] = True
    rows = []
    al, valid = align_left(norms, cap.attention_mask)
    npos = min(max_positions, al.shape[-1])
    cnt = valid[:, :npos].sum(0).clamp_min(1).float()
    mean_norm = al[..., :npos].sum(0) / cnt  # [layer+1 pos]
    for l in range(L + 1):
        x = norms[:, l]
        med = x[mask].median()
        flag = (x > ratio * med) & mask
        rows += [{"layer": l, "head": -1, "metric": "hidden_norm", "value": v, "position": k}
                 for k, v in enumerate(mean_norm[l].tolist())]
        rows += [{"layer": l, "head": -1, "metric": "hidden_norm_median", "value": float(med)},
                 {"layer": l, "head": -1, "metric": "max_norm_ratio", "value": float(x[mask].max() / med)},
                 {"layer": l, "head": -1, "metric": "massive_count", "value": float(flag.sum(1).float().mean())},
                 {"layer": l, "head": -1, "metric": "massive_first", "value": float(flag[first].float().mean())}]
    other = mask & ~first
    for l in range(L):
        for site, metric in (("k", "key_norm"), ("v", "value_norm")):
            n = cap[site, l].float().norm(dim=-1).mean(-1)  # [batch pos]
            for cond, sel in (("first", first), ("other", other)):
                if sel.any():
                    rows.append({"layer": l, "head": -1, "metric": metric, "value": float(n[sel].mean()), "condition": cond})
    return make_frame(pd.DataFrame(rows).assign(model=model_name(model), task=task))


def analyze_sinks(model, inputs, *, eps: float = DEFAULT_EPS, tau: float = DEFAULT_TAU,
                  min_queries: int = REPORT_MIN_QUERIES, max_positions: int = 64, backend: str = "auto",
                  task: str = "sinks") -> pd.DataFrame:
    """Run the fused statistics once and return :func:`sink_frame` (α, sink rates, first-token mass, hidden sinks)."""
    from interp.attnstats import attention_stats

    check_threshold("eps", eps)
    check_threshold("tau", tau)
    st = attention_stats(model, inputs, segments={"first": "first"}, key_mass=True, backend=backend)
    return sink_frame(st, eps=eps, tau=tau, min_queries=min_queries, max_positions=max_positions, task=task,
                      tokenizer=getattr(model, "tokenizer", None))




def probe_tokens(model, *, n_prompts: int = 8, n_tokens: int = 64, offset_chars: int = 0) -> torch.Tensor:
    """``[n_prompts n_tokens]`` consecutive chunks of Python's ``pydoc_data.topics`` text, each starting with the
    model's BOS token when it has one (Gu et al. probe with the first 64 tokens of natural text)."""
    from interp.tasks.texts import pydoc_text

    if n_prompts < 1 or n_tokens < 2:
        raise InputError(f"need n_prompts >= 1 and n_tokens >= 2, got {n_prompts} and {n_tokens}")
    from interp.inputs import start_token_id

    tok = model.tokenizer
    bos = start_token_id(tok)
    body = n_tokens - (bos is not None)
    need = n_prompts * body
    text = pydoc_text(offset_chars + need * 8)[offset_chars:]
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if ids.numel() < need:
        raise InputError(f"the pydoc text has only {ids.numel()} tokens; ask for fewer than {n_prompts}×{n_tokens}")
    chunks = ids[:need].view(n_prompts, body)  # [n_prompts body]
    if bos is not None:
        chunks = torch.cat([torch.full((n_prompts, 1), bos), chunks], 1)
    return chunks


__all__ = ["key_importance", "alpha", "queries_seeing", "align_left", "sink_rate", "hidden_sinks", "sink_token_mask",
           "sink_frame", "summarize", "SinkSummary", "massive_activations", "analyze_sinks", "check_threshold",
           "DEFAULT_EPS", "DEFAULT_TAU", "DEFAULT_MASSIVE_RATIO", "probe_tokens"]
