"""Writing a ``Capture`` to disk: tensors as safetensors (keys ``"site/layer"``), metadata as JSON."""
from __future__ import annotations

from pathlib import Path

from interp.io import atomic_path, write_json


def save_capture(cap, tokenizer, out: str | Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"{site}/{layer}": t.contiguous() for (site, layer), t in cap.tensors.items()}
    with atomic_path(out / "capture.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {"model": cap.model, "sites": list(cap.spec.sites), "layers": list(cap.layers),
            "heads": None if cap.heads is None else list(cap.heads), "tokens": cap.tokens.tolist(),
            "attention_mask": cap.attention_mask.tolist(),
            "str_tokens": [cap.str_tokens(tokenizer, row) for row in range(cap.tokens.shape[0])],
            "shapes": {k: list(v.shape) for k, v in tensors.items()}}
    return {"tensors": out / "capture.safetensors", "meta": write_json(out / "capture.json", meta)}
