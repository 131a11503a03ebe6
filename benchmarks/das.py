"""DAS step and epoch time against one forward+backward of the whole model on the same batch (SmolLM2, IOI pairs).

The naive step is what a DAS without the prefix cache does: the whole model on the batch (every position, every
layer, logits at every position) with the rotation patched in by a hook, weights frozen, backward to the rotation.
Ours (``interp.analyze.subspace``) runs only the layers above the patch, on each prompt's last token, reading the
clean keys/values of earlier positions. Prints medians over rounds and the load average beside them.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/das.py --layer 15 --pairs 200 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--site", default="resid_post")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if a.pairs < a.batch or a.batch < 1 or a.rounds < 1 or a.threads < 1:
        print("error: need pairs >= batch >= 1, rounds >= 1, threads >= 1", file=sys.stderr)
        return 2
    import torch

    import interp
    from interp.analyze.subspace import Interchanger, _frozen, _hf_of, _Rotation
    from interp.intervene.hf import find_stack, plain
    from interp.tasks.ioi import position_pairs

    torch.set_num_threads(a.threads)
    model = interp.load_model("smollm2-135m")
    if not 0 <= a.layer < model.cfg.n_layers:
        print(f"error: --layer must be in 0..{model.cfg.n_layers - 1}", file=sys.stderr)
        return 2
    pairs = position_pairs(model, a.pairs, seed=0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    ix = Interchanger(model, pairs.base, pairs.source, a.site, a.layer, (-1,))
    t_setup = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kv_mb = sum(k.numel() + v.numel() for k, v in ix.kv.values()) * 4 / 2**20
    d = ix.width
    y = pairs.target
    rows = torch.arange(a.batch)
    stack = find_stack(model)
    hf = _hf_of(model)

    def our_step(rot, opt, idx):
        loss = torch.nn.functional.cross_entropy(ix.logits(rot, idx), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def naive_step(rot, opt, idx):
        toks, mask = ix.tokens[idx], ix.mask[idx]
        e = ix.end[idx]

        def hook(module, args, out):  # resid_post of the layer: the decoder layer's output
            h = out[0] if isinstance(out, tuple) else out
            b = torch.arange(h.shape[0])
            new = h.index_put((b, e), rot(h[b, e][:, None], ix.src[idx].to(h.dtype))[:, 0])
            return (new, *out[1:]) if isinstance(out, tuple) else new

        with plain(model) as m:
            handle = stack.layers[a.layer].register_forward_hook(hook)
            try:
                logits = m(input_ids=toks, attention_mask=mask, use_cache=False).logits  # every position
            finally:
                handle.remove()
        loss = torch.nn.functional.cross_entropy(logits[torch.arange(len(idx)), e], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps_per_epoch = (int(round(0.8 * a.pairs)) + a.batch - 1) // a.batch
    ours, naive, epochs = [], [], []
    with _frozen(hf), torch.enable_grad():
        rot = _Rotation(d, 1, False, 0)
        opt = torch.optim.Adam(rot.parameters(), lr=0.1)
        our_step(rot, opt, rows)  # warm-up
        naive_step(rot, opt, rows)
        for _ in range(a.rounds):
            t = time.perf_counter()
            naive_step(rot, opt, rows)
            naive.append(time.perf_counter() - t)
            t = time.perf_counter()
            our_step(rot, opt, rows)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            for s in range(steps_per_epoch):
                our_step(rot, opt, torch.arange(s * a.batch, (s + 1) * a.batch) % a.pairs)
            epochs.append(time.perf_counter() - t)
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m_naive, m_ours, m_epoch = (statistics.median(x) for x in (naive, ours, epochs))
    load = os.getloadavg()
    print(f"SmolLM2-135M, {a.site} layer {a.layer}, batch {a.batch} x ~{int(ix.mask.sum(1).float().mean())} tokens, "
          f"{a.pairs} pairs ({steps_per_epoch} steps/epoch), threads {a.threads}, rounds {a.rounds}")
    print(f"setup (prefix, source capture, clean K/V): {t_setup:.2f} s; K/V store {kv_mb:.1f} MiB")
    print(f"naive step (whole model fwd+bwd): median {m_naive * 1e3:.0f} ms  {['%.0f' % (x * 1e3) for x in naive]}")
    print(f"our step:                         median {m_ours * 1e3:.0f} ms  {['%.0f' % (x * 1e3) for x in ours]}  "
          f"ratio {m_ours / m_naive:.3f}")
    print(f"our epoch ({steps_per_epoch} steps):            median {m_epoch * 1e3:.0f} ms  ratio to one naive fwd+bwd "
          f"{m_epoch / m_naive:.3f}")
    print(f"max RSS: {rss0 / 1024:.0f} MiB after load, {rss1 / 1024:.0f} after setup, {rss2 / 1024:.0f} after the runs")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
