"""Training-time attention tools: σReparam (Zhai et al. 2023), the spectral entropy bound, the per-head
``EntropyTracker``, the entropy regularizer of Jha & Reagen, and a tiny causal LM used by the demonstration.

One concept per module: :mod:`.sigma_reparam`, :mod:`.entropy_bound`, :mod:`.tracker`, :mod:`.entropy_reg`,
:mod:`.tiny_lm`.
"""
from interp.train.entropy_bound import attention_logit_sigma, entropy_lower_bound
from interp.train.entropy_reg import EntropyRegularization, entropy_regularization
from interp.train.sigma_reparam import SigmaReparam, sigma_reparam
from interp.train.tracker import EntropyTracker

__all__ = ["SigmaReparam", "sigma_reparam", "entropy_lower_bound", "attention_logit_sigma", "EntropyTracker",
           "EntropyRegularization", "entropy_regularization"]
