import pytest
import torch

import interp
from interp.errors import InputError, ModelUnavailableError, UnknownNameError
from interp.models import bundled


def test_tiny_models_are_seeded_and_shaped(tiny):
    assert tiny.cfg.n_layers == 2 and tiny.cfg.n_heads == 6
    again = interp.tiny_model(tiny.interp_name.removeprefix("tiny-"))
    for (n1, p1), (n2, p2) in zip(tiny.named_parameters(), again.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_tiny_llama_has_gqa(tiny_llama):
    assert tiny_llama.cfg.n_key_value_heads == 2


def test_unknown_tiny_arch():
    with pytest.raises(UnknownNameError, match="unknown tiny architecture"):
        interp.tiny_model("mamba")


def test_unknown_model_name_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="not available offline") as e:
        interp.load_model("no-such-model-xyz")
    assert "\n" not in str(e.value)


def test_missing_local_path():
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        interp.load_model("./definitely/not/here")


def test_bad_dtype():
    with pytest.raises(InputError, match="unknown dtype"):
        interp.load_model("minilm-l6", dtype="int3")


def test_local_directory_roundtrip(tmp_path):
    from interp.models.tiny import build_tiny

    hf, tok = build_tiny("llama", seed=3)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = interp.load_model(str(tmp_path))
    ref = interp.tiny_model("llama", seed=3)
    toks = ref.to_tokens("hello")
    assert torch.allclose(m(toks), ref(toks), atol=1e-5)


@pytest.mark.smollm
def test_smollm2_loads_from_cache(smollm2):
    assert (bundled.cache_dir() / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert (smollm2.cfg.n_layers, smollm2.cfg.n_heads, smollm2.cfg.n_key_value_heads) == (30, 9, 3)
    logits = smollm2("The capital of France is")
    assert smollm2.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"


def test_minilm_is_bert(minilm):
    assert minilm.cfg.n_layers == 6 and minilm.cfg.n_heads == 12
