"""The attention viewer: block downsampling against its loop reference, capture/model builders, long prompts
within the size budget, the attention_rows hook, and the atlas report using it."""
import json
import re

import numpy as np
import pytest
import torch

import interp
from interp import CaptureSpec
from interp.errors import InputError
from interp.plot.viewer import (_block_downsample_reference, _encode, attention_viewer, block_downsample, head_metrics,
                                viewer_from_capture, viewer_from_model)
from interp.schema import make_frame


def _causal(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, n, generator=g).masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return s.softmax(-1).double().numpy()


@pytest.mark.parametrize("n, block", [(97, 16), (17, 4), (64, 64), (5, 2), (1025, 33)])
def test_block_downsample_matches_reference_and_keeps_rows_summing_to_one(n, block):
    a = _causal(n, seed=n)
    fast = block_downsample(a, block)
    np.testing.assert_allclose(fast, _block_downsample_reference(a, block), atol=1e-12)
    np.testing.assert_allclose(fast.sum(1), 1.0, atol=1e-6)  # fp32 softmax rows


def test_rows_are_stored_to_their_last_nonzero_weight():
    rows = _encode(_causal(6))
    assert [len(r) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert abs(sum(rows[3]) - 1000) <= 2


def test_a_4096_token_prompt_is_downsampled_and_stays_under_20_mb(tmp_path):
    n = 4096
    base = torch.from_numpy(_causal(n)).float()
    pats = {("long", f"L0H{h}"): base for h in range(9)}  # one layer of SmolLM2; each head is encoded on its own
    v = attention_viewer(pats, {"long": [f" t{i}" for i in range(n)]})
    assert v.prompts[0].block == 16 and v.prompts[0].patterns["L0H0"].shape == (256, 256)
    assert "4096 tokens downsampled to 256 blocks of 16 tokens" in v.describe()
    path = v.save(tmp_path / "long.html")
    size = path.stat().st_size
    assert size < 20e6, size
    assert "downsampled to 256 blocks" in path.read_text()


def test_viewer_from_capture_drops_padding_and_keeps_each_heads_pattern(tiny_llama):
    cap = interp.capture(tiny_llama, ["a longer prompt here", "short"], CaptureSpec(sites=("pattern",), layers=(1,), heads=(0, 2)))
    v = viewer_from_capture(cap, tiny_llama.tokenizer, prompt_ids=["long", "short"])
    assert v.heads == ["L1H0", "L1H2"]
    n = int(cap.attention_mask[1].sum())
    short = v.prompts[1]
    assert len(short.tokens) == n and short.patterns["L1H2"].shape == (n, n)
    np.testing.assert_allclose(short.patterns["L1H2"], cap.get("pattern", 1, 2)[1, :n, :n].double().numpy(), atol=1e-6)
    with pytest.raises(InputError, match="3 prompt ids for 2"):
        viewer_from_capture(cap, tiny_llama.tokenizer, prompt_ids=["a", "b", "c"])


def test_html_carries_prompts_heads_metrics_and_one_init(tiny_llama):
    df = make_frame([{"model": "m", "task": "t", "layer": 0, "head": 1, "metric": "induction", "value": 0.75}])
    v = viewer_from_model(tiny_llama, {"p1": "hello there", "p2": "the cat sat"}, [(0, 1), (1, 3)], metrics=head_metrics(df))
    page = v.to_html(include_plotlyjs=False)
    data = json.loads(re.search(r"<script type='application/json' class='iv-data'>(.*?)</script>", page).group(1))
    assert [p["id"] for p in data["prompts"]] == ["p1", "p2"] and data["heads"] == ["L0H1", "L1H3"]
    assert data["metrics"]["L0H1"] == [["induction", "0.75"]] and data["metrics"]["L1H3"] == []
    assert "plotly.js v" not in page and page.count("window.interpAttentionViewer('") == 1


def test_attention_rows_hook_serves_long_prompts(tiny_llama):
    """A rows function that reads the eager pattern must give what the capture path gives."""
    calls = []

    def rows_from_capture(model, tokens, heads, queries):
        calls.append(len(queries))
        cap = interp.capture(model, tokens, CaptureSpec(sites=("pattern",), layers=tuple({l for l, _ in heads})))
        return {f"L{l}H{h}": cap.get("pattern", l, h)[0, queries] for l, h in heads}

    text = "a prompt that is long enough to be split into blocks"
    via_hook = viewer_from_model(tiny_llama, [text], [(1, 0)], max_tokens=8, attention_rows=rows_from_capture)
    plain = viewer_from_model(tiny_llama, [text], [(1, 0)], max_tokens=8)
    assert calls and via_hook.prompts[0].block > 1
    np.testing.assert_allclose(via_hook.prompts[0].patterns["L1H0"], plain.prompts[0].patterns["L1H0"], atol=1e-6)


def test_long_prompts_take_the_fused_rows_and_equal_the_capture(tiny_llama):
    text = "a prompt that is long enough to be split into blocks"
    fused = viewer_from_model(tiny_llama, [text], [(1, 0), (0, 3)], max_tokens=8)  # rows from attention_rows
    cap = interp.capture(tiny_llama, text, CaptureSpec(sites=("pattern",), layers=(0, 1)))
    captured = viewer_from_capture(cap, tiny_llama.tokenizer, [(1, 0), (0, 3)], max_tokens=8)
    assert fused.prompts[0].block == captured.prompts[0].block > 1
    for head in ("L1H0", "L0H3"):
        np.testing.assert_allclose(fused.prompts[0].patterns[head], captured.prompts[0].patterns[head], atol=1e-5)


def test_head_metrics_names_conditions_only_when_several():
    df = make_frame([{"model": "m", "task": "t", "layer": 2, "head": 0, "metric": m, "value": v, "condition": c}
                     for m, v, c in [("induction", 0.5, "rand"), ("previous_token", 0.1, "prose"), ("previous_token", 0.3, "rand")]])
    assert head_metrics(df) == {"L2H0": {"induction": 0.5, "previous_token · prose": 0.1, "previous_token · rand": 0.3}}


def test_bad_patterns_are_one_line_errors():
    with pytest.raises(InputError, match="has shape"):
        attention_viewer({("p", "L0H0"): np.eye(3)}, {"p": ["a", "b"]})
    with pytest.raises(InputError, match="no tokens for prompt"):
        attention_viewer({("p", "L0H0"): np.eye(2)}, {"q": ["a", "b"]})
    with pytest.raises(InputError, match="same heads"):
        attention_viewer({("p", "L0H0"): np.eye(2), ("q", "L0H1"): np.eye(2)}, {"p": ["a", "b"], "q": ["a", "b"]})
