"""The output folder of a job: checked before any work, bound to one resolved config by a manifest.

A job's results (parquet, HTML, JSON and resumable parts) live in one folder. ``claim`` checks that the folder
can be created and written (it tries), and that it does not hold results of a *different* configuration: the
manifest records the verb and a hash of the full resolved config, and a run whose config differs stops with
one line naming the differing fields. Resumable parts live under ``.parts/<config hash>/``, so parts of two
configs can never mix even if a manifest is deleted by hand. This module imports neither torch nor pandas,
so the CLI can run it before the slow imports and the model load.

One process at a time writes a folder: ``claim`` takes an exclusive ``fcntl`` lock on ``.interp-lock`` in it
(holding the owner's PID) for the life of the process, so a second run into the same ``--out`` stops at once
with one line naming the first. The kernel drops the lock when its holder exits, even on ``kill -9``; a lock
still held though its recorded PID is gone (an fd inherited by an orphaned child) is stale and is replaced.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from interp.errors import InputError

MANIFEST = "manifest.json"
PARTS = ".parts"
LOCK = ".interp-lock"
_HELD: dict[str, int] = {}  # resolved folder → fd of the lock this process holds on it


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def lock_out(path: Path) -> None:
    """Take the folder's exclusive lock for this process (again: a no-op), or InputError naming its holder."""
    import fcntl

    key = str(path.resolve())
    if key in _HELD:
        return
    lock = path / LOCK
    for attempt in (0, 1):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = _lock_pid(lock)
            if attempt == 0 and pid is not None and pid != os.getpid() and not _alive(pid):
                warnings.warn(f"{str(path)!r}: the lock of process {pid}, which no longer runs, was stale; replaced", stacklevel=3)
                os.unlink(lock)  # a new lock file: the inherited fd keeps only the old, unlinked one
                continue
            who = f"process {pid}" if pid is not None else "another process"
            raise InputError(f"{str(path)!r} is being written by another interp run ({who}); wait for it to finish, "
                             f"or pass another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = fd
        return


@atexit.register
def _release_all() -> None:
    import fcntl

    for key, fd in list(_HELD.items()):
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        except OSError:
            pass
        _HELD.pop(key, None)


def release(out: str | Path) -> None:
    """Give up this process's lock on ``out`` (tests and long-lived notebook kernels; exit releases it anyway)."""
    import fcntl

    fd = _HELD.pop(str(Path(out).expanduser().resolve()), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def claim(out: str | Path, verb: str, config: Mapping[str, Any]) -> OutDir:
    """Check ``out``, lock it for this process and bind it to ``(verb, config)``; safe to call again with the
    same config (resume)."""
    path = check_writable(out)
    lock_out(path)
    config = json.loads(json.dumps(dict(config), default=str))  # the form it takes in the manifest
    key = config_key(verb, config)
    manifest = path / MANIFEST
    holds_results = any(p.name not in (MANIFEST,) and not p.name.startswith(".interp-") for p in path.iterdir())
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
    from interp.io import read_json_file

    return read_json_file(path, "the output folder's manifest", fix="delete the output folder or pass another --out")


def _describe(old: dict) -> str:
    return f"an `interp {old.get('verb', '?')}` run"


def _differences(old: dict, verb: str, config: dict) -> list[str]:
    diff = [] if old.get("verb") == verb else ["verb"]
    before = old.get("config") or {}
    return diff + sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k))


__all__ = ["OutDir", "claim", "check_writable", "config_key", "lock_out", "release", "MANIFEST", "LOCK"]
