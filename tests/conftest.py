import os
import warnings

import pytest

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    import interp

    return interp.load_model("smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    import interp

    return interp.load_model("minilm-l6")


@pytest.fixture(scope="session", params=["llama", "gpt2", "bert"])
def tiny(request):
    import interp

    return interp.tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    import interp

    return interp.tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama saved as a local model folder (config.json, weights, tokenizer)."""
    from interp.models.tiny import build_tiny

    d = tmp_path_factory.mktemp("tiny")
    hf, tok = build_tiny("llama", seed=2)
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d
