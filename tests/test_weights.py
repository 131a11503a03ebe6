"""Head circuits from the weights: QK/OV factored circuits, composition scores (vs TransformerLens 4.3), weight scores."""
import pytest
import torch

import interp
from interp import HeadId
from interp.analyze.weights import composition_matrix, composition_scores, ov_circuit, qk_circuit, weight_scores
from interp.errors import InterpError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_composition_scores_equal_transformerlens(arch, kind):
    model = interp.tiny_model(arch, num_hidden_layers=3) if arch == "llama" else interp.tiny_model(arch, n_layer=3)
    ours = composition_matrix(model, kind)
    tl = model.all_composition_scores(kind.upper()).detach().double()
    assert float((ours - tl).abs().max()) < 1e-4
    assert float(ours[0, :, 1:].min()) > 0  # every later pair scored


def test_composition_frame_is_tidy_and_only_later_receivers(tiny_llama):
    df = composition_scores(tiny_llama, "q")
    assert len(df) == 6 * 6 and (df["layer"] > df["sender_layer"]).all()
    assert set(df["metric"]) == {"q_composition"}
    with pytest.raises(InterpError):
        composition_scores(tiny_llama, "x")


def test_factored_circuits_equal_the_materialized_products(tiny_llama):
    h = HeadId(1, 5)  # GQA: reads KV group 1
    w_e, w_u = tiny_llama.W_E.detach(), tiny_llama.W_U.detach()
    a = tiny_llama.blocks[1].attn
    qk = w_e @ a.W_Q[5] @ a.W_K[1].T @ w_e.T
    ov = w_e @ a.W_V[1] @ a.W_O[5] @ w_u
    fq, fo = qk_circuit(tiny_llama, h), ov_circuit(tiny_llama, h)
    assert fq.A.shape == (259, 8) and fo.B.shape == (8, 259)  # low rank: never d_vocab²
    torch.testing.assert_close(qk_circuit(tiny_llama, h, materialize=True), qk.detach(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fo.AB, ov.detach(), atol=1e-6, rtol=1e-4)
    with pytest.raises(InterpError):
        qk_circuit(tiny_llama, HeadId(2, 0))


def test_weight_scores_on_constructed_heads():
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("gpt2", seed=1)
    d, dh = 48, 8
    with torch.no_grad():
        attn = hf.transformer.h[0].attn
        w = attn.c_attn.weight  # [d_model 3·d_model]: q | k | v
        # head 0: W_Q = W_K (same-token), W_V W_O = projection onto its span then W_U = W_Eᵀ (copying, tied)
        basis = torch.linalg.qr(torch.randn(d, dh))[0]
        w[:, 0:dh] = basis * 3
        w[:, d:d + dh] = basis * 3
        w[:, 2 * d:2 * d + dh] = basis
        attn.c_proj.weight[0:dh] = basis.T
    model = interp.from_hf(hf, tok, "constructed")
    df = weight_scores(model, n_tokens=200).set_index(["layer", "head", "metric"])["value"]
    assert df[0, 0, "ov_copying"] > 0.99  # tied GPT-2: W_E·P·W_Eᵀ is positive semidefinite
    assert df[0, 0, "qk_same_token"] > df[0, 1, "qk_same_token"]
    assert (0, 0, "qk_prev_token") in df.index  # learned positions: the positional score exists
