"""The CLI and API under bad input, interruption and reruns: one line and exit 2 before any model loads,
exit 130 on Ctrl-C, and result folders that never mix two configurations."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp.cli import INTERRUPTED, main
from interp.errors import InputError, InterpError, ModelUnavailableError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "binary.bin").write_bytes(b"\x00\x01\x02GGUF\x00" * 50)
    (d / "latin1.txt").write_bytes("caf\xe9 au lait, s'il vous pla\xeet".encode("latin-1"))
    (d / "empty.txt").write_text("  \n\n")
    (d / "short.txt").write_text("Only a few words here.")
    (d / "bad_json.jsonl").write_text('{"needle": "The code is 7.", "question": "What is the code?", "answer": "7"}\n{not json\n')
    (d / "missing_field.jsonl").write_text('{"needle": "The code is 7.", "answer": "7"}\n')
    (d / "not_in_needle.jsonl").write_text('{"needle": "The code is 7.", "question": "What is the code?", "answer": "9"}\n')
    (d / "one.jsonl").write_text('{"needle": "The secret code is 4217.", "question": "What is the secret code?", "answer": "4217"}\n')
    (d / "two.jsonl").write_text('{"needle": "The lucky word is amber.", "question": "What is the lucky word?", "answer": "amber"}\n')
    (d / "no_config").mkdir()
    (d / "a_file").write_text("keep me")
    return d


def _bad_cases():
    """(verb args, expected message fragment); ``{f}`` is the inputs folder, ``{m}`` the tiny model folder."""
    atlas = [(["--seq-len", "1"], "--seq-len must be at least 2"),
             (["--text-tokens", "0"], "--text-tokens must be at least 2"),
             (["--seq-len", "100000"], "more than"),
             (["--model", "smollm2-135m", "--seq-len", "3000"], "is free; use a smaller --seq-len"),
             (["--device", "cuda"], "device 'cuda' is not available"),
             (["--device", "tpu7"], "unknown device 'tpu7'"),
             (["--threads", "0"], "--threads must be at least 1"),
             (["--threads", "many"], "--threads must be a positive integer or 'auto'"),
             (["--model", "{f}/no_config"], "has no config.json"),
             (["--model", "{f}/missing_dir"], "does not exist"),
             (["--model", "no-such-model-xyz"], "not available offline"),
             (["--out", "{f}/a_file"], "is a file"),
             (["--out", "/proc/interp-cannot-write/out"], "cannot write to output folder"),
             (["--nonsense"], "No such option"),
             (["--seq-len", "abc"], "Invalid value for '--seq-len'")]
    probe = [(["--text", "{f}/binary.bin"], "is binary, not text"),
             (["--text", "{f}/latin1.txt"], "is not valid UTF-8"),
             (["--text", "{f}/empty.txt"], "is empty"),
             (["--text", "{f}/missing.txt"], "does not exist"),
             (["--prompts", "0"], "--prompts must be at least 1"),
             (["--tokens", "1"], "--tokens must be at least 2"),
             (["--tokens", "5000"], "more than"),
             (["--device", "cuda:3"], "is not available")]
    sinks = probe + [(["--eps", "1.5"], "--eps must lie strictly between 0 and 1"),
                     (["--tau", "0"], "--tau must lie strictly between 0 and 1"),
                     (["--ratio", "0.5"], "--ratio must be above 1")]
    entropy = probe + [(["--collapse", "0.9", "--overload", "0.1"], "need 0 <= --collapse < --overload <= 1")]
    retrieval = [(["--needles", "{f}/binary.bin"], "is binary, not text"),
                 (["--needles", "{f}/latin1.txt"], "is not valid UTF-8"),
                 (["--needles", "{f}/empty.txt"], "is empty"),
                 (["--needles", "{f}/bad_json.jsonl"], "line 2 is not valid JSON"),
                 (["--needles", "{f}/missing_field.jsonl"], "line 1 lacks needle, question or answer"),
                 (["--needles", "{f}/not_in_needle.jsonl"], "line 1: answer '9' is not found in its needle"),
                 (["--haystack", "{f}/binary.bin"], "--haystack file"),
                 (["--haystack", "{f}/empty.txt"], "is empty"),
                 (["--model", "minilm-l6"], "needs a causal language model"),
                 (["--lengths", "100000"], "more than"),
                 (["--lengths", "10"], "too short"),
                 (["--depths", "50", "150"], "depth 150 is outside [0, 100]"),
                 (["--mask-top", "0"], "--mask-top must be at least 1"),
                 (["--mask-random", "5", "999"], "--mask-random 999 is out of range"),
                 (["--n-needles", "0"], "--n-needles must be at least 1"),
                 (["--n-needles", "99"], "exceeds the"),
                 (["--stop", "never"], "unknown stop rule 'never'"),
                 (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
                 (["--device", "cuda"], "is not available"),
                 (["--out", "{f}/a_file"], "is a file")]
    capture = [(["--prompt", "  "], "--prompt 0 is empty"),
               (["--prompt", "hi", "--site", "resid_mdi"], "unknown site 'resid_mdi'"),
               (["--prompt", "hi", "--layer", "7"], "--layer 7 out of range"),
               (["--prompt", "hi", "--head", "6"], "--head 6 out of range"),
               ([], "Missing option '--prompt'"),
               (["--prompt", "hi", "--out", "{f}/a_file"], "is a file")]
    cases = [("atlas", a, m) for a, m in atlas] + [("sinks", a, m) for a, m in sinks]
    cases += [("entropy", a, m) for a, m in entropy] + [("retrieval", a, m) for a, m in retrieval]
    return cases + [("capture", a, m) for a, m in capture]


CASES = _bad_cases()


@pytest.mark.parametrize("verb,args,msg", CASES, ids=[f"{v}:{' '.join(a)[:40]}" for v, a, _ in CASES])
def test_bad_input_one_line_exit_2_before_model_loads(verb, args, msg, files, tiny_dir, tmp_path, capsys, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the bad input was rejected")

    monkeypatch.setattr("interp.models.loader.load_model", no_load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = [a.format(f=files, m=tiny_dir) for a in args]
    base = ([] if "--model" in args else ["--model", str(tiny_dir)]) + ([] if "--out" in args else ["--out", str(tmp_path / "out")])
    if verb == "retrieval" and "--lengths" not in args:
        base += ["--lengths", "500"]  # the tiny model's context is 2048
    with pytest.raises(SystemExit) as e:
        main([verb, *args, *base])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert msg in err
    assert (files / "a_file").read_text() == "keep me"


def test_no_arguments_prints_help_without_error_line(capsys):
    main([])
    out = capsys.readouterr()
    assert "Usage" in out.out and "error" not in out.err


def test_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.startswith("interp ")


def test_help_and_argument_errors_import_no_torch():
    code = ("import sys\nfrom interp.cli import main\n"
            "try:\n    main(['atlas', '--seq-len', '1'])\nexcept SystemExit as e:\n    assert e.code == 2\n"
            "assert 'torch' not in sys.modules, 'torch was imported to reject an argument'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


def test_space_separated_lists_expand():
    from interp.cli import expand_lists

    argv = ["retrieval", "--lengths", "1000", "2000", "3000", "--depths", "0", "50", "--quiet", "--mask-top", "5"]
    assert expand_lists(argv) == ["retrieval", "--lengths", "1000", "--lengths", "2000", "--lengths", "3000",
                                  "--depths", "0", "--depths", "50", "--quiet", "--mask-top", "5"]


def test_short_text_warns_in_one_line(files, tiny_dir, tmp_path, capsys):
    main(["sinks", "--model", str(tiny_dir), "--out", str(tmp_path / "s"), "--text", str(files / "short.txt"), "--tokens", "200"])
    err = capsys.readouterr().err
    assert "warning: --text" in err and "has only" in err


# --- results never mix configurations -------------------------------------------------------------------


def _retrieval_args(tiny_dir, out, needles, *extra):
    return ["retrieval", "--model", str(tiny_dir), "--out", str(out), "--lengths", "160", "200", "--depths", "0", "100",
            "--needles", str(needles), "--n-needles", "1", "--max-new-tokens", "3", "--stop", "eos", "--quiet", *extra]


def test_retrieval_rerun_with_other_needles_or_model_is_refused(files, tiny_dir, tmp_path, capsys):
    from interp.models.tiny import build_tiny

    out = tmp_path / "r"
    main(_retrieval_args(tiny_dir, out, files / "one.jsonl"))
    before = pd.read_parquet(out / "samples.parquet")
    assert len(before) == 4 and json.loads((out / "manifest.json").read_text())["verb"] == "retrieval"
    with pytest.raises(SystemExit) as e:
        main(_retrieval_args(tiny_dir, out, files / "two.jsonl"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "differs in: needles, needles_sha" in err
    other = tmp_path / "other_model"
    hf, tok = build_tiny("llama", seed=5, num_hidden_layers=3)
    hf.save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(SystemExit) as e:
        main(_retrieval_args(other, out, files / "one.jsonl"))
    assert e.value.code == 2 and "differs in: model, model_source" in capsys.readouterr().err
    main(_retrieval_args(tiny_dir, out, files / "one.jsonl"))  # the same config resumes from its parts
    after = pd.read_parquet(out / "samples.parquet")
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.parametrize("verb,first,second,field", [
    ("atlas", ["--seq-len", "6", "--text-tokens", "24"], ["--seq-len", "7", "--text-tokens", "24"], "seq_len"),
    ("sinks", ["--prompts", "2", "--tokens", "12"], ["--prompts", "2", "--tokens", "12", "--eps", "0.4"], "eps"),
    ("entropy", ["--prompts", "2", "--tokens", "12"], ["--prompts", "3", "--tokens", "12"], "prompts"),
    ("capture", ["--prompt", "hello"], ["--prompt", "hello", "--site", "z"], "sites"),
])
def test_every_verb_refuses_a_folder_of_another_config(verb, first, second, field, tiny_dir, tmp_path, capsys):
    out = tmp_path / verb
    common = ["--model", str(tiny_dir), "--out", str(out)]
    main([verb, *common, *first] + (["--quiet"] if verb == "atlas" else []))
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(SystemExit) as e:
        main([verb, *common, *second])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and f"differs in: {field}" in err and len(err.splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written  # nothing was touched


def test_non_empty_folder_without_manifest_is_refused(tiny_dir, tmp_path, capsys):
    (tmp_path / "mine.csv").write_text("a,b\n")
    with pytest.raises(SystemExit) as e:
        main(["entropy", "--model", str(tiny_dir), "--out", str(tmp_path)])
    assert e.value.code == 2 and "has no manifest.json" in capsys.readouterr().err


def test_parts_are_keyed_on_the_config_hash(tmp_path):
    from interp.jobs.outdir import claim

    a = claim(tmp_path / "x", "retrieval", {"model": "m", "needles_sha": "1"})
    b = claim(tmp_path / "y", "retrieval", {"model": "m", "needles_sha": "2"})
    assert a.key != b.key and a.parts_dir.name == a.key


# --- Ctrl-C ------------------------------------------------------------------------------------------------


def test_sigint_exits_130_with_one_line_and_the_rerun_resumes(files, tiny_dir, tmp_path):
    out = tmp_path / "r"
    args = _retrieval_args(tiny_dir, out, files / "one.jsonl", "--max-new-tokens", "30")
    args[args.index("--lengths") + 1: args.index("--depths")] = ["160", "256", "384"]
    args[args.index("--depths") + 1: args.index("--needles")] = ["0", "50", "100"]
    cmd = [sys.executable, "-c", "from interp.cli import main; main()", *args[0:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not list(out.glob(".parts/*/part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith(INTERRUPTED) and last.endswith(" --quiet --max-new-tokens 30") and "Traceback" not in err
    assert not (out / "samples.parquet").exists()
    done = len(list(out.glob(".parts/*/part-*.parquet")))
    assert 1 <= done < 9
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 9 and not samples.duplicated(["context_len", "depth", "needle_id"]).any()


# --- capture positions and the Python API ------------------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("site", ["z", "pattern", "resid_post"])
def test_negative_positions_count_from_each_prompts_last_token(tiny_llama, site, padding_side):
    from interp.hooks import CaptureSpec, capture

    prompts = ["a much longer prompt than the other one", "short", "mid length one"]
    spec = CaptureSpec(sites=(site,), layers=(1,), positions=(-1, 0, -3))
    batch = capture(tiny_llama, prompts, spec, padding_side=padding_side)
    for row, p in enumerate(prompts):
        alone = capture(tiny_llama, [p], spec)[site, 1][0]
        got = batch[site, 1][row]
        if site == "pattern":  # [head k key]: keys of the batch are padded; compare the real keys
            keys = batch.attention_mask[row].bool()
            got = got[..., keys]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-4)


def test_position_beyond_a_short_prompt_is_an_error(tiny_llama):
    from interp.hooks import CaptureSpec, capture

    with pytest.raises(InputError, match="out of range for prompt 1"):
        capture(tiny_llama, ["a long enough prompt", "ab"], CaptureSpec(sites=("z",), positions=(-10,)))


def test_api_errors_are_interp_errors(tiny_llama, tiny_dir, files):
    import interp
    from interp.analyze.detectors import detector_scores

    big = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(40)])
    with pytest.raises(InputError) as e:
        interp.load_model(big)
    assert len(str(e.value)) < 200 and "Linear(" not in str(e.value)
    with pytest.raises(ModelUnavailableError, match="has no config.json"):
        interp.load_model(str(files / "no_config"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device 'cuda' is not available"):
            interp.load_model(str(tiny_dir), device="cuda")
    with pytest.raises(InputError, match="list of edit values"):
        interp.attention_stats(tiny_llama, "hello", edits="L1H0")
    with pytest.raises(InputError, match="not an edit value"):
        interp.attention_stats(tiny_llama, "hello", edits=["L1H0"])
    with pytest.raises(InputError, match="not a int"):
        interp.attention_stats(tiny_llama, 42)
    with pytest.raises(InputError, match="batch must be at least 1"):
        detector_scores(tiny_llama, batch=0)
    for err in (InputError, ModelUnavailableError):
        assert issubclass(err, InterpError)


def test_backend_names_the_kernel_that_ran(tiny_llama):
    import interp

    assert interp.attention_stats(tiny_llama, "hello there").backend == ("triton" if torch.cuda.is_available() else "cpu")
    assert interp.attention_stats(tiny_llama, "hello there", backend="reference").backend == "reference"


def test_bridge_false_gives_the_plain_model_with_attentions(tiny_dir):
    import interp

    hf = interp.load_model(str(tiny_dir), bridge=False)
    ids = hf.interp_tokenizer("hello there", return_tensors="pt")["input_ids"]
    out = hf(ids, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape[-1] == ids.shape[1]
