"""Images as inputs: reading files, checking size and mode, pixel tensors, and prompts with image tokens.

The rules (one-line ``InputError`` otherwise):

- an image is an RGB ``uint8`` array ``[H, W, 3]``, a PIL image or a path to an image file;
- mode: RGB is used as is; grayscale (``L``) and ``RGBA`` are converted to RGB with a warning (alpha is
  composited on white); any other mode is rejected;
- size: it must equal the vision tower's ``image_size`` square; any other size is resized (bicubic) with a
  warning when ``resize=True`` (the default), else rejected;
- a file that cannot be decoded as an image is rejected, naming the file.

torch is imported inside the functions that need it, so the CLI can check image files before the slow imports.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interp.errors import InputError, UnsupportedModelError

if TYPE_CHECKING:
    import torch

# OpenAI CLIP normalization, the LLaVA default when a model does not record its own.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vlm_config(model):
    """The LLaVA-style config of ``model`` (bridge or HF), or UnsupportedModelError for a text-only model."""
    hf = getattr(model, "original_model", model)
    cfg = getattr(hf, "config", None)
    if cfg is None or getattr(cfg, "vision_config", None) is None or getattr(cfg, "image_token_id", None) is None:
        name = getattr(model, "interp_name", type(hf).__name__)
        raise UnsupportedModelError(f"model {name!r} is text-only (no vision_config / image_token_id); pass a LLaVA-style vision-language model such as 'tinyvlm'")
    return cfg


def image_size(model) -> int:
    return int(vlm_config(model).vision_config.image_size)


def n_image_tokens(model) -> int:
    cfg = vlm_config(model)
    v = cfg.vision_config
    n = (int(v.image_size) // int(v.patch_size)) ** 2
    return n + (1 if getattr(cfg, "vision_feature_select_strategy", "default") == "full" else 0)


def load_image(source: Any, size: int, *, resize: bool = True) -> np.ndarray:
    """``[size, size, 3]`` uint8 RGB from an array, PIL image or file path, under the rules above."""
    from PIL import Image

    label = "image"
    if isinstance(source, (str, Path)):
        label = f"image file {str(Path(source).expanduser())!r}"
        source = read_image_file(source)
    if isinstance(source, np.ndarray):
        source = _array_to_pil(source, label)
    if not isinstance(source, Image.Image):
        raise InputError(f"{label} is a {type(source).__name__}; pass an RGB uint8 array [H, W, 3], a PIL image or a file path")
    im = _to_rgb(source, label)
    if im.size != (size, size):
        if not resize:
            raise InputError(f"{label} is {im.size[0]}×{im.size[1]}; this model takes {size}×{size} RGB images (pass resize=True to resize)")
        warnings.warn(f"{label} is {im.size[0]}×{im.size[1]}; resized to {size}×{size} for this model", stacklevel=2)
        im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8).copy()


def read_image_file(path: str | Path):
    """Open an image file fully (so a truncated or corrupt file fails now) and return the PIL image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    label = f"image file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{label} does not exist; pass the path of a PNG/JPEG file")
    try:
        with warnings.catch_warnings():
            # between Pillow's limit and twice it Pillow only warns; such an image is refused here as well
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{label} has more pixels than the limit of {Image.MAX_IMAGE_PIXELS} (Pillow's guard against "
                         f"decompression bombs); pass a smaller image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{label} is not a readable image ({type(e).__name__}); pass a valid PNG/JPEG file") from None


def check_image_size(path: str | Path, size: int, *, resize: bool = True) -> None:
    """Apply the size/mode rules to an image file without converting it (warns or raises as load_image would)."""
    load_image(path, size, resize=resize)


def _array_to_pil(arr: np.ndarray, label: str):
    from PIL import Image

    if arr.dtype != np.uint8:
        raise InputError(f"{label} array has dtype {arr.dtype}; pass uint8 RGB values in 0..255")
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L")
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{label} array has shape {tuple(arr.shape)}; pass [H, W, 3] RGB (or [H, W] gray, [H, W, 4] RGBA)")
    return Image.fromarray(arr, mode="RGB" if arr.shape[2] == 3 else "RGBA")


def _to_rgb(im, label: str):
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("L", "LA", "RGBA", "P"):
        warnings.warn(f"{label} has mode {im.mode}; converted to RGB", stacklevel=3)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            return bg
        return im.convert("RGB")
    raise InputError(f"{label} has mode {im.mode}; pass an RGB image (grayscale and RGBA are converted)")


def pixel_values(model, images: Sequence[Any], *, resize: bool = True) -> torch.Tensor:
    """``[batch 3 size size]`` float pixels, normalized with the model's recorded mean/std (CLIP's by default)."""
    cfg = vlm_config(model)
    size = int(cfg.vision_config.image_size)
    arrs = [load_image(im, size, resize=resize) for im in images]
    return to_pixels(np.stack(arrs), getattr(cfg, "interp_pixel_mean", CLIP_MEAN), getattr(cfg, "interp_pixel_std", CLIP_STD))


def to_pixels(arrs: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 ``[batch H W 3]`` → normalized float ``[batch 3 H W]``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(arrs)).float().div(255).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@dataclass(frozen=True)
class VlmBatch:
    """Prompts with image placeholders. ``image_mask [batch pos]`` marks the image tokens (one contiguous span
    per row); ``pixels`` is None for the text-only branch."""

    tokens: torch.Tensor  # [batch pos] int64
    attention_mask: torch.Tensor  # [batch pos]
    image_mask: torch.Tensor  # [batch pos] bool
    pixels: torch.Tensor | None  # [batch 3 H W]


def check_image_tokens(model, tokens: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ``[batch pos]`` image-token mask of ``tokens``; InputError when a row's image tokens are not exactly
    the model's count, or when a given ``image_mask`` (a user's image segment) differs from them."""
    import torch

    cfg = vlm_config(model)
    found = tokens == int(cfg.image_token_id)
    want = n_image_tokens(model)
    counts = found.sum(1).tolist()
    for r, c in enumerate(counts):
        if c != want:
            raise InputError(f"prompt {r} has {c} image tokens (id {cfg.image_token_id}) but this model's vision tower gives {want}; build prompts with interp.images.vlm_batch")
    if image_mask is not None:
        image_mask = torch.as_tensor(image_mask).bool()
        if image_mask.shape != found.shape or not bool((image_mask == found).all()):
            raise InputError(f"the image segment does not match the model's image tokens (id {cfg.image_token_id}, {want} per prompt); pass the positions of the image tokens or omit it")
    return found


def vlm_batch(model, prompts: Sequence[Sequence[int]], images: Sequence[Any] | None, *, pad_id: int = 0,
              resize: bool = True) -> VlmBatch:
    """Right-padded batch of token-id prompts (each with the model's image tokens) and their images."""
    if not prompts:
        raise InputError("no prompts given; pass one token-id list per image")
    if images is not None and len(images) != len(prompts):
        raise InputError(f"got {len(images)} images for {len(prompts)} prompts; pass one image per prompt")
    import torch

    n = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, : len(p)] = 1
    img = check_image_tokens(model, torch.where(mask.bool(), tokens, torch.full_like(tokens, -1)))
    pix = None if images is None else pixel_values(model, images, resize=resize)
    return VlmBatch(tokens, mask, img, pix)


__all__ = ["load_image", "read_image_file", "check_image_size", "pixel_values", "to_pixels", "vlm_batch", "VlmBatch", "check_image_tokens", "vlm_config",
           "image_size", "n_image_tokens", "CLIP_MEAN", "CLIP_STD"]
