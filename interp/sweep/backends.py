"""Where sweep units run: in this process (``local``) or on a Ray cluster (``ray``). Both call
:func:`interp.sweep.units.execute` on the same units with the same thread count and hand each finished unit to
the driver's ``on_outcome`` as it completes; the driver alone writes results, so a cluster's workers need no
shared file system.

Ray: one actor per worker holds one loaded model, so a model loads once per worker; models are processed one
after another (at most ``workers`` actors, and so models, in memory at once). Ray schedules; we do not.
"""
from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlparse

from interp.errors import InputError
from interp.sweep.spec import Unit

CONNECT_TIMEOUT_S = 20.0


@dataclass
class Outcome:
    unit: Unit
    result: object | None  # UnitResult
    error: str | None  # one line: "ExceptionType: message"
    worker: str = "local"
    load_seconds: float | None = None  # set on the first unit a worker ran after loading its model


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:400]}"


def by_model(units: Iterable[Unit]) -> dict[str, list[Unit]]:
    out: dict[str, list[Unit]] = {}
    for u in units:
        out.setdefault(u.model, []).append(u)
    return out


class ModelWorker:
    """Holds one loaded model and runs units on it (in this process, or as a Ray actor)."""

    def __init__(self, model: str, threads: int, device: str | None = None, name: str = "local"):
        from interp.runtime import set_threads

        set_threads(threads)
        self.name, self.load_error, self.model, self.load_seconds = name, None, None, None
        t0 = time.perf_counter()
        try:
            from interp.models import load_model

            self.model = load_model(model, device=device)
        except Exception as e:  # recorded on each unit, so the sweep goes on with the other models
            self.load_error = f"model {model!r} did not load: {one_line(e)}"
        self.load_seconds = time.perf_counter() - t0

    def run(self, unit: Unit) -> Outcome:
        load, self.load_seconds = self.load_seconds, None
        if self.load_error:
            return Outcome(unit, None, self.load_error, self.name, load)
        from interp.sweep.units import execute

        try:
            return Outcome(unit, execute(self.model, unit), None, self.name, load)
        except Exception as e:
            return Outcome(unit, None, one_line(e), self.name, load)


def run_local(units: list[Unit], *, threads: int, on_outcome: Callable[[Outcome], None], device: str | None = None) -> None:
    import gc

    for model, todo in by_model(units).items():
        worker = ModelWorker(model, threads, device)
        for unit in todo:
            on_outcome(worker.run(unit))
        del worker
        gc.collect()


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--backend ray needs Ray, which is not installed; pip install -e '.[scale]' (ray[default]>=2.40)") from None
    return ray


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the cluster's address, so a wrong one fails in seconds instead of Ray's long retries."""
    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise InputError(f"--address {address!r} is not host:port (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise InputError(f"cannot reach a Ray cluster at --address {address} ({reason}); start one with `ray start --head` "
                         f"there, or check the address and port") from None


def connect(address: str | None, workers: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Connect to ``address``, or start a local instance with ``workers`` CPUs; reuse a connection this
    process already has. Returns whether this call started the connection (the caller shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    if address:
        probe_address(address, timeout)
        with _deadline(timeout + 10, f"Ray did not accept a connection at --address {address} within {timeout + 10:.0f} s; "
                                     "is a Ray head (GCS) listening there?"):
            ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=workers, **kw)
    return True


class _Timeout(Exception):
    pass


class _deadline:
    """Raise InputError if the block outlasts ``seconds`` (SIGALRM; only in the main thread, elsewhere a no-op)."""

    def __init__(self, seconds: float, message: str):
        self.seconds, self.message, self.old = seconds, message, None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM"):
            def fire(signum, frame):
                raise _Timeout()

            self.old = signal.signal(signal.SIGALRM, fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, kind, value, tb):
        import signal

        if self.old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        if kind is _Timeout:
            raise InputError(self.message) from None
        return False


def run_ray(units: list[Unit], *, threads: int, on_outcome: Callable[[Outcome], None], workers: int = 2,
            device: str | None = None) -> None:
    """Run ``units`` on ``workers`` actors per model (the connection is made by :func:`connect`)."""
    ray = import_ray()
    Actor = ray.remote(num_cpus=1)(ModelWorker)
    for model, todo in by_model(units).items():
        n = min(workers, len(todo))
        actors = [Actor.remote(model, threads, device, f"ray-{i}") for i in range(n)]
        try:
            _drain(ray, actors, deque(todo), on_outcome)
        finally:
            for a in actors:
                ray.kill(a)


def _drain(ray, actors: list, queue: deque, on_outcome) -> None:
    idle, running = list(actors), {}
    while queue or running:
        while idle and queue:
            actor = idle.pop(0)
            unit = queue.popleft()
            running[actor.run.remote(unit)] = (actor, unit)
        if not running:  # every actor died; nothing can run the rest
            for unit in queue:
                on_outcome(Outcome(unit, None, "no Ray worker left to run it (all actors died)", "ray"))
            return
        (ref,), _ = ray.wait(list(running), num_returns=1)
        actor, unit = running.pop(ref)
        try:
            on_outcome(ray.get(ref))
            idle.append(actor)
        except ray.exceptions.RayError as e:  # the actor died (out of memory, a lost node): record, go on without it
            on_outcome(Outcome(unit, None, f"Ray worker failed: {one_line(e)}", "ray"))


__all__ = ["Outcome", "ModelWorker", "run_local", "run_ray", "connect", "probe_address", "import_ray"]
