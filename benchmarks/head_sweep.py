"""Zero- then mean-ablate every SmolLM2 head on IOI prompts, metric = logit difference:

(a) ``interp.sweep_heads`` (batched rows, clean-prefix sharing, only the metric's logits);
(b) our own loop, one ``interp.run`` per head;
(c) TransformerLens's loop, one ``model.run_with_hooks`` per head on the bridge (``hook_z``).

(b) and (c) cost one full forward per head, so by default they run on ``--loop-heads`` heads spread over all
layers and their time per head is scaled to all heads (``--loop-heads 0`` runs every head). The loops' values
are checked against the sweep on the heads they ran. Peak RSS above the loaded model is sampled per phase.
Also times AtP (all heads, one clean forward+backward and one corrupted forward).

    python benchmarks/head_sweep.py [--prompts 50] [--loop-heads 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import threading
import time

import torch


class PeakRSS:
    """Peak resident memory (GB) while the block runs, sampled every 20 ms, minus the RSS at entry."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = False
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.gb = (self.peak - self.base) / 2**30


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(argv=None):
    import interp
    from interp.analyze.attribution import attribution_patching
    from interp.inputs import to_batch
    from interp.intervene.run import run
    from interp.tasks.ioi import ioi
    from interp.types import HeadId, hook_name

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--loop-heads", type=int, default=30, help="heads timed in loops (b) and (c); 0 = all")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = interp.load_model(a.model)
    data = ioi(model, a.prompts, seed=0, templates=[0])
    batch = to_batch(model, data.clean)
    metric = data.metric
    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads = [HeadId(l, h) for l in range(L) for h in range(H)]
    n_loop = len(heads) if a.loop_heads <= 0 else min(a.loop_heads, len(heads))
    loop_heads = [heads[round(i * (len(heads) - 1) / max(n_loop - 1, 1))] for i in range(n_loop)]
    means = interp.mean_activations(model, ioi(model, a.prompts, seed=1, templates=[0]).corrupted, sites=("z",))
    kinds = {"zero": (lambda h: interp.ZeroAblate(h), lambda z, h: 0.0),
             "mean": (lambda h: interp.MeanAblate(h, mean=means), lambda z, h: means["z", h.layer][h.head].to(z))}
    print(f"model={a.model} prompts={a.prompts} tokens={batch.tokens.shape[1]} heads={len(heads)} loop heads={n_loop} "
          f"threads={torch.get_num_threads()}")
    rows = []
    for kind, (make, value) in kinds.items():
        with PeakRSS() as ma:
            t0 = time.perf_counter()
            df = interp.sweep_heads(model, batch.tokens, make, metric, progress=False)
            ta = time.perf_counter() - t0
        swept = {(r.layer, r.head): r.value for r in df.itertuples()}
        with PeakRSS() as mb:
            t0 = time.perf_counter()
            vb = [float(metric(run(model, batch.tokens, [make(h)]))) for h in loop_heads]
            tb = (time.perf_counter() - t0) / n_loop * len(heads)
        with PeakRSS() as mc, torch.no_grad():
            t0 = time.perf_counter()
            vc = []
            for h in loop_heads:
                def hook(z, hook, h=h):
                    z = z.clone()
                    z[:, :, h.head] = value(z, h)
                    return z
                vc.append(float(metric(model.run_with_hooks(batch.tokens, fwd_hooks=[(hook_name("z", h.layer), hook)]))))
            tc = (time.perf_counter() - t0) / n_loop * len(heads)
        err_b = max(abs(v - swept[h.layer, h.head]) for v, h in zip(vb, loop_heads))
        err_c = max(abs(v - swept[h.layer, h.head]) for v, h in zip(vc, loop_heads))
        rows.append((kind, ta, tb, tc, ma.gb, mb.gb, mc.gb, err_b, err_c))
    with PeakRSS() as mt:
        t0 = time.perf_counter()
        attribution_patching(model, data.clean, data.corrupted, metric, qk_fix=True)
        t_atp = time.perf_counter() - t0
    print("| ablation | (a) sweep s | (b) own loop s | (c) TL loop s | c/a | b/a | peak GB a / b / c | max |a−b| | max |a−c| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, ta, tb, tc, ga, gb, gc, eb, ec in rows:
        print(f"| {kind} | {ta:.1f} | {tb:.1f} | {tc:.1f} | {tc / ta:.1f} | {tb / ta:.1f} | {ga:.2f} / {gb:.2f} / {gc:.2f} | {eb:.1e} | {ec:.1e} |")
    print(f"AtP + AtP* (all heads, z/q/k/v/mlp): {t_atp:.1f} s, peak {mt.gb:.2f} GB; zero-ablation sweep / AtP = {rows[0][1] / t_atp:.1f}")


if __name__ == "__main__":
    main()
