import os
import warnings

import pytest

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """Under pytest-xdist (``make test``) the controller builds the caches that models share (the dequantized
    SmolLM2, the tiny models' byte tokenizer) once before the workers start, so that on a fresh clone two
    workers never build one at the same time (the second would replace the first's folder under its reader).
    Each worker then runs one intra-op thread, and so do the kernels and CLI processes its tests start: with
    as many workers as cores, a second thread per worker only waits for a core the other worker holds."""
    if hasattr(config, "workerinput"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
        return
    if getattr(config.option, "numprocesses", None):
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


# The longest test files, longest first (measured with --durations=0): each runs whole on one worker under
# ``--dist loadfile --no-loadscope-reorder``, so collecting them first lets two pytest-xdist workers share them
# from the start instead of one worker meeting a long file at the end alone.
LONG_FILES = ("test_notebooks.py", "test_readme.py", "test_sweep.py", "test_patching.py", "test_kernels_flex.py",
              "test_circuits.py", "test_kernels.py", "test_fuzz_eager.py", "test_cli_patch.py", "test_vision.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: file order kept otherwise
