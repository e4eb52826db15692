"""A regulariser of your own, as a ganfn part: LeCam regularisation (Tseng et al., 2021).

LeCam keeps moving averages of D's mean output on real and on fake samples and
penalises D's outputs that stray past the *other* side's average:

    R = E_real[relu(D(x) - a_fake)^2] + E_fake[relu(a_real - D(G(z)))^2]

The averages are running state, so the part has an ``init`` (the state it
starts with), a ``d_term`` (the loss term; its aux carries this batch's mean
outputs) and an ``after_d`` hook (advance the averages after each D update).
Its weight and decay are hyperparameters in the training state, so a vmapped
sweep gives each member its own. Nothing here is special to ganfn's own parts:
the same part runs in a single step, a vmapped ensemble, under torch.compile,
in the data-parallel step, and checkpoints and resumes with the rest of the state.

Run: python examples/custom_part.py   (a few seconds on a CPU)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ganfn
from ganfn import ensemble, optim
from ganfn.data import ring8
from ganfn.parts import Ctx, DTerm, Hyper, InitCtx, Part
from ganfn.validate import Range


def lecam(weight: float = 0.3, decay: float = 0.99) -> Part:
    """The LeCam regulariser as a part named ``lecam``."""

    def init(ctx: InitCtx) -> dict:
        zero = torch.zeros((), dtype=ctx.dtype, device=ctx.device)
        return {"real": zero, "fake": zero.clone()}

    def d_term(x: DTerm, ctx: Ctx):
        avg = ctx.state
        reg = torch.mean(F.relu(x.d_real - avg["fake"]) ** 2) + torch.mean(F.relu(avg["real"] - x.d_fake) ** 2)
        # aux: this batch's mean outputs (batch means: data-parallel runs average them across ranks).
        return ctx.hp["lecam_weight"] * reg, {"real": x.d_real.detach().mean(), "fake": x.d_fake.detach().mean()}

    def after_d(d_params, ctx: Ctx, aux):
        mine, d = aux.parts["lecam"], ctx.hp["lecam_decay"]
        return d_params, {k: torch.lerp(mine[k], v, d.to(v.dtype)) for k, v in ctx.state.items()}

    hparams = {"lecam_weight": Hyper(weight, Range(0.0)), "lecam_decay": Hyper(decay, Range(0.0, 1.0))}
    return Part("lecam", hparams, init=init, d_term=d_term, after_d=after_d)


def main(steps: int = 200) -> None:
    torch.set_num_threads(1)
    G = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 2))
    D = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    gan = ganfn.GAN(G, D, latent_dim=2, loss="hinge", parts=[lecam(), ganfn.parts.ema(0.99)],
                    g_optimizer=optim.adam(1e-3), d_optimizer=optim.adam(1e-3))
    # Three members, three LeCam weights, one vmapped program.
    seeds, weights = [0, 1, 2], [0.0, 0.3, 1.0]
    state = ensemble.init_many(gan, seeds, [{"lecam_weight": w} for w in weights])
    rngs, data_rng = ensemble.rngs(seeds), torch.Generator().manual_seed(7)
    step = ensemble.make_step(gan)
    for _ in range(steps):
        state, metrics = step(state, ring8(128, data_rng), ensemble.draw_noise_many(gan, rngs, 128))
    for w, a_real, a_fake, pen in zip(weights, state.parts["lecam"]["real"], state.parts["lecam"]["fake"],
                                      metrics["penalty"], strict=True):
        print(f"lecam_weight {w:.1f}: running D(real) {float(a_real):+.3f}, D(fake) {float(a_fake):+.3f}, term "
              f"{float(pen):.4f}")


if __name__ == "__main__":
    main()
