"""``tinyvlm``: a genuine transformers ``LlavaForConditionalGeneration`` built on this machine.

- vision tower: a small CLIP vision transformer (64×64 RGB, patch 8 → 64 patch tokens + CLS, 4 layers,
  width 128, 4 heads), trained from scratch by ``benchmarks/train_tinyvlm.py``;
- projector: LLaVA's two-layer GELU MLP (128 → 576 → 576);
- language model: the bundled SmolLM2-135M-Instruct, frozen and unchanged; the image placeholder token is
  SmolLM2's unused special token ``<empty_output>`` (id 16), so the vocabulary is not resized;
- ``vision_feature_select_strategy="default"``: the CLS token is dropped, so a prompt carries exactly 64
  image tokens (the patch size is read from the weights' ``config.json``, so older patch-16 weights still load).

Only the vision tower and projector are shipped (``data/tinyvlm/vision.safetensors``, float16, with the
training config in ``data/tinyvlm/config.json``); :func:`build_tinyvlm` assembles them with the bundled
language model. TransformerLens 4.3's LLaVA adapter hosts the result (``interp.load_model("tinyvlm")``), so
the same code paths serve any LLaVA checkpoint.

Prompts use SmolLM2's chat markup without a system turn: ``<|im_start|>user\\nObjects in the picture:<image×64>
\\nQuestion: {question}<|im_end|>\\n<|im_start|>assistant\\n`` (:func:`chat_ids`). The frame matters to the frozen
LM: given a textual object list, SmolLM2-135M answers "Is there a ...?" at ROC AUC 0.57 in a bare prompt and 0.89
in this frame (80 scenes).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.errors import ModelUnavailableError
from interp.tasks.texts import DATA_DIR

WEIGHTS_DIR = DATA_DIR / "tinyvlm"
IMAGE_TOKEN = "<empty_output>"
VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, image_size=64,
              patch_size=8, num_channels=3)
# CLIP-style per-channel normalization of [0, 1] pixels (the shapes images are light gray with saturated shapes).
PIXEL_MEAN = (0.85, 0.8, 0.8)
PIXEL_STD = (0.2, 0.25, 0.25)
_VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")


def llava_config(text_config, tokenizer, vision: dict | None = None):
    from transformers import CLIPVisionConfig, LlavaConfig

    vcfg = CLIPVisionConfig(**(vision or VISION))
    n_img = (vcfg.image_size // vcfg.patch_size) ** 2
    img_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    cfg = LlavaConfig(vision_config=vcfg, text_config=text_config, image_token_id=img_id,
                      vision_feature_select_strategy="default", vision_feature_layer=-1,
                      projector_hidden_act="gelu", image_seq_length=n_img, tie_word_embeddings=True)
    cfg.architectures = ["LlavaForConditionalGeneration"]
    cfg.interp_pixel_mean, cfg.interp_pixel_std = list(PIXEL_MEAN), list(PIXEL_STD)
    return cfg


def build_tinyvlm(weights: str | Path | None = WEIGHTS_DIR, *, dtype: torch.dtype = torch.float32, seed: int = 0):
    """``(LlavaForConditionalGeneration, tokenizer)``: bundled SmolLM2 + the shipped vision tower and projector.

    ``weights=None`` leaves the vision side at its seeded random init (training starts from there)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration

    from interp.models.bundled import smollm2_dir
    from interp.models.quiet import quiet_transformers

    lm_dir = smollm2_dir()
    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(lm_dir)
        lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    cfg = llava_config(AutoConfig.from_pretrained(lm_dir), tok, _vision_overrides(weights))
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    inner = {k[len("model."):]: v for k, v in lm.state_dict().items() if k.startswith("model.")}
    model.model.language_model.load_state_dict(inner, strict=True)
    model.tie_weights()
    if weights is not None:
        load_vision_weights(model, weights)
    return model.to(dtype).eval(), tok


def _vision_overrides(weights) -> dict | None:
    if weights is None:
        return None
    meta = read_meta(weights)
    return meta.get("vision", VISION)


def read_meta(weights: str | Path) -> dict:
    path = Path(weights) / "config.json"
    if not path.is_file():
        raise ModelUnavailableError(f"tinyvlm weights not found at {str(Path(weights))!r}; run `python benchmarks/train_tinyvlm.py` to train them")
    return json.loads(path.read_text())


def vision_state(model) -> dict[str, torch.Tensor]:
    """The trainable part: vision tower + projector parameters (the language model is not included)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(_VISION_PREFIXES)}


def load_vision_weights(model, weights: str | Path) -> None:
    from safetensors.torch import load_file

    path = Path(weights) / "vision.safetensors"
    if not path.is_file():
        raise ModelUnavailableError(f"{str(path)!r} is missing; run `python benchmarks/train_tinyvlm.py` to train tinyvlm")
    state = {k: v.float() for k, v in load_file(path).items()}
    expected = {k: v.shape for k, v in vision_state(model).items()}
    if set(state) != set(expected):
        raise ModelUnavailableError(f"{str(path)!r} does not match the tinyvlm architecture ({len(set(state) ^ set(expected))} mismatched keys); retrain it")
    wrong = [k for k, v in state.items() if v.shape != expected[k]]
    if wrong:
        raise ModelUnavailableError(f"{str(path)!r} was trained for another tinyvlm shape ({wrong[0]}: {list(state[wrong[0]].shape)}, "
                                    f"this model needs {list(expected[wrong[0]])}); load it with its own config.json beside it, or retrain it")
    model.load_state_dict(state, strict=False)


def save_vision_weights(model, out: str | Path, meta: dict) -> Path:
    """Write ``vision.safetensors`` (float16) and ``config.json`` atomically into ``out``."""
    from safetensors.torch import save_file

    from interp.io import atomic_dir

    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file({k: v.detach().to(torch.float16).contiguous() for k, v in vision_state(model).items()},
                  tmp / "vision.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps({**meta, "vision": VISION}, indent=1) + "\n")
        for f in [tmp, *tmp.iterdir()]:  # mkdtemp/safetensors leave owner-only modes; weights are shared data
            f.chmod(0o755 if f.is_dir() else 0o644)
    return out


def chat_ids(tokenizer, question: str, n_image_tokens: int, image_token_id: int, answer: str | None = None) -> list[int]:
    """Token ids of a one-turn prompt (and, with ``answer``, the answer and ``<|im_end|>``); without image
    tokens (a later turn, or a text-only prompt) the "Objects in the picture:" frame is left out."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    turn = f"Question: {question}<|im_end|>\n<|im_start|>assistant\n"
    if n_image_tokens:
        ids = enc("<|im_start|>user\nObjects in the picture:") + [image_token_id] * n_image_tokens + enc(f"\n{turn}")
    else:
        ids = enc(f"<|im_start|>user\n{turn}")
    return ids + (enc(f"{answer}<|im_end|>") if answer is not None else [])


__all__ = ["build_tinyvlm", "llava_config", "chat_ids", "vision_state", "save_vision_weights", "load_vision_weights",
           "read_meta", "WEIGHTS_DIR", "PIXEL_MEAN", "PIXEL_STD", "IMAGE_TOKEN"]
