"""Retrieval heads: the copy-paste rule, ROUGE filter, span search, NIAH prompts, and SmolLM2's behaviour."""
import numpy as np
import pandas as pd
import pytest
import torch

from interp.analyze.retrieval import (NiahConfig, answer_rows, copy_paste_scores, masking_grid, random_heads,
                                      retrieval_scores, rouge1_recall, run_niah, top_heads)
from interp.errors import InputError
from interp.plot.niah import answer_row_view, answer_rows_figure
from interp.plot.rowview import top_keys
from interp.tasks.niah import Needle, build_prompt, find_span, load_needles
from interp.types import HeadId

NEEDLE_MASS = 0.3


def test_copy_paste_rule_counts_span_hits_with_matching_token():
    prompt = torch.tensor([5, 6, 7, 8, 9, 7])
    span = (1, 4)  # tokens 6 7 8
    # 2 steps, 1 layer, 3 heads: head0 copies correctly twice; head1 attends in-span but the token differs;
    # head2 attends to a 7 outside the span
    argmax = torch.tensor([[[1, 2, 5]], [[2, 1, 5]]])
    score = copy_paste_scores(argmax, [6, 7], prompt, span)
    assert score.tolist() == [[pytest.approx(2 / 3), 0.0, 0.0]]


def test_copy_paste_repeated_tokens_count_again():
    prompt = torch.tensor([1, 4, 4, 4, 2])
    score = copy_paste_scores(torch.tensor([[[1]], [[2]], [[1]]]), [4, 4, 4], prompt, (1, 4))
    assert score.item() == pytest.approx(1.0)  # three hits of 1/3, even though the same key repeats


def test_copy_paste_bad_span():
    with pytest.raises(InputError, match="outside the prompt"):
        copy_paste_scores(torch.zeros(1, 1, 1, dtype=torch.long), [1], torch.tensor([1, 2]), (1, 5))


def test_rouge1_recall_and_filter():
    assert rouge1_recall("Eat a sandwich, then sit.", "eat a sandwich and sit") == pytest.approx(4 / 5)
    assert rouge1_recall("the the", "the cat the") == pytest.approx(2 / 3)
    assert rouge1_recall("nothing", "blue harbor seventeen") == 0.0


def test_span_search_90_percent_cover():
    answer = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    prompt = [1, 2] + [10, 11, 12, 13, 14, 15, 16, 17, 18, 99] + [3]  # 9/10 = 90%: not > 90%
    assert find_span(prompt, answer) is None
    prompt = [1, 2, 3] + answer + [4]
    assert find_span(prompt, answer) == (3, 13)
    assert find_span([7, 10, 11, 12, 13], [10, 11, 12]) == (1, 4)  # first window wins


def test_niah_prompt_and_bad_inputs(tiny_llama):
    tok = tiny_llama.tokenizer
    needle = Needle("The code word is purple falcon.", "What is the code word?", "purple falcon")
    p = build_prompt(tok, needle, 400, 50, haystack="Some words here. More words there. " * 40)
    assert abs(len(p.tokens) - 400) <= 2
    # byte tokens: the set-cover rule may start one token early (" purple falco" covers 10/11 of the set)
    assert "purple falco" in tok.decode(p.tokens[slice(*p.answer_span)])
    with pytest.raises(InputError, match="outside \\[0, 100\\]"):
        build_prompt(tok, needle, 400, 120)
    with pytest.raises(InputError, match="longer than the context"):
        build_prompt(tok, needle, 40, 50)
    with pytest.raises(InputError, match="not found in its needle"):
        Needle("The code word is purple falcon.", "q?", "green eagle")
    with pytest.raises(InputError, match="haystack text is empty"):
        build_prompt(tok, needle, 400, 50, haystack="   ")
    with pytest.raises(InputError, match="outside \\[0, 100\\]"):
        NiahConfig(depths=(-5,))


def test_random_heads_exclude_top_retrieval_heads():
    scores = pd.DataFrame({"layer": [l for l in range(10) for _ in range(10)], "head": list(range(10)) * 10,
                           "metric": "retrieval_score", "value": [float(i) for i in range(100)]})
    top = set(top_heads(scores, 10))
    assert HeadId(9, 9) in top
    for seed in range(3):
        assert not set(random_heads(scores, 5, seed, 10, 10)) & top
    assert random_heads(scores, 5, 0, 10, 10) == random_heads(scores, 5, 0, 10, 10)


@pytest.mark.smollm
def test_smollm2_retrieval_heads_and_masking(smollm2, tmp_path):
    needles = load_needles()[:2]
    cfg = NiahConfig(lengths=(600,), depths=(50,), max_new_tokens=24)
    base = run_niah(smollm2, needles, cfg)
    assert base["kept"].all()  # SmolLM2 retrieves at this length
    scores = retrieval_scores(smollm2, base)
    frac = (scores["value"] > 0.1).mean()
    assert 0 < frac < 0.15  # sparse (measured ≈ 9% at 1k tokens over 6 samples)
    grid = masking_grid(smollm2, needles[:1], NiahConfig(lengths=(600,), depths=(50,), max_new_tokens=24), scores,
                        top_k=(10,), random_k=(10,), draws=1, baseline=base[base.needle_id == 0])
    recall = grid.groupby("condition")["rouge1_recall"].mean()
    assert recall["none"] > 0.9 and recall["random10"] > 0.9 and recall["top10"] < 0.5

    # the report's rows at the answer tokens (fused path): proper distributions; the top heads read the needle
    heads = top_heads(scores, 3)
    ar = answer_rows(smollm2, needles[0], 600, 50.0, base.iloc[0]["response"], heads)
    n_ans = len(ar.answer_tokens)
    assert ar.rows.shape == (3, n_ans, ar.prompt_tokens + n_ans - 1)
    assert torch.allclose(ar.rows.sum(-1), torch.ones(3, n_ans), atol=1e-4)
    s, e = ar.needle_span
    on_needle = ar.rows[:, :, s:e].sum(-1).amax(1)  # [head]: best answer token's mass on the needle's answer
    assert bool((on_needle > NEEDLE_MASS).all()), on_needle
    fig = answer_rows_figure(ar)
    assert len(fig.data) == 3 and len(fig.layout.shapes) == 3
    # the report's row view: exact rows over every key, the needle shaded; each top head's top-k list at its best
    # answer token (what the report lists beside the row) holds a key of the needle's answer span
    rv = answer_row_view(ar)
    assert len(rv.tokens) == ar.rows.shape[-1] and ("needle", s, e) in [(g.name, g.start, g.end) for g in rv.segments]
    best = ar.rows[:, :8, s:e].sum(-1).argmax(1)  # [head]
    shown = [q for q, _ in rv.queries]  # query positions, the answer token with most needle mass first
    assert shown[0] == ar.prompt_tokens - 1 + int(ar.rows[:, :8, s:e].sum(-1).mean(0).argmax())
    for i, h in enumerate(ar.heads):
        row = rv.rows[str(h)][shown.index(ar.prompt_tokens - 1 + int(best[i]))].copy()
        np.testing.assert_allclose(row, ar.rows[i, int(best[i])].numpy(), atol=1e-7)  # exact, not thousandths
        assert any(s <= int(k) < e for k in top_keys(row, rv.top_k)), (h, top_keys(row, rv.top_k))


def test_chunked_prefill_matches_one_shot_and_edits_apply(tiny_llama):
    from interp.attnstats.decode import generate_with_stats
    from interp.edits import RetrievalMask

    toks = tiny_llama.to_tokens("the cat sat on the mat and looked at the hat " * 3)[0]
    a = generate_with_stats(tiny_llama, toks, max_new_tokens=6, prefill_chunk=7)
    b = generate_with_stats(tiny_llama, toks, max_new_tokens=6, prefill_chunk=10_000)
    assert a.generated == b.generated and torch.equal(a.argmax, b.argmax)
    assert a.argmax.shape == (6, 2, 6) and int(a.argmax.max()) < len(toks) + 6
    masked = generate_with_stats(tiny_llama, toks, max_new_tokens=6, edits=[RetrievalMask((HeadId(1, 0),))])
    assert (masked.max_weight[:, 1, 0] < a.max_weight[:, 1, 0] + 1e-6).all()  # uniform rows have the smallest max
    with pytest.raises(InputError, match="one non-empty prompt"):
        generate_with_stats(tiny_llama, toks.view(1, -1).repeat(2, 1))
