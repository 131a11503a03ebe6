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
    T = to_batch(model, clean).tokens.shape[1]
    end = torch.full((n,), T - 1)
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
