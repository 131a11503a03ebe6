"""Circuit discovery, reuse and repair: invariants on a tiny model, robust facts on SmolLM2, bad input."""
import pandas as pd
import pytest
import torch

from interp.analyze.circuits import (CircuitParams, CircuitTask, discover_circuit, path_patch_senders,
                                     mean_ablated_metric)
from interp.tasks.ioi import LogitDiff
from interp.types import HeadId

torch.set_num_threads(1)

CLEAN = ["The cat sat on a mat.", "A dog ran to the sea", "Big red fox jumps up."]
BAD = ["The bat sat in a hat.", "A hog ran to the lea", "Big tan cow jumps up."]


def _toy_task(model, clean=CLEAN, bad=BAD):
    from interp.inputs import to_batch

    n = len(clean)
    end = to_batch(model, clean).attention_mask.sum(1) - 1
    metric = LogitDiff(torch.tensor([70, 80, 90][:n]), torch.tensor([71, 81, 91][:n]), end)
    pos = {"end": end, "io": torch.full((n,), 3), "s1": torch.full((n,), 2), "s2": torch.full((n,), 6)}
    return CircuitTask("toy", list(clean), list(bad), metric, pos, [0] * n, ((70, 70), (80, 80)))


def test_batched_path_patching_matches_reference(tiny_llama):
    from interp.analyze.patching import path_patching

    m = _toy_task(tiny_llama)
    senders = [HeadId(0, h) for h in range(6)]
    vals, clean, bad, _ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders, [("q", 1, 2), ("v", 1, 0)])
    ref = path_patching(tiny_llama, m.clean, m.corrupted, m.metric, receivers=[("q", HeadId(1, 2)), ("v", __import__("interp").KVGroup(1, 0))], senders=senders)
    ref = ref[ref["metric"] == "path_patch"]["value"].to_numpy()
    ours = [(v - clean) / (bad - clean) for v in vals]
    assert torch.allclose(torch.tensor(ours), torch.tensor(ref, dtype=torch.float32), atol=1e-4)
    vals, clean, bad, _ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders + [HeadId(1, 0)])
    ref = path_patching(tiny_llama, m.clean, m.corrupted, m.metric, senders=senders + [HeadId(1, 0)])
    ref = ref[ref["metric"] == "path_patch"]["value"].to_numpy()
    assert torch.allclose(torch.tensor([(v - clean) / (bad - clean) for v in vals]), torch.tensor(ref, dtype=torch.float32), atol=1e-4)


def test_every_sender_frozen_has_zero_effect(tiny_llama):
    from interp.hooks import CaptureSpec
    from interp.intervene.run import run

    m = _toy_task(tiny_llama)
    _, cap = run(tiny_llama, m.clean, capture=CaptureSpec(sites=("z",)))
    clean = float(m.metric(cap.logits))
    senders = [HeadId(0, h) for h in range(6)]
    for recv in (None, [("q", 1, 0), ("k", 1, 1), ("v", 1, 1)]):
        vals, *_ = path_patch_senders(tiny_llama, m.clean, m.corrupted, m.metric, senders, recv, caches=(cap, cap))
        assert max(abs(v - clean) for v in vals) < 1e-5


def test_head_with_zero_w_o_has_zero_effect_at_every_stage():
    import interp
    from interp.intervene.hf import plain

    model = interp.tiny_model("llama")
    with plain(model) as hf, torch.no_grad():
        hf.model.layers[0].self_attn.o_proj.weight[:, 3 * 8:4 * 8] = 0.0
    m = _toy_task(model)
    senders = [HeadId(0, h) for h in range(6)]
    for recv in (None, [("q", 1, h) for h in range(6)] + [(s, 1, g) for s in "kv" for g in range(2)]):
        vals, clean, bad, _ = path_patch_senders(model, m.clean, m.corrupted, m.metric, senders, recv)
        assert abs(vals[3] - clean) < 1e-5
        assert max(abs(v - clean) for v in vals) > 1e-4  # the other heads do matter


def test_discovery_reuse_and_repair_on_tiny(tiny_llama):
    from interp.analyze.circuits import faithfulness
    from interp.analyze.repair import repair_edits
    from interp.analyze.reuse import circuit_reuse
    from interp.hooks import CaptureSpec
    from interp.intervene.run import run

    m = _toy_task(tiny_llama)
    params = CircuitParams(n_stages=2, top_frac=0.2, min_effect=0.0, keep=4)
    circ = discover_circuit(tiny_llama, m, params)
    assert set(circ.heads["stage"]) <= {1, 2} and len(circ.heads) >= 1
    assert circ.info["exact_runs"] + circ.info["exact_runs_saved"] >= 12 and circ.info["exact_runs_saved"] > 0
    assert set(circ.heads["class"]) <= set(__import__("interp.analyze.circuits").analyze.circuits.CLASSES)
    f = faithfulness(tiny_llama, m, circ.head_ids())
    assert set(f) >= {"full", "circuit", "empty", "faithfulness"}
    r = circuit_reuse(circ.patching, circ.patching, n_heads_total=12, top_frac=0.2)
    s = r.attrs["summary"]
    assert s["overlap"] == 1.0 and s["jaccard"] == 1.0 and (r[r["metric"] == "membership"]["condition"] == "shared").all()
    from interp.inputs import to_batch

    n_keys = to_batch(tiny_llama, m.clean).tokens.shape[1]
    wrong = [torch.tensor([2, 3, 1]), torch.tensor([5, 6, 4])]
    edits = repair_edits([HeadId(1, 2), HeadId(0, 5)], wrong, n_keys)
    _, cap = run(tiny_llama, m.clean, edits, capture=CaptureSpec(sites=("pattern",)))
    right = torch.tensor([4, 1, 2])
    for h in (HeadId(1, 2), HeadId(0, 5)):
        row = cap["pattern", h.layer][:, h.head, -1]  # [batch key_pos]
        assert torch.allclose(row.sum(-1), torch.ones(3), atol=1e-6)
        assert (row[torch.arange(3), right] == 0).all()
        assert torch.allclose(row[torch.arange(3), wrong[0]], torch.full((3,), 0.5))
