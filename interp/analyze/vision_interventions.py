"""VHR (methods.md §9) and VAR (§4) as step-wise interventions on LLaVA-style models, with random-head controls.

Both papers decide *per sample, per generation step, layer by layer*: what layer l does depends on the
edits already made in layers < l. :class:`StepRunner` reproduces that with the KV cache: the prompt except
its last token is prefilled unedited; at each generation step the policy reads layer l's statistics (under
the edits chosen for earlier layers) and picks layer l's edits. The reference does this with one trial pass
per edited layer (stopped right after it) and a final pass; the default does it inside one pass, rerunning
an edited layer's attention call (same logits bit for bit, tested). Edits therefore act on generation-step
queries only, never on the prompt prefill. Everything runs through the fused attention path; the edits are
:mod:`interp.edits` values.

**VHR** (:class:`VHR`): per layer, VHD of every head (see :mod:`interp.analyze.vision`; the no-image branch
runs alongside, unedited); heads above the layer's median VHD and not above mean + 1 std (outlier surges)
get ``ScaleHeadOutput(h, α)`` (their ``z`` × α, i.e. before ``W_O``). α = 1 is the identity, bit for bit.

**VAR** (:class:`VAR`): sink tokens come from a clean scan (:func:`interp.analyze.vision.scan_sinks`,
union over layers 2..L-1, since the fused path takes one set of key segments for all layers); per layer
(all but the last) and head, the step query is image-centric if its image attention ≥ ``summ`` and the
visual-sink share of it ≤ ρ. For such a head the attention on *all* sink tokens (visual and text) becomes
``p×`` and the freed ``(1-p)·s`` goes to the non-sink image tokens in proportion to their attention; every
other key keeps its weight (the oracle of §4). The fused path's ``ScaleSegment(mode="redistribute")`` moves
freed mass to *all* other keys, so VAR is compiled to two redistributions whose factors are solved from the
row's masses ``s`` (sinks) and ``i`` (non-sink image) read in the trial pass:
``sinks × a1`` with ``a1 = p / (1 - (1-p)s)``, then ``image_rest × a2`` with
``a2 = (i + (1-p)s)(1 - (1-p)s) / i``; the net effect is exactly the VAR row. p = 1 is the identity (the
spec's p is the share the sinks keep; the issue's "p = 0" counts the share moved).

**Controls** (``random_control=True``): the same number of heads per (step, layer) as the method chose on the
same sample, drawn at random from the layer (seeded), given the same edit.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from interp.analyze.vision import Item, image_embeds, predict, scan_sinks, sink_dims  # noqa: F401 (sink_dims re-exported)
from interp.attnstats.fused import Recorder, activate, hf_model_of
from interp.attnstats.segments import build_segments
from interp.edits import Edit, ScaleHeadOutput, ScaleSegment, compile_edits
from interp.errors import InputError
from interp.images import vlm_batch, vlm_config
from interp.types import HeadId


class _Stop(Exception):
    """Raised by a forward hook to end a trial pass right after the layer it reads."""


@dataclass
class StepLog:
    """What a policy chose: ``chosen[(step, layer)] = heads``, plus per-(step, layer) head values it read."""

    chosen: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    values: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)


class StepRunner:
    """Greedy decoding of one image prompt, with per-layer edit decisions at each generation step."""

    def __init__(self, model, item: Item, *, segments: dict[str, torch.Tensor] | None = None, text_branch: bool = False,
                 backend: str = "auto"):
        from transformers import DynamicCache

        self.model, self.hf, self.backend = model, hf_model_of(model), backend
        cfg = vlm_config(model)
        self.n_layers = int(cfg.text_config.num_hidden_layers)
        self.n_heads = int(cfg.text_config.num_attention_heads)
        batch = vlm_batch(model, [item.prompt], [item.image], pad_id=0)
        n = batch.tokens.shape[1]
        segs = {"image": batch.image_mask[0].float(), **{k: torch.as_tensor(v).float() for k, v in (segments or {}).items()}}
        self.names, self.seg = build_segments(segs, batch.attention_mask, allow_overlap=True)
        emb = image_embeds(model, batch)  # [1 pos d_model]
        self.dev = emb.device
        self.cache = DynamicCache(config=cfg.text_config)
        self.next_embed, self.pos = emb[:, -1:], n - 1
        self._prefill(self.cache, emb[:, :-1], torch.arange(n - 1), self.seg)
        self.text_cache = None
        if text_branch:  # same tokens minus the image, positions kept (see interp.analyze.vision.text_only)
            keep = ~batch.image_mask[0]
            keep[-1] = False
            self.text_cache = DynamicCache(config=cfg.text_config)
            self._prefill(self.text_cache, emb[:, keep], torch.arange(n)[keep], None)
        self.step_index = 0

    def _prefill(self, cache, emb, pos, seg) -> None:
        rec = Recorder(seg, backend=self.backend, keep=False)
        with torch.no_grad(), activate(self.model, rec) as run:
            run(inputs_embeds=emb, position_ids=pos[None].to(self.dev), past_key_values=cache, use_cache=True,
                logits_to_keep=1)

    def _pass(self, run, rec: Recorder, cache, edits: Sequence[Edit], *, text: bool = False, stop_after: int | None = None,
              keep_z: bool = False):
        """One single-query pass inside an open ``activate`` context; the recorder is re-armed per pass
        (entering the fused context once per step instead of once per pass saves most of the overhead)."""
        rec.segments = None if text else self.seg
        rec.edits = compile_edits(edits, self.n_layers, self.n_heads, () if text else self.names)
        rec.keep_z, rec.last = keep_z, {}
        base = cache.get_seq_length()
        hook = None
        if stop_after is not None and stop_after < self.n_layers - 1:
            layer = self.hf.model.language_model.layers[stop_after]
            hook = layer.register_forward_hook(lambda *a: (_ for _ in ()).throw(_Stop()))
        out = None
        try:
            out = run(inputs_embeds=self.next_embed, position_ids=torch.tensor([[self.pos]], device=self.dev),
                      past_key_values=cache, use_cache=True, logits_to_keep=1)
        except _Stop:
            pass
        finally:
            if hook is not None:
                hook.remove()
        if stop_after is not None:
            _truncate(cache, base)
        return rec.last, (None if out is None else out.logits[0, -1].float())

    def trial(self, edits: Sequence[Edit], layer: int, *, keep_z: bool = False):
        """Layer ``layer``'s statistics at the current step under ``edits`` (the cache is left as it was)."""
        rec = Recorder(self.seg, backend=self.backend, keep=False)
        with torch.no_grad(), activate(self.model, rec) as run:
            return self._pass(run, rec, self.cache, edits, stop_after=layer, keep_z=keep_z)[0][layer]

    def step(self, policy: "Policy | None", log: StepLog | None = None, *, reference: bool = False) -> torch.Tensor:
        """One generation step: returns the next-token logits ``[d_vocab]`` and advances the cache.

        ``reference=True`` decides layer by layer with trial passes (one stopped pass per edited layer, then a
        final pass): the readable specification. The default decides inside one pass: a hook on each edited
        layer's attention reads that layer's statistics (computed under the edits of earlier layers), lets
        the policy choose, and, if it chose edits, drops the layer's fresh cache entry and reruns that
        attention call with them. Both give the same logits bit for bit (tested)."""
        rec = Recorder(self.seg, backend=self.backend, keep=False)
        with torch.no_grad(), activate(self.model, rec) as run:
            text_stats = None
            if self.text_cache is not None:
                text_stats, _ = self._pass(run, rec, self.text_cache, (), text=True, keep_z=True)
            if policy is None:
                _, logits = self._pass(run, rec, self.cache, ())
            elif reference:
                logits = self._step_trials(run, rec, policy, log, text_stats)
            else:
                logits = self._step_inline(run, rec, policy, log, text_stats)
        self.step_index += 1
        return logits

    def _record(self, log, layer, heads, values) -> None:
        if log is not None:
            log.chosen[(self.step_index, layer)] = heads
            if values is not None:
                log.values[(self.step_index, layer)] = values

    def _step_trials(self, run, rec, policy, log, text_stats):
        edits: list[Edit] = []
        for layer in policy.layer_list(self.n_layers):
            stats, _ = self._pass(run, rec, self.cache, edits, stop_after=layer, keep_z=policy.needs_z)
            new, heads, values = policy.decide(self, layer, stats[layer], None if text_stats is None else text_stats[layer])
            edits += new
            self._record(log, layer, heads, values)
        return self._pass(run, rec, self.cache, edits)[1]

    def _step_inline(self, run, rec, policy, log, text_stats):
        layers = self.hf.model.language_model.layers
        rerunning = set()

        def hook(module, args, kwargs, output, layer):
            if layer in rerunning:
                return output
            new, heads, values = policy.decide(self, layer, rec.last[layer], None if text_stats is None else text_stats[layer])
            self._record(log, layer, heads, values)
            if not new:
                return output
            rec.edits[layer] = compile_edits(new, self.n_layers, self.n_heads, self.names)[layer]
            self.cache.layers[layer].crop(-1)  # the first call already appended this step's key/value
            rerunning.add(layer)
            try:
                return module(*args, **kwargs)
            finally:
                rerunning.discard(layer)

        handles = [layers[l].self_attn.register_forward_hook(lambda m, a, k, o, l=l: hook(m, a, k, o, l), with_kwargs=True)
                   for l in policy.layer_list(self.n_layers)]
        try:
            return self._pass(run, rec, self.cache, (), keep_z=policy.needs_z)[1]
        finally:
            for h in handles:
                h.remove()

    def feed(self, token: int) -> None:
        self.next_embed = self.hf.get_input_embeddings()(torch.tensor([[token]], device=self.dev))
        self.pos += 1


def _truncate(cache, length: int) -> None:
    """Drop what a trial pass appended (only the layers it reached grew)."""
    for layer in cache.layers:
        extra = layer.get_seq_length() - length if getattr(layer, "is_initialized", True) else 0
        if extra > 0:
            layer.crop(-extra)


class Policy:
    """Chooses the edits of one layer at one step from that layer's statistics in the trial pass."""

    needs_z = False
    text_branch = False

    def layer_list(self, n_layers: int) -> list[int]:
        raise NotImplementedError

    def decide(self, runner: StepRunner, layer: int, stats, text_stats) -> tuple[list[Edit], list[int], np.ndarray | None]:
        raise NotImplementedError


def _layers(layers, n_layers: int, default: Sequence[int]) -> list[int]:
    out = sorted(set(default if layers is None else layers))
    if any(not 0 <= l < n_layers for l in out):
        raise InputError(f"layers {out} out of range for a model with {n_layers} layers")
    return out


@dataclass
class VHR(Policy):
    """Vision-aware Head Reinforcement: scale the high-VHD heads of each layer by ``alpha``."""

    alpha: float = 2.0
    layers: Sequence[int] | None = None  # None: every layer
    needs_z = True
    text_branch = True

    def __post_init__(self):
        if not self.alpha >= 0:
            raise InputError(f"VHR alpha must be >= 0, got {self.alpha}")

    def layer_list(self, n_layers):
        return _layers(self.layers, n_layers, range(n_layers))

    def decide(self, runner, layer, stats, text_stats):
        d = (stats.out[0, :, -1] - text_stats.out[0, :, -1]).float().cpu()  # [head_index d_head] at the step query
        w = runner.hf.model.language_model.layers[layer].self_attn.o_proj.weight.detach().float().cpu()
        v = torch.einsum("hd,mhd->hm", d, w.view(w.shape[0], d.shape[0], -1)).norm(dim=-1).numpy()  # VHD per head
        heads = select_vhr(v)
        return [ScaleHeadOutput(HeadId(layer, h), self.alpha) for h in heads], heads, v


def select_vhr(v: np.ndarray) -> list[int]:
    """Heads above the layer median VHD, excluding outlier surges (> mean + 1 std)."""
    med, cap = np.median(v), v.mean() + v.std()
    return [int(h) for h in np.flatnonzero((v > med) & (v <= cap))]


@dataclass
class VAR(Policy):
    """Visual Attention Redistribution: move ``1 - p`` of the sink attention of image-centric heads to the
    non-sink image tokens. Needs the sink segments (:func:`var_segments`)."""

    p: float = 0.6
    rho: float = 0.5
    summ: float = 0.2
    layers: Sequence[int] | None = None  # None: every layer but the last

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise InputError(f"VAR p must lie in [0, 1] (the share of sink attention kept), got {self.p}")

    def layer_list(self, n_layers):
        return _layers(self.layers, n_layers, range(n_layers - 1))

    def decide(self, runner, layer, stats, text_stats):
        m = stats.segment_mass[0, :, -1].double()  # [head_index n_segments]
        names = list(runner.names)
        s, vs, ir = m[:, names.index("sinks")], m[:, names.index("visual_sinks")], m[:, names.index("image_rest")]
        total = vs + ir
        sel = (total >= self.summ) & (vs <= self.rho * total) & (ir > 0)
        heads = [int(h) for h in sel.nonzero()[:, 0]]
        return var_edits(layer, heads, s, ir, self.p), heads, total.float().numpy()


def var_edits(layer: int, heads: Sequence[int], s: torch.Tensor, i: torch.Tensor, p: float) -> list[Edit]:
    """The two redistributions that realise VAR on each head's row (see the module docstring)."""
    out: list[Edit] = []
    if p == 1:
        return out
    for h in heads:
        sh, ih = float(s[h]), float(i[h])
        if ih <= 0:
            continue
        keep = 1 - (1 - p) * sh
        out += [ScaleSegment(HeadId(layer, h), "sinks", p / keep, "redistribute"),
                ScaleSegment(HeadId(layer, h), "image_rest", (ih + (1 - p) * sh) * keep / ih, "redistribute")]
    return out


@dataclass
class RandomHeads(Policy):
    """Control: per (step, layer), as many random heads as ``reference`` chose, given ``base``'s edit."""

    base: Policy
    reference: StepLog
    seed: int = 0

    def __post_init__(self):
        self.needs_z, self.text_branch = False, False
        self._rng = random.Random(self.seed)

    def layer_list(self, n_layers):
        return self.base.layer_list(n_layers)

    def decide(self, runner, layer, stats, text_stats):
        steps = [k[0] for k in self.reference.chosen if k[1] == layer]
        ref = self.reference.chosen.get((runner.step_index, layer), self.reference.chosen.get((max(steps), layer), []) if steps else [])
        heads = sorted(self._rng.sample(range(runner.n_heads), len(ref)))
        if isinstance(self.base, VHR):
            return [ScaleHeadOutput(HeadId(layer, h), self.base.alpha) for h in heads], heads, None
        m = stats.segment_mass[0, :, -1].double()
        names = list(runner.names)
        s, ir = m[:, names.index("sinks")], m[:, names.index("image_rest")]
        return var_edits(layer, heads, s, ir, self.base.p), heads, None


def var_segments(model, item: Item, dims: Sequence[int], tau: float = 20.0) -> dict[str, torch.Tensor]:
    """``sinks`` (visual ∪ text sink tokens), ``visual_sinks`` and ``image_rest`` masks ``[pos]`` of a prompt."""
    b = vlm_batch(model, [item.prompt], [item.image], pad_id=0)
    visual, text = scan_sinks(model, b, dims, tau=tau).union()
    img = b.image_mask[0]
    return {"sinks": (visual | text)[0].float(), "visual_sinks": visual[0].float(), "image_rest": (img & ~visual[0]).float()}


def run_item(model, item: Item, policy: Policy | None, *, max_new_tokens: int = 1, stop_ids: Sequence[int] = (),
             segments=None, backend: str = "auto", reference: bool = False) -> tuple[list[int], torch.Tensor, StepLog]:
    """Greedy decoding of one item under ``policy``: generated ids, first-step logits, and the policy's log
    (``reference=True``: decide with trial passes, see :meth:`StepRunner.step`)."""
    text = policy is not None and policy.text_branch
    runner = StepRunner(model, item, segments=segments, text_branch=text, backend=backend)
    log, out, first = StepLog(), [], None
    for _ in range(max_new_tokens):
        logits = runner.step(policy, log, reference=reference)
        first = logits if first is None else first
        tok = int(logits.argmax())
        out.append(tok)
        if tok in stop_ids:
            break
        runner.feed(tok)
    return out, first, log


@dataclass
class Outcome:
    """Per condition: predicted options of answer items, captions, and the policy logs."""

    preds: list[str]
    captions: list[str]
    logs: list[StepLog]


def evaluate(model, answer_items: Sequence[Item], caption_items: Sequence[Item], make_policy: Callable[[int, StepLog | None], Policy | None],
             *, reference: Outcome | None = None, segments: Callable[[Item], dict] | None = None, max_caption_tokens: int = 24,
             backend: str = "auto", progress=None) -> Outcome:
    """Run every item under ``make_policy(index, reference_log)`` (None: no edits)."""
    tok = model.tokenizer
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    preds, caps, logs = [], [], []
    all_items = list(answer_items) + list(caption_items)
    for i, it in enumerate(all_items):
        ref = reference.logs[i] if reference is not None else None
        pol = make_policy(i, ref)
        seg = segments(it) if segments is not None else None
        if i < len(answer_items):
            _, first, log = run_item(model, it, pol, segments=seg, backend=backend)
            preds.append(predict(tok, it.kind, first))
        else:
            ids, _, log = run_item(model, it, pol, max_new_tokens=max_caption_tokens, stop_ids=stop, segments=seg, backend=backend)
            caps.append(tok.decode(ids, skip_special_tokens=True).strip())
        logs.append(log)
        if progress is not None:
            progress.update(1)
    return Outcome(preds, caps, logs)


__all__ = ["StepRunner", "StepLog", "VHR", "VAR", "RandomHeads", "Policy", "select_vhr", "var_edits", "var_segments",
           "run_item", "evaluate", "Outcome", "sink_dims"]
