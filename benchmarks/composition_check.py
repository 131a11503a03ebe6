"""Composition scores on SmolLM2 against TransformerLens 4.3.

TL's whole-model ``bridge.all_composition_scores`` broadcasts every head pair at d_model × d_head and was killed
for memory here (exit 137); this compares ours (all 270 heads, d_head Gram matrices) with TL's own
``utilities.matrix.composition_scores`` on a slice of layers, the function that call uses.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/composition_check.py
"""
import time, torch, interp
torch.set_num_threads(1)
from transformer_lens import FactoredMatrix
from transformer_lens.utilities.matrix import composition_scores as tl_comp
from interp.analyze.weights import composition_matrix
m = interp.load_model("smollm2-135m")
L = [18, 20, 22, 23]  # a slice of layers: TL's whole-model call materializes ~10 GB here and is killed
def st(name, kv):
    w = torch.stack([getattr(m.blocks[l].attn, name).detach() for l in L])
    return w.repeat_interleave(3, dim=1) if kv else w
Wq, Wk, Wv, Wo = st("W_Q", False), st("W_K", True), st("W_V", True), st("W_O", False)
left = FactoredMatrix(Wv, Wo)
for k in "qkv":
    t = time.perf_counter(); ours = composition_matrix(m, k); t1 = time.perf_counter() - t
    right = {"q": FactoredMatrix(Wq, Wk.transpose(-2, -1)), "k": FactoredMatrix(Wq, Wk.transpose(-2, -1)).T, "v": FactoredMatrix(Wv, Wo)}[k]
    with torch.no_grad():
        tl = tl_comp(left, right).double()  # [4 9 4 9]
    sub = ours[L][:, :, L]
    err = max(float((sub[i, :, j] - tl[i, :, j]).abs().max()) for i in range(4) for j in range(4) if L[j] > L[i])
    print(k, "max|ours-TL| on later pairs of layers", L, err, "ours (all 270 heads) s", round(t1, 2), "max score", float(ours.max()), flush=True)
