import os
import warnings

import pytest

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """Under pytest-xdist (``make test``) the controller builds the caches that models share (the dequantized
    SmolLM2, the tiny models' byte tokenizer) once before the workers start, so that on a fresh clone two
    workers never build one at the same time (the second would replace the first's folder under its reader)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from interp.models.bundled import smollm2_dir
        from interp.models.tiny import byte_tokenizer

        for build in (byte_tokenizer, smollm2_dir):
            try:
                build()
            except Exception:  # noqa: BLE001 (e.g. the bundled package is missing; the tests that need it say why)
                pass


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
def llama3():
    """A 3-layer tiny Llama, shared by the intervention and patching tests (nothing may edit its weights)."""
    import interp

    return interp.tiny_model("llama", num_hidden_layers=3)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama saved as a local model folder (config.json, weights, tokenizer)."""
    from interp.models.tiny import build_tiny

    d = tmp_path_factory.mktemp("tiny")
    hf, tok = build_tiny("llama", seed=2)
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: on 2 shared cores a second thread only adds
    synchronisation, which makes each small forward several times slower under load."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
