"""Sweeps: a TOML spec (:mod:`.spec`) expands to a grid of units (:mod:`.units`) run locally or on Ray
(:mod:`.backends`), each stored as a resumable parquet part (:mod:`.store`); :mod:`.heads` batches per-head
interventions. The whole job (``interp sweep``) is :func:`interp.jobs.sweep.run_sweep`."""
from interp.sweep.spec import SweepSpec, Unit, load_spec, parse_spec
from interp.sweep.store import ResumableTable

__all__ = ["ResumableTable", "SweepSpec", "Unit", "load_spec", "parse_spec"]
