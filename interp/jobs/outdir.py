"""The output folder of a job: checked before any work, bound to one resolved config by a manifest.

A job's results (parquet, HTML, JSON and resumable parts) live in one folder. ``claim`` checks that the folder
can be created and written (it tries), and that it does not hold results of a *different* configuration: the
manifest records the verb and a hash of the full resolved config, and a run whose config differs stops with
one line naming the differing fields. Resumable parts live under ``.parts/<config hash>/``, so parts of two
configs can never mix even if a manifest is deleted by hand. This module imports neither torch nor pandas,
so the CLI can run it before the slow imports and the model load.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from interp.errors import InputError

MANIFEST = "manifest.json"
PARTS = ".parts"


def config_key(verb: str, config: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit hash of the verb and its full resolved config."""
    blob = json.dumps({"verb": verb, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OutDir:
    path: Path
    verb: str
    config: dict
    key: str

    @property
    def parts_dir(self) -> Path:
        """Where this config's resumable parts go (``interp.store.ResumableTable``)."""
        return self.path / PARTS / self.key


def check_writable(out: str | Path) -> Path:
    """Create ``out`` if needed and prove it is writable by writing a probe file."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"output path {str(path)!r} is a file; pass a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".interp-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"cannot write to output folder {str(path)!r} ({e.strerror or e}); pass a writable --out") from None
    return path


def claim(out: str | Path, verb: str, config: Mapping[str, Any]) -> OutDir:
    """Check ``out`` and bind it to ``(verb, config)``; safe to call again with the same config (resume)."""
    path = check_writable(out)
    config = json.loads(json.dumps(dict(config), default=str))  # the form it takes in the manifest
    key = config_key(verb, config)
    manifest = path / MANIFEST
    holds_results = any(p.name not in (MANIFEST,) and not p.name.startswith(".interp-probe-") for p in path.iterdir())
    if manifest.exists():
        old = _read_manifest(manifest)
        if old.get("key") != key and holds_results:
            raise InputError(f"{str(path)!r} holds {_describe(old)} made with other settings (differs in: "
                             f"{', '.join(_differences(old, verb, config)) or 'config'}); pass another --out, or delete the folder to start over")
    elif holds_results:
        raise InputError(f"{str(path)!r} is not empty and has no {MANIFEST} from interp; pass an empty or new --out folder")
    from interp.io import write_json

    write_json(manifest, {"verb": verb, "key": key, "config": config})
    return OutDir(path, verb, config, key)


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{str(path)!r} is unreadable ({e}); delete the output folder or pass another --out") from None
    if not isinstance(data, dict):
        raise InputError(f"{str(path)!r} is not an interp manifest; delete the output folder or pass another --out")
    return data


def _describe(old: dict) -> str:
    return f"an `interp {old.get('verb', '?')}` run"


def _differences(old: dict, verb: str, config: dict) -> list[str]:
    diff = [] if old.get("verb") == verb else ["verb"]
    before = old.get("config") or {}
    return diff + sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k))


__all__ = ["OutDir", "claim", "check_writable", "config_key", "MANIFEST"]
