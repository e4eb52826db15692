"""Regularisers of the discriminator beyond the classic gradient penalties: the
math only, as pure functions of explicit tensors.

- :func:`lecam_init`, :func:`lecam_update`, :func:`lecam_term`: LeCam
  regularisation (Tseng et al., 2021) with moving averages of D's outputs kept in
  an explicit state.
- :func:`dragan_term`: DRAGAN (Kodali et al., 2017), a gradient penalty around
  perturbed real data.
- :func:`one_sided_gp_term`: the one-sided gradient penalty (Gulrajani et al.,
  2017, discussed; Petzka et al., 2018), which penalises only gradient norms above 1.
- :func:`bcr_term`: balanced consistency regularisation (bCR; Zhao et al., 2020,
  "Improved Consistency Regularization for GANs"), built on :mod:`ganfn.augment`.
- :func:`lazy`, :func:`lazy_adam_compensation`: lazy regularisation (Karras et
  al., 2020, StyleGAN2, sec. 3.1): a penalty every ``k`` D updates with its
  weight scaled by ``k``.

Every random input (perturbations, interpolation weights, augmentation noise)
is an argument, so these run under ``torch.func.vmap``/``grad`` and
``torch.compile``. Input gradients come from ``torch.func.grad`` (see
:func:`ganfn.penalties.input_grad_norms`); as there, D must not mix samples
(no batch statistics).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import augment
from . import penalties as _penalties  # input_grad_norms, read at call time (penalties imports this module)

__all__ = [
    "LeCamState",
    "lecam_init",
    "lecam_update",
    "lecam_term",
    "dragan_term",
    "one_sided_gp_term",
    "bcr_term",
    "lazy",
    "lazy_adam_compensation",
]

DFn = Callable[[Tensor], Tensor]
Weight = float | Tensor


def _scores(out: Tensor) -> Tensor:
    """One score per sample: [B] from [B], [B, 1] or [B, ...] (mean over the rest)."""
    return out.reshape(out.shape[0], -1).mean(1)


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)


# -- LeCam (Tseng et al., 2021, "Regularizing Generative Adversarial Networks under Limited Data")


class LeCamState(NamedTuple):
    """Moving averages of D's mean output on real (``real``) and on fake
    (``fake``) data, and the number of updates seen (``count``): 0-d tensors."""

    real: Tensor
    fake: Tensor
    count: Tensor  # type: ignore[assignment]  # a field named like tuple.count, which it shadows


def lecam_init(*, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> LeCamState:
    """The state before the first update (the first update sets the averages)."""
    z = torch.zeros((), dtype=dtype, device=device)
    return LeCamState(real=z, fake=z, count=torch.zeros((), dtype=torch.long, device=device))


def lecam_update(state: LeCamState, real_out: Tensor, fake_out: Tensor, *, decay: Weight = 0.99,
                 start: int = 0) -> LeCamState:
    """The averages after one D update: ``a <- decay * a + (1 - decay) * mean(D(x))``
    for real and fake outputs (detached). Until ``count >= start`` (and always on
    the first update) the decay is 0, so the averages follow the latest batch, as
    in the authors' code. Pure; no data-dependent branch."""
    r = _scores(real_out.detach()).mean().to(state.real.dtype)
    f = _scores(fake_out.detach()).mean().to(state.fake.dtype)
    d = torch.where((state.count < max(int(start), 1)), torch.zeros_like(state.real),
                    torch.as_tensor(decay, dtype=state.real.dtype, device=r.device))
    return LeCamState(real=torch.lerp(r, state.real, d), fake=torch.lerp(f, state.fake, d), count=state.count + 1)


def lecam_term(real_out: Tensor, fake_out: Tensor, state: LeCamState, weight: Weight, *,
               one_sided: bool = True) -> Tensor:
    """``weight * (E[relu(D(x_real) - a_fake)^2] + E[relu(a_real - D(x_fake))^2])``.

    It pulls D's outputs on real data toward the running average of its fake
    outputs and vice versa, which bounds the LeCam divergence the authors show
    D then minimises. ``one_sided=True`` is the authors' released code (only
    real outputs above the fake average, and fake outputs below the real
    average, are pulled); ``False`` is the paper's eq. 3 (plain squares).
    ``state`` is usually the result of :func:`lecam_update` on the same outputs.
    """
    dr = _scores(real_out) - state.fake.to(real_out.dtype)
    df = state.real.to(fake_out.dtype) - _scores(fake_out)
    if one_sided:
        dr, df = F.relu(dr), F.relu(df)
    return weight * (torch.mean(torch.square(dr)) + torch.mean(torch.square(df)))


# -- DRAGAN and the one-sided gradient penalty ------------------------------------------------


def dragan_term(d_fn: DFn, real: Tensor, u: Tensor, alpha: Tensor, weight: Weight, *, scale: float = 0.5,
                target: float = 1.0) -> Tensor:
    """DRAGAN (Kodali et al., 2017, "On Convergence and Stability of GANs"):
    ``weight * E[(||grad D(x_hat)|| - target)^2]`` at points near the real data,

    ``x_hat = real + alpha * scale * std(real) * u``

    with ``u`` [B, *sample] and ``alpha`` [B] uniform in [0, 1) (the authors'
    perturbation; ``std`` is the population std over the whole batch). It keeps
    D's gradients tame around real samples, where mode collapse starts. ``weight = 10`` in the paper.
    """
    if tuple(u.shape) != tuple(real.shape):
        raise ValueError(f"DRAGAN perturbation u must have the real batch's shape {tuple(real.shape)}, got "
                         f"{tuple(u.shape)}")
    x_hat = real + _per_sample(alpha, real) * (scale * real.std(correction=0).detach()) * u.to(real.dtype)
    norms = _penalties.input_grad_norms(d_fn, x_hat)
    return weight * torch.mean(torch.square(norms - target))


def one_sided_gp_term(d_fn: DFn, real: Tensor, fake: Tensor, eps: Tensor, weight: Weight, *,
                      target: float = 1.0) -> Tensor:
    """The one-sided gradient penalty ``weight * E[relu(||grad D(x_hat)|| - target)^2]``
    at WGAN-GP's interpolates ``x_hat = eps * real + (1 - eps) * fake`` (``eps`` [B]).

    Gulrajani et al. (2017) note that a 1-Lipschitz critic only needs norms at
    most 1; Petzka et al. (2018, WGAN-LP) show the one-sided form is the better
    behaved. It is zero wherever the critic is flatter than ``target``.
    """
    e = _per_sample(eps, real)
    norms = _penalties.input_grad_norms(d_fn, e * real + (1 - e) * fake)
    return weight * torch.mean(torch.square(F.relu(norms - target)))


# -- balanced consistency regularisation ------------------------------------------------------


def bcr_term(d_fn: DFn, real: Tensor, fake: Tensor, noise_real: dict[str, Tensor], noise_fake: dict[str, Tensor],
             weight_real: Weight, weight_fake: Weight, *, policy: str | Sequence[str] = "translation",
             p: augment.Prob = 1.0, real_out: Tensor | None = None, fake_out: Tensor | None = None) -> Tensor:
    """bCR (Zhao et al., 2020): ``weight_real * E[(D(x) - D(T(x)))^2] +
    weight_fake * E[(D(G(z)) - D(T(G(z))))^2]``, with ``T`` = :func:`ganfn.augment.apply`
    under ``policy`` and the given noise.

    D is asked to give an image and its augmented copy the same score, on real and
    on generated images (10 and 10 in the paper; translation and flips). Pass
    ``real_out`` / ``fake_out`` (D's outputs on the unaugmented batches) when they
    are already computed, to save a forward pass.
    """
    real_out = d_fn(real) if real_out is None else real_out
    fake_out = d_fn(fake) if fake_out is None else fake_out
    ra = d_fn(augment.apply(real, noise_real, policy, p))
    fa = d_fn(augment.apply(fake, noise_fake, policy, p))
    lr_ = torch.mean(torch.square(_scores(real_out) - _scores(ra)))
    lf_ = torch.mean(torch.square(_scores(fake_out) - _scores(fa)))
    return weight_real * lr_ + weight_fake * lf_


# -- lazy regularisation (Karras et al., 2020, StyleGAN2, sec. 3.1) ---------------------------


def lazy(value: Tensor, count: Tensor, every: int) -> tuple[Tensor, Tensor]:
    """``(every * value if due else 0, due)`` with ``due = count % every == 0``.

    ``count`` is the number of D updates before this one (0-d int tensor), so the
    penalty runs on updates 0, k, 2k, ...; scaling by ``k`` keeps its average
    strength. The selection is a ``torch.where``, not a Python branch, so it is
    valid under vmap and compile (``torch.cond`` cannot hold the nested input
    gradient a penalty takes).
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"lazy regularisation needs every= an int >= 1, got {every!r}")
    due = torch.remainder(count, every) == 0
    return torch.where(due, value * every, torch.zeros_like(value)), due


def lazy_adam_compensation(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's optimizer compensation for a penalty taken every ``k`` updates
    as a separate step: with ``c = k / (k + 1)``, ``lr * c`` and ``betas ** c``, so
    ``k + 1`` updates move and forget as ``k`` plain ones would."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"lazy regularisation needs every= an int >= 1, got {every!r}")
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
