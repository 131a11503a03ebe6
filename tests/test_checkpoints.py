"""Checkpoints: load_model keeps the checkpoint dtype (bf16 stays bf16), statistics stay fp32, device_map and
dtype are checked in one line (also in the CLI, exit 2, before the model loads)."""
import pytest
import torch

from interp.attnstats import attention_stats
from interp.cli import main
from interp.errors import InputError, UnsupportedModelError
from interp.models import load_model


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    """A tiny random Llama saved in bf16, with its tokenizer."""
    from interp.models.tiny import build_tiny

    d = tmp_path_factory.mktemp("bf16")
    hf, tok = build_tiny("llama", seed=3)
    hf.to(torch.bfloat16).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_bf16_checkpoint_stays_bf16_and_stats_are_fp32(bf16_dir):
    m = load_model(bf16_dir, device="cpu", bridge=False)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    st = attention_stats(m, ["hello there", "hi"], key_mass=True)
    assert st.entropy.dtype == st.lse.dtype == st.max_weight.dtype == st.key_mass.dtype == torch.float32
    assert torch.isfinite(st.entropy).all()
    m32 = load_model(bf16_dir, device="cpu", dtype="float32", bridge=False)
    assert {p.dtype for p in m32.parameters()} == {torch.float32}
    br = load_model(bf16_dir, device="cpu")  # the bridge keeps it too
    assert {p.dtype for p in br.original_model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("kw,msg", [
    (dict(dtype="float8"), "unknown dtype 'float8'"),
    (dict(dtype=torch.int8), "not supported"),
    (dict(device_map="everywhere"), "'auto' or a dict"),
    (dict(device_map=["cpu"]), "'auto' or a dict"),
    (dict(device_map={"": True}), "module names to devices"),
])
def test_bad_dtype_and_device_map_are_one_line(bf16_dir, kw, msg):
    with pytest.raises(InputError, match=msg) as e:
        load_model(bf16_dir, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="device_map works where CUDA exists")
def test_device_map_on_cpu_only_build_is_one_line(bf16_dir):
    for dm in ("auto", {"": 0}):
        with pytest.raises(InputError, match="device_map spreads a model over GPUs"):
            load_model(bf16_dir, device_map=dm)


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("extra,msg", [
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--device-map", "{not json"], "JSON object"),
    (["--device-map", "somewhere"], "'auto' or a JSON object"),
] + ([(["--device-map", "auto"], "device_map spreads a model over GPUs")] if not torch.cuda.is_available() else []))
def test_cli_bad_dtype_or_device_map_exit_2_before_loading(bf16_dir, tmp_path, capsys, monkeypatch, extra, msg):
    import interp.models.loader as loader

    monkeypatch.setattr(loader, "_load_hf", lambda *a, **k: pytest.fail("the model was loaded"))
    code, err = _cli(["atlas", "--model", str(bf16_dir), "--out", str(tmp_path / "o"), "--quiet", *extra], capsys)
    assert code == 2 and msg in err and len(err.splitlines()) == 1, err


def test_cli_unknown_attention_argument_exit_2(tmp_path, capsys, monkeypatch):
    """An attention keyword the fused path does not implement (here: GPT-OSS's sinks, made unknown) ends the CLI in
    one line naming the eager backend."""
    import interp.attnstats.fused as fused
    from interp.models.families import build_family
    from interp.models.tiny import byte_tokenizer

    d = tmp_path / "gptoss"
    build_family("gpt-oss", vocab_size=259).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    capsys.readouterr()
    monkeypatch.setattr(fused, "_IMPLEMENTED_KWARGS", fused._IMPLEMENTED_KWARGS - {"s_aux"})
    code, err = _cli(["sinks", "--model", str(d), "--out", str(tmp_path / "o"), "--prompts", "1", "--tokens", "8"], capsys)
    assert code == 2 and "s_aux" in err and "backend='eager'" in err and len(err.splitlines()) == 1, err
