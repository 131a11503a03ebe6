"""Table 1 of Makelov, Lange & Nanda (methods.md §11) on SmolLM2-135M: IOI name position (ABB vs BAB) at END.

Rows: clean LD; the whole resid_post patch at ``--layer``; DAS there (dim 1); DAS restricted to the null space
of the name movers' W_Q (``--movers``, from ``interp circuits``); DAS in the MLP hidden space (mlp_post) at
``--mlp-layer``; its row-space-only and null-space-only parts; the whole MLP patch. DAS trains on ``--pairs``
pairs of all four order combinations (seed 0; 20% held out); the table is on ``--eval`` fresh pairs (seed 1)
whose orders differ (ABB→BAB and BAB→ABB, the paper's test). Accuracy is the interchange accuracy (the
source-implied name beats the other name) with n, a 95% Wilson interval and the majority-class baseline.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/subspace_ioi.py --out benchmarks/subspace_ioi.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--mlp-layer", type=int, default=20)
    ap.add_argument("--movers", nargs="+", default=["L23H3", "L23H0"])
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--eval", type=int, default=200, help="fresh pairs generated; the orders differ in half of them")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    a = ap.parse_args(argv)
    if a.pairs < 10 or a.eval < 4 or a.epochs < 1 or a.threads < 1:
        print("error: need --pairs >= 10, --eval >= 4, --epochs >= 1, --threads >= 1", file=sys.stderr)
        return 2
    import torch

    import interp
    from interp.analyze.subspace import Interchanger, complement, connected_span, das, subspace_report
    from interp.tasks.ioi import position_pairs
    from interp.types import HeadId

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = interp.load_model("smollm2-135m")
    train = position_pairs(model, a.pairs, seed=0)
    ev = position_pairs(model, a.eval, seed=1)
    keep = [i for i in range(len(ev)) if bool(ev.flips[i])]
    eb, es = [ev.base[i] for i in keep], [ev.source[i] for i in keep]
    ea, et, eo = ev.answers[keep], ev.target[keep], [ev.base_order[i] for i in keep]
    movers = [HeadId.parse(h) for h in a.movers]
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)
    common = dict(candidates=train.answers, epochs=a.epochs)
    rows, reports = [], {}

    def report(sub, ix, **kw):
        return subspace_report(model, sub, eb, es, ea, et, classes=eo, rows=list(range(len(keep))), task="ioi", interchanger=ix, **kw)

    def add(name, rep, cond):
        f = rep.frame.set_index(["condition", "metric"])
        acc = f.loc[(cond, "interchange_accuracy")]
        rows.append({"intervention": name, "accuracy": float(acc["value"]), "ci_low": float(acc["ci_low"]), "ci_high": float(acc["ci_high"]),
                     "baseline": float(acc["baseline"]), "n": int(acc["n"]), "ld": float(f.loc[(cond, "logit_diff"), "value"]),
                     "fldd": float(f.loc[(cond, "fldd"), "value"])})

    # residual stream
    ix_train = Interchanger(model, train.base, train.source, "resid_post", a.layer, (-1,))
    ix_eval = Interchanger(model, eb, es, "resid_post", a.layer, (-1,))
    log("resid prefixes ready")
    sub = das(model, train.base, train.source, "resid_post", a.layer, -1, train.target, interchanger=ix_train, **common)
    log(f"DAS resid_post.{a.layer}: held-out acc {sub.accuracy:.3f} (n={sub.n_test}), loss {sub.curve.loss.iloc[0]:.3f} -> {sub.curve.loss.iloc[-1]:.3f}")
    rep = report(sub, ix_eval, heads=movers)
    reports["resid"] = rep
    f = rep.frame.set_index(["condition", "metric"])["value"]
    rows.append({"intervention": "clean", "ld": float(f["clean", "logit_diff"]), "n": len(keep)})
    add(f"full resid_post.{a.layer} patch", rep, "whole")
    add(f"DAS resid_post.{a.layer}", rep, "subspace")
    resid_norms = {"in_movers_WQ_span": float(f["row", "norm"]), "outside": float(f["null", "norm"])}
    null = complement(connected_span(model, "resid_post", a.layer, heads=movers))
    sub_null = das(model, train.base, train.source, "resid_post", a.layer, -1, train.target, within=null, interchanger=ix_train, **common)
    log(f"DAS in the null space of {a.movers} W_Q: held-out acc {sub_null.accuracy:.3f}")
    add(f"DAS resid_post.{a.layer}, null space of movers' W_Q", report(sub_null, ix_eval, heads=movers), "subspace")
    del ix_train, ix_eval

    # MLP hidden space
    ix_train = Interchanger(model, train.base, train.source, "mlp_post", a.mlp_layer, (-1,))
    ix_eval = Interchanger(model, eb, es, "mlp_post", a.mlp_layer, (-1,))
    log("mlp prefixes ready")
    sub_mlp = das(model, train.base, train.source, "mlp_post", a.mlp_layer, -1, train.target, interchanger=ix_train, **common)
    log(f"DAS mlp_post.{a.mlp_layer}: held-out acc {sub_mlp.accuracy:.3f}")
    rep = report(sub_mlp, ix_eval)
    reports["mlp"] = rep
    add(f"DAS MLP{a.mlp_layer} direction", rep, "subspace")
    add(f"MLP{a.mlp_layer} row-space part only", rep, "row")
    add(f"MLP{a.mlp_layer} null-space part only", rep, "null")
    add(f"full MLP{a.mlp_layer} patch", rep, "whole")
    fm = rep.frame.set_index(["condition", "metric"])["value"]
    summary = {"table": rows, "mlp_norms": {"row": float(fm["row", "norm"]), "null": float(fm["null", "norm"])},
               "mlp_auc_row": float(fm.get(("row", "auc_row"), float("nan"))),
               "mlp_patched_outside": float(fm.get(("row", "patched_outside"), float("nan"))),
               "resid_norms": resid_norms, "illusion_suspected": {"mlp": reports["mlp"].illusion_suspected,
                                                                   "resid": reports["resid"].illusion_suspected},
               "das_heldout": {"resid": [sub.accuracy, sub.n_test], "resid_null": [sub_null.accuracy, sub_null.n_test],
                               "mlp": [sub_mlp.accuracy, sub_mlp.n_test]},
               "settings": vars(a), "seconds": time.perf_counter() - t0, "load_average": os.getloadavg()}
    print(f"{'intervention':48s} {'acc':>6s} {'95% CI':>15s} {'base':>5s} {'n':>4s} {'LD':>7s} {'FLDD':>7s}")
    for r in rows:
        ci = f"[{r['ci_low']:.3f},{r['ci_high']:.3f}]" if "ci_low" in r else ""
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "-"
        fl = f"{r['fldd']:.1f}%" if "fldd" in r else "-"
        print(f"{r['intervention']:48s} {acc:>6s} {ci:>15s} {r.get('baseline', float('nan')):5.2f} {r['n']:4d} {r['ld']:7.3f} {fl:>7s}")
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, default=str))
    if a.out:
        from interp.io import write_json

        write_json(a.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
