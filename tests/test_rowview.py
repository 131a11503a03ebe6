"""The row view: exact rows against the captured pattern (odd lengths, GQA), top-k against its sort reference,
segments and bad input, and the report size at 10 heads × 8192 keys."""
import numpy as np
import pytest
import torch

import interp
from interp import CaptureSpec
from interp.errors import InputError
from interp.plot.rowview import Segment, _top_keys_reference, row_view, row_view_from_model, token_runs, top_keys


def synthetic_view(n: int = 8192, heads: int = 10, needle: tuple[int, int] = (5000, 5004), seed: int = 0):
    """Rows shaped like a retrieval head's at the answer token: a sink on key 0, most mass on the needle span."""
    rng = np.random.default_rng(seed)
    words = [" the", " cat", " sat", " on", " a", " mat", ".", "\n", " <b>", " and", " Paris"]
    tokens = ["<s>"] + [words[i % len(words)] for i in rng.integers(0, 10**6, n - 1)]
    s, e = needle
    tokens[s:e] = [" The", " magic", " word", " is"][: e - s]
    rows = {}
    for h in range(heads):
        r = rng.random(n) ** 8
        r[0] = 0.3 * r.sum()
        r[s:e] = r.sum() * np.array([0.6, 0.2, 0.1, 0.05])[: e - s]
        rows[f"L{h}H{h % 3}"] = r / r.sum()
    return row_view(rows, tokens, [(n - 1, "answer token")], segments=[("needle", s, e)])


@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (33, 10), (100, 100), (101, 250)])
def test_top_keys_match_the_sort_reference_with_ties(n, k):
    rng = np.random.default_rng(n)
    row = np.round(rng.random(n), 1)  # many ties: the earlier key ranks first
    assert top_keys(row, k).tolist() == _top_keys_reference(row, k).tolist()


@pytest.mark.parametrize("n_tokens", [5, 37])
def test_rows_from_the_model_equal_the_captured_pattern(tiny_llama, n_tokens):
    """Fused rows at odd lengths, GQA (tiny llama shares K/V across heads), negative and positive queries."""
    assert tiny_llama.cfg.n_key_value_heads < tiny_llama.cfg.n_heads
    toks = torch.randint(3, 250, (1, n_tokens), generator=torch.Generator().manual_seed(n_tokens))
    heads = [(0, 1), (1, 3)]
    v = row_view_from_model(tiny_llama, toks, heads, [-1, (2, "third")], segments=[("needle", 1, 3)])
    cap = interp.capture(tiny_llama, toks, CaptureSpec(sites=("pattern",), layers=(0, 1)))
    for l, h in heads:
        want = cap.get("pattern", l, h)[0, [n_tokens - 1, 2]].numpy()
        np.testing.assert_allclose(v.rows[f"L{l}H{h}"], want, atol=2e-5)
    assert [q for q, _ in v.queries] == [n_tokens - 1, 2] and v.queries[1][1] == "third"
    assert [s.name for s in v.segments] == ["first token", "needle"] and len(v.tokens) == n_tokens


def test_top_keys_segments_and_hover_text_reach_the_page():
    v = synthetic_view(n=300, heads=2, needle=(100, 104))
    d = v._data()
    assert d["top"]["L0H0"][0][0][0] == 100 and v.segment_of(100) == "needle" and v.segment_of(0) == "first token"
    assert d["tokens"][101] == " magic" and " &lt;b&gt;" in d["tokens"]  # token text is escaped for plotly's labels
    assert [s[0] for s in d["segments"]] == ["first token", "needle"]
    page = v.to_html(include_plotlyjs=False)
    assert page.count("window.interpRowView('") == 1 and "plotly.js v" not in page and "needle (100–103)" in page
    assert token_runs([5, 9, 9, 9, 5, 9], 9) == [Segment("image", 1, 4), Segment("image", 5, 6)]


@pytest.mark.parametrize("kwargs,message", [
    ({"segments": [("needle", 5, 99)]}, "outside the 10 keys"),
    ({"top_k": 0}, "top_k must be at least 1"),
    ({"queries": [1, 2]}, "expected [queries keys] = [2, 10]"),
])
def test_bad_row_view_input_is_one_line(kwargs, message):
    args = {"rows": {"L0H0": np.full(10, 0.1)}, "tokens": list("abcdefghij"), "queries": [9], **kwargs}
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        row_view(**args)
    assert "\n" not in str(e.value)


def test_bad_queries_and_heads_from_the_model(tiny_llama):
    toks = torch.randint(3, 250, (1, 6))
    with pytest.raises(InputError, match="outside the prompt's 6 tokens"):
        row_view_from_model(tiny_llama, toks, [(0, 0)], [6])
    with pytest.raises(InputError, match="at least one head"):
        row_view_from_model(tiny_llama, toks, [], [0])


def test_ten_heads_of_8192_keys_stay_under_2_mb(tmp_path):
    from interp.plot.export import write_report

    path = write_report(tmp_path / "report.html", "rows", [("rows", synthetic_view())])
    size = path.stat().st_size
    assert size < 2_000_000, size  # the data; plotly.js is the folder's plotly.min.js
    assert "plotly.js v" not in path.read_text() and (tmp_path / "plotly.min.js").exists()
