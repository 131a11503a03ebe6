"""Stage 4, intervene: interventions as frozen values. Attention edits compile to :mod:`interp.edits` (the fused
attention path); activation edits (:mod:`.values`) compile to hooks (:mod:`.compile`, :mod:`.run`); :mod:`.heads`
applies one edit per head, many heads per forward. Interventions built from an analysis (ACT's ``SinkCalibrate``,
VHR/VAR) sit a stage higher, in :mod:`interp.analyze.sink_interventions` and :mod:`interp.analyze.vision_interventions`."""
from interp.intervene.means import mean_activations, mean_ablate
from interp.intervene.run import edited, run
from interp.intervene.steering import HeadProbes, actadd, caa, generate, iti_edits, probe_heads
from interp.intervene.values import (ActivationMeans, AddToHead, AddVector, MeanAblate, Patch, ResampleAblate, SetPattern,
                                     SubspacePatch, ZeroAblate)

__all__ = ["run", "edited", "ZeroAblate", "MeanAblate", "ResampleAblate", "Patch", "AddToHead", "AddVector", "SetPattern",
           "SubspacePatch", "ActivationMeans", "mean_activations", "mean_ablate", "HeadProbes", "probe_heads", "iti_edits",
           "actadd", "caa", "generate"]
