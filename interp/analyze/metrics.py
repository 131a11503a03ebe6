"""Metric names the analyzers write, declared once (light: no torch), so that the atlas job, its report and a sweep
spec's ``metrics = [...]`` check read one list."""
from __future__ import annotations

# the atlas job's per-head heatmaps: attention detectors (analyze.detectors, analyze.attention) and sink metrics
# (analyze.sinks)
ATLAS_METRICS = ("previous_token", "duplicate_token", "induction", "entropy", "normalized_entropy", "first_token_mass",
                 "sink_rate", "hidden_sink_count")

# job analysis → every metric its tidy rows may hold (None: the job does not declare them)
JOB_METRICS: dict[str, tuple[str, ...]] = {
    "atlas": (*ATLAS_METRICS, "alpha_first", "retrieval_score"),
    "entropy": ("entropy", "normalized_entropy", "collapsed", "overloaded"),  # analyze.entropy
    "retrieval": ("retrieval_score", "copy_paste"),  # analyze.retrieval
}
