"""Stage 4, intervene: interventions as frozen values. Attention edits compile to :mod:`interp.edits` (the fused
attention path); activation edits (:mod:`.values`) compile to hooks (:mod:`.compile`, :mod:`.run`)."""
from interp.intervene.means import ActivationMeans, mean_activations
from interp.intervene.run import edited, run
from interp.intervene.sinks import InitialTokenScale, MCEvaluator, SinkCalibrate, evaluate_sink_interventions
from interp.intervene.steering import HeadProbes, actadd, caa, generate, iti_edits, probe_heads
from interp.intervene.values import AddToHead, AddVector, MeanAblate, Patch, ResampleAblate, SetPattern, SubspacePatch, ZeroAblate

__all__ = ["SinkCalibrate", "InitialTokenScale", "MCEvaluator", "evaluate_sink_interventions", "run", "edited",
           "ZeroAblate", "MeanAblate", "ResampleAblate", "Patch", "AddToHead", "AddVector", "SetPattern", "SubspacePatch",
           "ActivationMeans", "mean_activations", "HeadProbes", "probe_heads", "iti_edits", "actadd", "caa", "generate"]
