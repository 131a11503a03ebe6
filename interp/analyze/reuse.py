"""Circuit reuse between two tasks (Merullo et al. 2024, methods.md §8).

Each circuit's head set is the union over path-patching stages of the top ``top_frac`` (2%) heads per stage by
``|effect|`` (the rule :func:`interp.analyze.circuits.discover_circuit` keeps, re-applied here so a different
fraction can be asked for). Reported:

- ``overlap``: the paper's figure, the shared heads as a fraction of the *first* circuit's heads (|A∩B|/|A|;
  the paper: 25 of IOI's 32 heads = 78%). ``overlap_b`` is the same relative to the second circuit;
- ``jaccard``: |A∩B|/|A∪B|;
- ``spearman``: rank correlation of per-head importance (max |path-patching effect| over stages, 0 where a
  head was not patched) over every head patched in either task; ``spearman_atp``: the same for the AtP* total
  effects ``|atp:z|`` over all heads, when both runs have them;
- per head: ``shared``, ``a_only`` or ``b_only`` (the task-specific heads).
"""
from __future__ import annotations

import math

import pandas as pd

from interp.errors import InputError
from interp.schema import make_frame
from interp.types import HeadId


def top_heads(patching: pd.DataFrame, top_frac: float, n_heads_total: int, min_effect: float = 0.0) -> dict[HeadId, int]:
    """``{head: first stage it is in the top}`` over stages of a circuit's tidy patching frame."""
    k = max(1, math.ceil(top_frac * n_heads_total - 1e-9))
    pp = patching[patching["metric"] == "path_patch"]
    out: dict[HeadId, int] = {}
    for cond in sorted(pp["condition"].unique(), key=lambda c: int(str(c).replace("stage", ""))):
        rows = pp[pp["condition"] == cond]
        rows = rows[rows["value"].abs() >= min_effect].sort_values("value", key=abs, ascending=False).head(k)
        for l, h in zip(rows["layer"], rows["head"]):
            out.setdefault(HeadId(int(l), int(h)), int(str(cond).replace("stage", "")))
    return out


def _importance(patching: pd.DataFrame) -> pd.Series:
    pp = patching[patching["metric"] == "path_patch"]
    return pp.assign(v=pp["value"].abs()).groupby(["layer", "head"])["v"].max()


def circuit_reuse(a: pd.DataFrame, b: pd.DataFrame, *, n_heads_total: int, top_frac: float = 0.02,
                  min_effect: float = 0.0, names: tuple[str, str] | None = None) -> pd.DataFrame:
    """Tidy reuse table of two circuits' patching frames (``patching.parquet``): summary metrics with
    ``layer = head = -1`` and one ``membership`` row per head of either circuit (``condition`` = shared/a_only/b_only)."""
    models = {str(a["model"].iloc[0]) if len(a) else "?", str(b["model"].iloc[0]) if len(b) else "?"}
    if len(models) != 1:
        raise InputError(f"the two circuits come from different models ({' and '.join(sorted(models))}); compare circuits of one model")
    model = models.pop()
    na, nb = names or (str(a["task"].iloc[0]), str(b["task"].iloc[0]))
    A, B = top_heads(a, top_frac, n_heads_total, min_effect), top_heads(b, top_frac, n_heads_total, min_effect)
    if not A or not B:
        raise InputError("a circuit has no path-patching results; run `interp circuits` to completion first")
    shared = set(A) & set(B)
    ia, ib = _importance(a), _importance(b)
    idx = ia.index.union(ib.index)
    both = pd.DataFrame({"a": ia.reindex(idx, fill_value=0.0), "b": ib.reindex(idx, fill_value=0.0)})
    summary = {"overlap": len(shared) / len(A), "overlap_b": len(shared) / len(B),
               "jaccard": len(shared) / len(set(A) | set(B)), "heads_a": len(A), "heads_b": len(B),
               "heads_shared": len(shared), "heads_union": len(set(A) | set(B)),
               "spearman": float(both["a"].corr(both["b"], method="spearman")) if len(both) > 2 else float("nan")}
    za, zb = (x[x["metric"] == "atp:z"].set_index(["layer", "head"])["value"].abs() for x in (a, b))
    if len(za) and len(zb):
        summary["spearman_atp"] = float(za.corr(zb.reindex(za.index), method="spearman"))
    rows = [{"layer": -1, "head": -1, "metric": k, "value": float(v)} for k, v in summary.items() if v == v]
    for h in sorted(set(A) | set(B)):
        cond = "shared" if h in shared else ("a_only" if h in A else "b_only")
        rows.append({"layer": h.layer, "head": h.head, "metric": "membership", "value": 1.0, "condition": cond,
                     "stage_a": A.get(h, -1), "stage_b": B.get(h, -1)})
    df = make_frame(pd.DataFrame(rows).assign(model=model, task=f"{na}|{nb}"))
    df.attrs.update(summary=summary, tasks=(na, nb))
    return df


__all__ = ["circuit_reuse", "top_heads"]
