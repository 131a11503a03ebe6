import pytest
import torch

import interp
from interp import CaptureSpec
from interp.errors import InputError, UnknownNameError
from interp.types import SITES, HeadId, hook_name

ALL_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "z", "result", "pattern")


def _expected(model, name, b, p):
    c = model.cfg
    n_kv = getattr(c, "n_key_value_heads", None) or c.n_heads
    return {"q": (b, p, c.n_heads, c.d_head), "k": (b, p, n_kv, c.d_head), "v": (b, p, n_kv, c.d_head),
            "z": (b, p, c.n_heads, c.d_head), "result": (b, p, c.n_heads, c.d_model),
            "pattern": (b, c.n_heads, p, p)}.get(name, (b, p, c.d_model))


def test_capture_shapes_and_equality_with_run_with_cache(tiny):
    texts = ["hello there", "a somewhat longer prompt"]
    cap = interp.capture(tiny, texts, CaptureSpec(sites=ALL_SITES))
    b, p = cap.tokens.shape
    assert b == 2 and cap.attention_mask[0].sum() < p  # uneven texts were padded
    _, cache = tiny.run_with_cache(cap.tokens, attention_mask=cap.attention_mask)
    for name in ALL_SITES:
        for layer in range(tiny.cfg.n_layers):
            got = cap[name, layer]
            assert tuple(got.shape) == _expected(tiny, name, b, p), name
            if name != "result":
                assert torch.allclose(got, cache[hook_name(name, layer)].cpu(), atol=1e-6), name


def test_result_sums_to_attn_out(tiny_llama):
    cap = interp.capture(tiny_llama, "the cat sat", CaptureSpec(sites=("result", "attn_out")))
    assert torch.allclose(cap["result", 1].sum(2), cap["attn_out", 1], atol=1e-5)


def test_selection_of_layers_heads_positions(tiny_llama):
    cap = interp.capture(tiny_llama, "the cat sat on the mat", CaptureSpec(sites=("z", "k", "pattern"), layers=(1,), heads=(0, 5), positions=(-1, 2)))
    assert set(cap.tensors) == {("z", 1), ("k", 1), ("pattern", 1)}
    assert cap["z", 1].shape[1:3] == (2, 2)
    assert cap["k", 1].shape[2] == 2  # heads 0 and 5 read KV groups 0 and 1
    assert cap["pattern", 1].shape[1:3] == (2, 2)
    full = interp.capture(tiny_llama, "the cat sat on the mat", CaptureSpec(sites=("z",)))
    assert torch.equal(cap.get("z", 1, 5)[:, 0], full["z", 1][:, -1, 5])


def test_token_tensor_and_left_padding(tiny_llama):
    toks = tiny_llama.to_tokens("abc")
    a = interp.capture(tiny_llama, toks, CaptureSpec(sites=("resid_post",)))
    b = interp.capture(tiny_llama, toks[0], CaptureSpec(sites=("resid_post",)))
    assert torch.equal(a["resid_post", 1], b["resid_post", 1])
    left = interp.capture(tiny_llama, ["abc", "abcdefg"], CaptureSpec(sites=("resid_post",)), padding_side="left")
    assert left.attention_mask[0, 0] == 0 and left.attention_mask[0, -1] == 1
    assert torch.allclose(left["resid_post", 1][0, -1], a["resid_post", 1][0, -1], atol=1e-4)


@pytest.mark.smollm
def test_capture_on_smollm2(smollm2):
    cap = interp.capture(smollm2, ["The capital of France is", "Hi"], CaptureSpec(sites=("pattern", "z", "k"), layers=(3, 16)))
    b, p = cap.tokens.shape
    assert cap["pattern", 16].shape == (b, 9, p, p) and cap["k", 3].shape == (b, p, 3, 64)
    _, cache = smollm2.run_with_cache(cap.tokens, attention_mask=cap.attention_mask, names_filter=lambda n: n.startswith("blocks.16.attn.hook_"))
    assert torch.allclose(cap["z", 16], cache["blocks.16.attn.hook_z"], atol=1e-6)


def test_bad_inputs(tiny_llama):
    with pytest.raises(UnknownNameError, match="valid sites are: resid_pre"):
        CaptureSpec(sites=("resid_mdi",))
    with pytest.raises(InputError, match="layer 7 out of range"):
        interp.capture(tiny_llama, "x", CaptureSpec(layers=(7,)))
    with pytest.raises(InputError, match="head 6 out of range"):
        interp.capture(tiny_llama, "x", CaptureSpec(sites=("z",), heads=(6,)))
    with pytest.raises(InputError, match="prompt 0 is empty"):
        interp.capture(tiny_llama, "   ", CaptureSpec())
    with pytest.raises(InputError, match="no prompts"):
        interp.capture(tiny_llama, [], CaptureSpec())
    with pytest.raises(InputError, match="position 99 out of range"):
        interp.capture(tiny_llama, "abc", CaptureSpec(positions=(99,)))
    with pytest.raises(InputError, match="token ids must lie"):
        interp.capture(tiny_llama, torch.tensor([[1, 5000]]), CaptureSpec())


def test_head_id_roundtrip():
    for h in [HeadId(0, 0), HeadId(9, 6), HeadId(29, 8)]:
        assert HeadId.parse(str(h)) == h
    assert HeadId.parse("9.6") == HeadId(9, 6)
    assert sorted([HeadId(2, 1), HeadId(1, 5)]) == [HeadId(1, 5), HeadId(2, 1)]
    with pytest.raises(InputError, match="cannot parse head"):
        HeadId.parse("head nine")
    assert all(s.hook.startswith("blocks.{l}.") for s in SITES.values())
