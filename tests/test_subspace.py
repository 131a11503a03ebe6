"""Subspace patching (SubspacePatch, the mlp_post site): invariants and bad input on tiny models."""
import pytest
import torch

import interp
from interp import CaptureSpec, HeadId, Patch, ScaleHeadOutput, SubspacePatch, ZeroAblate
from interp.errors import InputError, InterpError
from interp.intervene.compile import interchange, interchange_rotated
from _util import random_tokens as _tokens


pytestmark = pytest.mark.usefixtures("one_thread")


def _onb(d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].float()


@pytest.fixture(scope="module")
def pair(tiny_llama):
    base, src = _tokens(seed=0), _tokens(seed=1)
    sites = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post", "z")
    _, cap = interp.run(tiny_llama, src, capture=CaptureSpec(sites=sites))
    _, cap_base = interp.run(tiny_llama, base, capture=CaptureSpec(sites=sites))
    return base, src, cap, cap_base


def test_mlp_post_is_the_input_of_w_out(tiny_llama, pair):
    base, _, _, cap_base = pair
    post, out = cap_base["mlp_post", 1], cap_base["mlp_out", 1]  # [batch pos d_mlp], [batch pos d_model]
    w_out = tiny_llama.blocks[1].mlp.W_out  # [d_mlp d_model]
    assert post.shape[-1] == tiny_llama.cfg.d_mlp
    torch.testing.assert_close(post @ w_out, out, atol=1e-5, rtol=1e-5)
    # the bridge's hook (capture) and the hf engine's hook (run) see the same tensor
    cap = interp.capture(tiny_llama, base, CaptureSpec(sites=("mlp_post",), layers=(1,)))
    torch.testing.assert_close(cap["mlp_post", 1], post, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("site,width", [("resid_pre", 48), ("resid_mid", 48), ("resid_post", 48), ("attn_out", 48),
                                        ("mlp_out", 48), ("mlp_post", 96), ("z", 8)])
def test_full_basis_equals_full_patch(tiny_llama, pair, site, width):
    base, _, cap, _ = pair
    head = HeadId(1, 4) if site == "z" else None
    full = interp.run(tiny_llama, base, [Patch(site, 1, head, positions=(-1, 3), source=cap)])
    sub = interp.run(tiny_llama, base, [SubspacePatch(site, 1, _onb(width, width), cap, head=head, positions=(-1, 3))])
    torch.testing.assert_close(sub, full, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(full, interp.run(tiny_llama, base), atol=1e-3)  # the patch does something


@pytest.mark.parametrize("site", ["resid_post", "mlp_post", "z"])
def test_source_equal_to_base_is_bit_for_bit_identity(tiny_llama, pair, site):
    base, _, _, cap_base = pair
    width = {"mlp_post": 96, "z": 8}.get(site, 48)
    e = SubspacePatch(site, 0, _onb(width, 3), cap_base, head=HeadId(0, 2) if site == "z" else None)
    assert torch.equal(interp.run(tiny_llama, base, [e]), interp.run(tiny_llama, base))


def test_composes_with_other_edits_and_edited(tiny_llama, pair):
    base, _, cap, _ = pair
    e = SubspacePatch("resid_post", 0, _onb(48, 2), cap, positions=(-1,))
    other = [ZeroAblate(HeadId(1, 0)), ScaleHeadOutput(HeadId(1, 3), 0.5)]
    both = interp.run(tiny_llama, base, [e] + other)
    assert not torch.allclose(both, interp.run(tiny_llama, base, other), atol=1e-4)
    with interp.edited(tiny_llama, other):
        torch.testing.assert_close(interp.run(tiny_llama, base, [e]), both, atol=1e-5, rtol=1e-5)
    with interp.edited(tiny_llama, [e]):
        with torch.no_grad():
            via_bridge = tiny_llama(base)
    torch.testing.assert_close(via_bridge, interp.run(tiny_llama, base, [e]), atol=1e-5, rtol=1e-5)


def test_k1_closed_form_equals_rotation_form():
    g = torch.Generator().manual_seed(3)
    w, u = torch.randn(5, 7, 31, generator=g, dtype=torch.float64), torch.randn(5, 7, 31, generator=g, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(31, 31, generator=g, dtype=torch.float64))[0]
    v = rot[:, 0]
    closed = w + ((u @ v) - (w @ v))[..., None] * v
    torch.testing.assert_close(interchange_rotated(w, u, rot, 1), closed, atol=1e-12, rtol=0)
    torch.testing.assert_close(interchange(w, u, v[:, None]), closed, atol=1e-12, rtol=0)
    torch.testing.assert_close(interchange(w, u, rot[:, :4]), interchange_rotated(w, u, rot, 4), atol=1e-12, rtol=0)


def test_w_out_null_space_direction_at_mlp_post_leaves_logits_unchanged(tiny_llama, pair):
    base, _, cap, _ = pair
    w_out = tiny_llama.blocks[1].mlp.W_out.detach().double()  # [d_mlp d_model]; d_mlp 96 > d_model 48
    null = torch.linalg.svd(w_out.T, full_matrices=True)[2][w_out.shape[1]:]  # [48 d_mlp]: v·W_out = 0
    v = null[:3].T.float()
    ref = interp.run(tiny_llama, base)
    out = interp.run(tiny_llama, base, [SubspacePatch("mlp_post", 1, v, cap)])
    assert float((out - ref).abs().max()) < 1e-5
    # …while the row-space direction of the same size does move them
    row = torch.linalg.qr(w_out)[0][:, :3].float()
    assert float((interp.run(tiny_llama, base, [SubspacePatch("mlp_post", 1, row, cap)]) - ref).abs().max()) > 1e-3


def test_orthonormalize_and_bad_input(tiny_llama, pair):
    base, _, cap, _ = pair
    raw = torch.randn(48, 2)
    with pytest.raises(InputError, match="not orthonormal"):
        SubspacePatch("resid_post", 0, raw, cap)
    e = SubspacePatch("resid_post", 0, raw, cap, orthonormalize=True)
    torch.testing.assert_close(e.basis.T @ e.basis, torch.eye(2), atol=1e-5, rtol=0)
    bad = {
        "wrong dimension": lambda: interp.run(tiny_llama, base, [SubspacePatch("resid_post", 0, _onb(40, 2), cap)]),
        "k > d": lambda: SubspacePatch("resid_post", 0, torch.randn(4, 5), cap),
        "no layer": lambda: SubspacePatch("resid_post", None, _onb(48, 1), cap),
        "layer out of range": lambda: interp.run(tiny_llama, base, [SubspacePatch("resid_post", 7, _onb(48, 1), cap)]),
        "head on a site without heads": lambda: interp.run(tiny_llama, base, [SubspacePatch("mlp_post", 1, _onb(96, 1), cap, head=2)]),
        "k = 0": lambda: SubspacePatch("resid_post", 0, torch.zeros(48, 0), cap),
        "unsupported site": lambda: SubspacePatch("pattern", 0, _onb(8, 1), cap),
        "no source": lambda: SubspacePatch("resid_post", 0, _onb(48, 1), None),
        "source of another length": lambda: interp.run(tiny_llama, _tokens(n=7), [SubspacePatch("resid_post", 0, _onb(48, 1), cap)]),
    }
    for what, fn in bad.items():
        with pytest.raises(InterpError) as info:
            fn()
        assert "\n" not in str(info.value), what


# --- DAS -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    """A 2-layer Llama whose answer (token 10 vs 11) reads one residual direction ``v`` after layer 0: layer 1
    writes nothing (o_proj, down_proj zero) and the unembedding is ±40·v for tokens 10/11, 0 elsewhere."""
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("llama", seed=5)
    v = torch.randn(48, generator=torch.Generator().manual_seed(0))
    v /= v.norm()
    with torch.no_grad():
        hf.model.layers[1].self_attn.o_proj.weight.zero_()
        hf.model.layers[1].mlp.down_proj.weight.zero_()
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[10] = 40 * v
        hf.lm_head.weight[11] = -40 * v
    return interp.from_hf(hf, tok, "planted"), v


def test_das_recovers_a_planted_direction(planted):
    from interp.analyze.subspace import Interchanger, das

    model, v = planted
    g = torch.Generator().manual_seed(1)
    base, src = torch.randint(3, 259, (160, 8), generator=g), torch.randint(3, 259, (160, 8), generator=g)
    base[:, 0] = src[:, 0] = 1
    proj = Interchanger(model, base, src, "resid_post", 0, (-1,)).src[:, 0] @ v  # the source's reading of v
    target = torch.where(proj > 0, 10, 11)
    sub = das(model, base, src, "resid_post", 0, -1, target)
    assert abs(float(sub.direction() @ v)) > 0.95
    assert sub.basis.shape == (48, 1) and sub.n_test == 32 and len(sub.curve) == 30 * 7
    assert sub.curve.loss.iloc[-7:].mean() < sub.curve.loss.iloc[:7].mean()
    assert sub.accuracy > sub.baseline and sub.ci[0] <= sub.accuracy <= sub.ci[1]


def test_interchanger_fast_path_matches_run_with_subspace_patch(tiny_llama, pair):
    from interp.analyze.subspace import Interchanger

    base, src, cap, _ = pair
    b = _onb(96, 2)
    for site, width, layer in (("mlp_post", 96, 1), ("resid_post", 48, 0), ("z", 8, 1)):
        bb = b if width == 96 else _onb(width, 2)
        head = 3 if site == "z" else None
        ix = Interchanger(tiny_llama, base, src, site, layer, (-1, 2), head=head)
        ref = interp.run(tiny_llama, base, [SubspacePatch(site, layer, bb, cap, head=head, positions=(-1, 2))])[:, -1]
        torch.testing.assert_close(ix.with_basis(bb), ref, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(ix.with_basis(None), interp.run(tiny_llama, base, [Patch(site, layer, head, (-1, 2), source=cap)])[:, -1],
                                   atol=2e-5, rtol=1e-5)


def test_das_bad_input_is_one_line(tiny_llama):
    from interp.analyze.subspace import das

    base, src = ["ab cd", "ef gh"], ["ij kl", "mn op"]
    bad = {
        "dim=0": dict(dim=0),
        "dim=d": dict(dim=48),
        "target of two tokens": dict(target=["xy", "z"]),
        "lengths differ": dict(source=["ij kl", "mn opq"]),
        "no layer": dict(layer=None),
        "head on a site without heads": dict(head=1),
        "wrong target count": dict(target=[5]),
        "epochs": dict(epochs=0),
    }
    for what, kw in bad.items():
        args = dict(base=base, source=src, site="resid_post", layer=0, positions=-1, target=[5, 6], epochs=1)
        args.update(kw)
        with pytest.raises(InterpError) as info:
            das(tiny_llama, **args)
        assert "\n" not in str(info.value), what


# --- the illusion report ---------------------------------------------------------------------------------------

def _readout_model(kind: str):
    """A 2-layer Llama whose layers write nothing, so the last token's residual stream is its embedding. Tokens
    20-29 are class A, 30-39 class B: ``E[t] = c ± α·e1 + noise``. ``faithful``: the answer (token 10 vs 11)
    reads e1, so the class decides it. ``illusion``: it reads e2, on which every embedding sits at the same β
    (dormant), so every prompt answers 10, and only a direction mixing e1 and e2 can flip it."""
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("llama", seed=7)
    e = torch.linalg.qr(torch.randn(48, 48, generator=torch.Generator().manual_seed(3)))[0].T  # rows orthonormal
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hf.lm_head.weight.zero_()
        read = e[1] if kind == "illusion" else e[0]
        hf.lm_head.weight[10], hf.lm_head.weight[11] = 3 * read, -3 * read
        for t in range(20, 40):
            sign = 1.0 if t < 30 else -1.0
            noise = (torch.randn(44, generator=g) * 0.3) @ e[4:]
            hf.model.embed_tokens.weight[t] = 2.0 * e[3] + sign * 2.0 * e[0] + 1.0 * e[1] + noise
    return interp.from_hf(hf, tok, f"readout-{kind}"), e


def _pairs(n=60):
    g = torch.Generator().manual_seed(5)
    base = torch.cat([torch.full((n, 1), 1), torch.randint(40, 200, (n, 3), generator=g),
                      torch.randint(20, 40, (n, 1), generator=g)], 1)
    src = base.clone()
    src[:, -1] = torch.where(base[:, -1] < 30, torch.randint(30, 40, (n,), generator=g), torch.randint(20, 30, (n,), generator=g))
    return base, src, ["A" if int(t) < 30 else "B" for t in base[:, -1]]


def test_report_flags_a_constructed_illusion():
    from interp.analyze.subspace import Subspace, subspace_report

    model, e = _readout_model("illusion")
    base, src, classes = _pairs()
    v = (e[0] + e[1]) / 2 ** 0.5
    sub = Subspace(v[:, None], "resid_post", 1, (-1,), model="readout-illusion")
    answers = torch.tensor([[10, 11]] * len(base))
    target = torch.tensor([11] * len(base))  # the source's class is the other one: the flip is the source-implied answer
    a_to_b = [i for i, c in enumerate(classes) if c == "A"]  # the mixed direction flips A→B (B→A only raises the LD)
    rep = subspace_report(model, sub, base, src, answers, target, span=e[1][:, None], classes=classes, rows=a_to_b)
    f = rep.frame.set_index(["condition", "metric"])["value"]
    assert rep.illusion_suspected and bool(rep.frame["illusion_suspected"].all())
    assert f["subspace", "fldd"] > 100 and abs(f["null", "fldd"]) < 1e-3 and abs(f["whole", "fldd"]) < 5
    assert f["row", "patched_outside"] == 1.0
    torch.testing.assert_close(f["row", "norm"] ** 2 + f["null", "norm"] ** 2, 1.0, atol=1e-5, rtol=0)
    assert rep.figure.data


def test_report_passes_a_constructed_faithful_direction():
    from interp.analyze.subspace import Subspace, subspace_report

    model, e = _readout_model("faithful")
    base, src, classes = _pairs()
    sub = Subspace(e[0][:, None], "resid_post", 1, (-1,), model="readout-faithful")
    a = torch.tensor([[10, 11] if c == "A" else [11, 10] for c in classes])
    rep = subspace_report(model, sub, base, src, a, a[:, 1], span=e[0][:, None], classes=classes)
    f = rep.frame.set_index(["condition", "metric"])["value"]
    assert not rep.illusion_suspected
    assert f["subspace", "fldd"] > 100 and f["whole", "fldd"] > 100 and f["row", "auc_row"] == 1.0
    assert f["row", "patched_outside"] < 0.1
    assert f["subspace", "interchange_accuracy"] == 1.0


def test_row_and_null_parts_sum_to_v(tiny_llama):
    from interp.analyze.subspace import connected_span, split

    v = _onb(96, 1).double()
    q = connected_span(tiny_llama, "mlp_post", 1)
    row, null = split(v, q)
    torch.testing.assert_close(row + null, v, atol=1e-12, rtol=0)
    w_out = tiny_llama.blocks[1].mlp.W_out.detach().double()
    assert float((null.T @ w_out).abs().max()) < 1e-5  # the null part is causally disconnected
    q_heads = connected_span(tiny_llama, "resid_post", 0, heads=[HeadId(1, 0), HeadId(1, 4)], weight="k")
    assert q_heads.shape == (48, 16)


def test_das_within_a_subspace_stays_in_it(planted):
    from interp.analyze.subspace import complement, das

    model, v = planted
    q = v[:, None]
    null = complement(q)  # everything orthogonal to the planted direction
    g = torch.Generator().manual_seed(2)
    base, src = torch.randint(3, 259, (24, 8), generator=g), torch.randint(3, 259, (24, 8), generator=g)
    sub = das(model, base, src, "resid_post", 0, -1, torch.full((24,), 10), within=null, epochs=2)
    assert abs(float(sub.direction() @ v)) < 1e-5 and abs(float(sub.direction().norm()) - 1) < 1e-5


@pytest.mark.parametrize("site,width,head", [("resid_post", 48, None), ("resid_pre", 48, None), ("mlp_post", 96, None),
                                             ("attn_out", 48, None), ("z", 8, 4), ("resid_post", 48, "last")])
@pytest.mark.parametrize("chunk", [32, 3])
def test_last_token_fast_path_equals_the_full_run_with_padding(tiny_llama, site, width, head, chunk, monkeypatch):
    """The fast path (only the last token's row above the patch) against running every position, on ragged rows;
    with chunk 3 the no-grad recording runs in two row chunks that are merged."""
    import interp.analyze.subspace as subspace
    from interp.analyze.subspace import Interchanger

    monkeypatch.setattr(subspace, "CHUNK", chunk)

    base = ["ab cd ef", "gh ij", "kl mn op q", "rs"]
    src = ["tu vw xy", "zz yy", "xx ww vv u", "ts"]
    layer = 1 if head == "last" else 0
    ix = Interchanger(tiny_llama, base, src, site, layer, (-1,), head=None if head == "last" else head)
    assert ix.kv is not None
    b = _onb(width, 2)
    fast = ix.with_basis(b)
    ix.kv = None  # the reference: every layer above on every position
    torch.testing.assert_close(fast, ix.with_basis(b), atol=2e-5, rtol=1e-5)
    assert not torch.allclose(fast, ix.clean_logits, atol=1e-4)  # the patch does something
    torch.testing.assert_close(ix.clean_logits, interp.run(tiny_llama, base)[torch.arange(4), ix.end], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("site,width", [("mlp_post", 192), ("resid_post", 48)])
def test_bridge_engine_gpt2(site, width):
    """GPT-2 runs through the bridge's hooks (no hf fast path): the edit and the Interchanger agree there too."""
    from interp.analyze.subspace import Interchanger

    model = interp.tiny_model("gpt2")
    base, src = _tokens(seed=3), _tokens(seed=4)
    _, cap = interp.run(model, src, capture=CaptureSpec(sites=(site,), layers=(0,)))
    b = _onb(width, 2)
    ref = interp.run(model, base, [SubspacePatch(site, 0, b, cap, positions=(-1,))])
    ix = Interchanger(model, base, src, site, 0, (-1,))
    assert ix.stack is None
    torch.testing.assert_close(ix.with_basis(b), ref[:, -1], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(ref, interp.run(model, base), atol=1e-4)
