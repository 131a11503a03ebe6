import math

import pytest
import torch

from interp.analyze.sinks import (align_left, alpha, analyze_sinks, hidden_sinks, key_importance, massive_activations,
                                  probe_tokens, queries_seeing, sink_frame, sink_rate, summarize)
from interp.attnstats import attention_stats
from interp.edits import ScaleSegment
from interp.errors import InputError
from interp.schema import validate_frame
from interp.types import HeadId


def _key_mass(A: torch.Tensor) -> torch.Tensor:
    """``A [batch layer head q k]`` → column sums ``[batch layer head k]``."""
    return A.sum(-2)


def uniform_causal(T: int) -> torch.Tensor:
    return torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]  # A[i, j] = 1/(i+1)


def test_uniform_causal_alpha_first_is_harmonic_over_T():
    T = 64
    km = _key_mass(uniform_causal(T)[None, None, None])
    a = key_importance(km, torch.ones(1, T))
    H = sum(1 / i for i in range(1, T + 1))
    assert float(a[0, 0, 0, 0]) == pytest.approx(H / T, rel=1e-6)
    assert float(a[0, 0, 0, 0]) == pytest.approx(0.0741, abs=1e-4)
    assert float(sink_rate(a, torch.ones(1, T))["per_position"][0]) == 0.0


def test_all_bos_heads_give_sink_rate_one_at_first_position_only():
    T, L, H = 16, 3, 4
    A = torch.zeros(T, T)
    A[:, 0] = 1
    km = _key_mass(A.expand(2, L, H, T, T))
    a = key_importance(km, torch.ones(2, T))
    r = sink_rate(a, torch.ones(2, T))
    assert float(r["per_position"][0]) == 1.0 and float(r["per_position"][1:].sum()) == 0.0
    assert torch.equal(r["per_layer_position"][:, 0], torch.ones(L))


def test_padding_aware_query_counts_and_alignment():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert queries_seeing(mask).tolist() == [[4, 3, 2, 1], [0, 0, 2, 1]]
    assert queries_seeing(mask, causal=False).tolist() == [[4, 4, 4, 4], [0, 0, 2, 2]]
    x, valid = align_left(torch.arange(8.0).view(2, 4), mask)
    assert x.tolist() == [[0, 1, 2, 3], [6, 7, 0, 0]] and valid.tolist() == [[True] * 4, [True, True, False, False]]


def test_hidden_sinks_exclude_first_token_and_respect_min_queries():
    T = 8
    A = uniform_causal(T) * 0.2
    A[:, 0] += 0.4
    A[3:, 3] += 0.4  # a hidden sink at key 3
    A = A / A.sum(-1, keepdim=True)
    a = key_importance(_key_mass(A[None, None, None]), torch.ones(1, T))
    hid = hidden_sinks(a, torch.ones(1, T), tau=0.1)
    assert hid[0, 0, 0, 0].item() is False and hid[0, 0, 0, 3].item() is True
    strict = hidden_sinks(a, torch.ones(1, T), tau=0.1, min_queries=T - 3)
    assert strict[0, 0, 0].nonzero().flatten().tolist() == [3]


@pytest.mark.parametrize("kw", [{"eps": 0.0}, {"eps": 1.0}, {"eps": -0.2}, {"eps": 1.5}])
def test_sink_threshold_outside_open_unit_interval(kw):
    a = torch.zeros(1, 1, 1, 4)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        sink_rate(a, torch.ones(1, 4), **kw)


def test_bad_tau_and_missing_key_mass(tiny_llama):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        hidden_sinks(torch.zeros(1, 1, 1, 4), torch.ones(1, 4), tau=1.0)
    with pytest.raises(InputError, match="key_mass=True"):
        alpha(attention_stats(tiny_llama, "no key mass here"))
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        analyze_sinks(tiny_llama, "abc", eps=2.0)


def test_forced_bos_model_has_sink_rate_one(tiny_llama):
    """A tiny model whose every head is made a BOS head with an edit (first-token logit bias log 1e12)."""
    edits = [ScaleSegment(HeadId(l, h), "first", 1e12) for l in range(2) for h in range(6)]
    st = attention_stats(tiny_llama, ["forced sinks everywhere", "a second prompt"], key_mass=True, edits=edits)
    a = alpha(st)
    r = sink_rate(a, st.attention_mask)
    assert float(r["per_position"][0]) == 1.0 and float(r["per_position"][1:].max()) == 0.0
    assert torch.allclose(align_left(a, st.attention_mask)[0][..., 0], torch.ones(2, 2, 6), atol=1e-5)


def test_uniform_model_alpha_matches_harmonic(tiny_llama):
    from interp.edits import MixUniform

    st = attention_stats(tiny_llama, "abcdefghijklmno", key_mass=True,
                         edits=[MixUniform(HeadId(l, h), 1.0) for l in range(2) for h in range(6)])
    T = st.tokens.shape[1]
    a = alpha(st)
    assert torch.allclose(a[0, :, :, 0], torch.full((2, 6), sum(1 / i for i in range(1, T + 1)) / T), atol=1e-5)


def test_left_padding_matches_unpadded(tiny_llama):
    texts = ["a longer prompt here", "short"]
    st = attention_stats(tiny_llama, texts, key_mass=True, padding_side="left")
    one = attention_stats(tiny_llama, texts[1], key_mass=True)
    a_pad, valid = align_left(alpha(st), st.attention_mask)
    n = int(valid[1].sum())
    assert torch.allclose(a_pad[1, ..., :n], alpha(one)[0], atol=1e-5)


def test_sink_frame_schema_and_summary(tiny_llama):
    st = attention_stats(tiny_llama, ["one prompt", "another prompt here"], key_mass=True)
    df = validate_frame(sink_frame(st, max_positions=8, tokenizer=tiny_llama.tokenizer))
    assert {"alpha_first", "sink_first", "first_token_mass", "hidden_sink_count", "alpha", "sink_rate"} <= set(df.metric)
    overall = df[(df.metric == "sink_rate") & (df.layer == -1)]
    assert overall.position.max() == 7 and ((overall.value >= 0) & (overall.value <= 1)).all()
    s = summarize(df)
    assert 0 <= s.sink_rate_first <= 1 and len(s.sink_rate_first_by_layer) == 2


def test_massive_activations_rows(tiny_llama):
    df = validate_frame(massive_activations(tiny_llama, ["hello there", "hi"], max_positions=4))
    assert set(df[df.metric == "hidden_norm_median"].layer) == {0, 1, 2}  # L + 1 hidden states
    assert set(df[df.metric == "key_norm"].condition) == {"first", "other"}
    with pytest.raises(InputError, match="ratio"):
        massive_activations(tiny_llama, "x", ratio=0.5)


@pytest.mark.smollm
def test_smollm_first_token_sink_in_most_heads_past_layer_1(smollm2):
    df = analyze_sinks(smollm2, probe_tokens(smollm2, n_prompts=2, n_tokens=64))
    late = df[(df.layer >= 2) & (df["head"] >= 0)]
    alpha_first = late[late.metric == "alpha_first"].value
    mass = late[late.metric == "first_token_mass"].value
    assert (alpha_first > 0.3).mean() > 0.5
    assert (mass > 0.3).mean() > 0.5
    s = summarize(df)
    assert s.sink_rate_first > 0.5 and s.strongest[0][1] > 0.9


@pytest.mark.smollm
def test_smollm_massive_activation_on_first_token(smollm2):
    df = massive_activations(smollm2, probe_tokens(smollm2, n_prompts=1, n_tokens=32))
    first = df[df.metric == "massive_first"].set_index("layer").value
    assert first.loc[12:28].min() == 1.0  # the first token is massive through the middle layers
    kn = df[df.metric == "key_norm"].pivot_table(index="layer", columns="condition", values="value")
    assert (kn.loc[12:, "first"] < kn.loc[12:, "other"]).all()  # sinks via direction, not key norm


def test_atlas_has_sink_and_entropy_metrics(tiny_llama, tmp_path):
    import pandas as pd

    from interp.jobs import AtlasConfig, run_atlas

    paths = run_atlas(tiny_llama, tmp_path / "atlas", AtlasConfig(seq_len=8, text_tokens=32, view_tokens=16), progress=False)
    df = validate_frame(pd.read_parquet(paths["heads"]))
    assert {"sink_rate", "alpha_first", "hidden_sink_count", "normalized_entropy", "first_token_mass"} <= set(df.metric)
    assert "Sink rate" in paths["report"].read_text()


def _saved_tiny(tmp_path):
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("llama", seed=1)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


@pytest.mark.parametrize("verb,files", [("sinks", {"sinks.parquet", "report.html", "plotly.min.js", "run.json", "manifest.json"}),
                                        ("entropy", {"entropy.parquet", "report.html", "plotly.min.js", "run.json", "manifest.json"})])
def test_cli_sinks_and_entropy_write_reports(verb, files, tmp_path):
    import pandas as pd

    from interp.cli import main

    main([verb, "--model", _saved_tiny(tmp_path), "--out", str(tmp_path / "out"), "--prompts", "2", "--tokens", "12"])
    assert {p.name for p in (tmp_path / "out").iterdir() if p.name != ".interp-lock"} == files
    html = (tmp_path / "out" / "report.html").read_text()
    assert "plotly.js v" not in html and html.count("<script src='plotly.min.js'") == 1  # the folder's one copy
    validate_frame(pd.read_parquet(tmp_path / "out" / next(f for f in files if f.endswith(".parquet"))))


@pytest.mark.parametrize("args,msg", [(["sinks", "--eps", "1.5"], "strictly between 0 and 1"),
                                      (["sinks", "--tau", "0"], "strictly between 0 and 1"),
                                      (["entropy", "--collapse", "0.95"], "--collapse"),
                                      (["sinks", "--tokens", "1"], "at least 2")])
def test_cli_sinks_bad_input_exit_2(args, msg, tmp_path, capsys):
    from interp.cli import main

    with pytest.raises(SystemExit) as e:
        main(args + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and msg in err and len(err.splitlines()) == 1


def test_act_quirk_drops_first_element_of_sink_set():
    T = 40
    A = uniform_causal(T) * 0.1
    A[2:, 2] += 0.6  # position 0 is not a sink here; keys 2 and 4 are
    A[4:, 4] += 0.6
    A = A / A.sum(-1, keepdim=True)
    a = key_importance(_key_mass(A[None, None, None]), torch.ones(1, T))
    assert float(a[0, 0, 0, 0]) < 0.1
    default = hidden_sinks(a, torch.ones(1, T), tau=0.1, min_queries=2)[0, 0, 0].nonzero().flatten().tolist()
    quirk = hidden_sinks(a, torch.ones(1, T), tau=0.1, min_queries=2, act_quirk=True)[0, 0, 0].nonzero().flatten().tolist()
    assert default == [2, 4] and quirk == [4]


def test_cli_sinks_on_text_file(tmp_path):
    from interp.cli import main

    f = tmp_path / "t.txt"
    f.write_text("Some text to analyze for sinks.\nAnd a second line.")
    main(["sinks", "--model", _saved_tiny(tmp_path), "--out", str(tmp_path / "out"), "--text", str(f), "--tokens", "16"])
    import json

    assert json.loads((tmp_path / "out" / "run.json").read_text())["inputs"]["tokens_per_prompt"] == 16
