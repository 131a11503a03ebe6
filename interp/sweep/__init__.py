"""Sweeps: a TOML spec (:mod:`.spec`) expands to a grid of units (:mod:`.units`) run locally or on Ray
(:mod:`.backends`), each stored as a resumable parquet part (:class:`interp.store.ResumableTable`). A unit is an
intervention swept over heads (:func:`interp.intervene.heads.sweep_heads`), a task analysis, or a whole job, so
this stage sits above :mod:`interp.jobs`. The whole ``interp sweep`` run is :func:`interp.sweep.run.run_sweep`."""
from interp.store import ResumableTable
from interp.sweep.spec import SweepSpec, Unit, load_spec, parse_spec

__all__ = ["ResumableTable", "SweepSpec", "Unit", "load_spec", "parse_spec"]
