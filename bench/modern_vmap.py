"""Vmapped members against sequential single runs for the R3GAN and StyleGAN2 pairs (CPU, eager).

    nice python bench/modern_vmap.py                          # S = 4, 32 px, width 16, batch 32
    python bench/modern_vmap.py --members 8 --width 32 --device cuda

Times one training step of S members two ways, interleaved round by round,
each round in a rotated order (median over rounds): ``vmap(gan.train_step)``
over the stacked states, and S sequential ``gan.train_step`` calls; on the CPU
by the process's CPU time (1 thread). R3GAN: RpGAN + R1 + R2 (0.05), Adam (0,
0.9); StyleGAN2 (the StyleGAN2-ADA cifar layout): non-saturating + R1 (0.01),
Adam (0, 0.99). Ratio > 1: the vmapped step has the higher throughput.
``--plain`` also times, in the same rounds, the vmapped step without R3GAN's
vmap-specific forms: its convolutions left to vmap's own batching rule
(members folded into the groups) instead of ``ganfn.models.member_conv`` (one
convolution per member), and ``bilinear_down`` as one single-channel filter.
``--member-conv`` also times it with R3GAN's convolutions replaced by
``ganfn.models.member_conv.member_conv2d`` (opt-in: one convolution per member).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import ganfn
from ganfn import optim, penalties
from ganfn.models import member_conv, r3gan, stylegan2


def _gan(name: str, size: int, width: int) -> ganfn.GAN:
    if name == "r3gan":
        G, D = r3gan(size, 3, latent_dim=64, width=width, blocks=2, group_channels=min(16, 2 * width))
        parts = [penalties.as_part(penalties.r1(0.05)), penalties.as_part(penalties.r2(0.05))]
        return ganfn.GAN(G, D, latent_dim=G.latent_dim, loss="rpgan", parts=parts,
                         g_optimizer=optim.adam(2e-4, (0.0, 0.9)), d_optimizer=optim.adam(2e-4, (0.0, 0.9)))
    G, D = stylegan2(size, 3, z_dim=64, w_dim=64, mapping_layers=2, width=width, residual=False, mbstd_group=32)
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, parts=[penalties.as_part(penalties.r1(0.01))],
                     g_optimizer=optim.adam(2.5e-3, (0.0, 0.99)), d_optimizer=optim.adam(2.5e-3, (0.0, 0.99)))


def _clock(fn, device: str) -> float:
    """Seconds ``fn`` takes: wall time on a GPU; on the CPU this process's
    CPU time, which other jobs on a shared machine inflate far less."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    if device == "cuda":
        torch.cuda.synchronize()
    t = clock()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - t


r3gan_mod = sys.modules["ganfn.models.r3gan"]  # the module (``ganfn.models.r3gan`` is the function)


def _plain(fn):
    """``fn`` with R3GAN's vmap-specific forms off: ``member_conv2d`` and
    ``bilinear_down`` take their single-run code under vmap too (the code before them)."""
    def run():
        real = member_conv._under_vmap
        member_conv._under_vmap = r3gan_mod._under_vmap = lambda: False
        try:
            return fn()
        finally:
            member_conv._under_vmap = r3gan_mod._under_vmap = real
    return run


def _member(fn):
    """``fn`` with R3GAN's convolutions in the per-member form under vmap."""
    def run():
        conv = r3gan_mod._Conv
        real, conv.forward = conv.forward, lambda self, x: member_conv.member_conv2d(x, self.weight, self.padding,
                                                                                   self.groups)
        try:
            return fn()
        finally:
            conv.forward = real
    return run


def _time_model(name: str, a: argparse.Namespace) -> list[float]:
    """Median seconds per step of ``a.members`` members: vmapped, sequential,
    then (if asked) vmapped without R3GAN's vmap forms and with member convs."""
    gan = _gan(name, a.size, a.width)
    states = [ganfn.tree_map(lambda t: t.to(a.device), gan.init(s)) for s in range(a.members)]
    rngs = [torch.Generator().manual_seed(s) for s in range(a.members)]
    real = [torch.randn(a.batch, 3, a.size, a.size, generator=r).to(a.device) for r in rngs]
    noise = [ganfn.tree_map(lambda t: t.to(a.device), gan.draw_noise(r, a.batch)) for r in rngs]
    stacked, sreal, snoise = ganfn.stack(states), torch.stack(real), ganfn.stack(noise)
    vstep = torch.func.vmap(gan.train_step)

    def vm():
        return vstep(stacked, sreal, snoise)

    def seq():
        return [gan.train_step(s, r, n) for s, r, n in zip(states, real, noise, strict=True)]

    forms = [vm, seq] + ([_plain(vm)] if a.plain else []) + ([_member(vm)] if a.member_conv else [])
    times: list[list[float]] = [[] for _ in forms]
    for f in forms:
        f()  # warm-up
    for r in range(a.rounds):
        for i in range(len(forms)):  # each round starts with the next form: no form always runs first
            j = (i + r) % len(forms)
            times[j].append(_clock(forms[j], a.device))
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="r3gan,stylegan2")
    ap.add_argument("--plain", action="store_true",
                    help="also time the vmapped step without R3GAN's vmap-specific forms (as before them)")
    ap.add_argument("--member-conv", action="store_true",
                    help="also time the vmapped step with R3GAN's convolutions one per member")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name in a.models.split(","):
        v, s, *more = _time_model(name, a)
        labels = ["vmap without the vmap forms"] * a.plain + ["vmap with member convs"] * a.member_conv
        plain = "".join(f"; {lab} {p * 1e3:.0f} ms/step, ratio {s / p:.2f}"
                        for lab, p in zip(labels, more, strict=True))
        print(f"{name}-{a.size} width {a.width} batch {a.batch}, S={a.members}: vmap {v * 1e3:.0f} ms/step, "
              f"sequential {s * 1e3:.0f} ms/step, throughput ratio {s / v:.2f}{plain}", flush=True)


if __name__ == "__main__":
    main()
