"""Stage 4, intervene: interventions as frozen values that compile to :mod:`interp.edits` (applied inside the
fused attention path), with their searches and evaluations."""
from interp.intervene.sinks import InitialTokenScale, MCEvaluator, SinkCalibrate, evaluate_sink_interventions

__all__ = ["SinkCalibrate", "InitialTokenScale", "MCEvaluator", "evaluate_sink_interventions"]
