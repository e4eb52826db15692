"""Adversarial losses as pure functions of the discriminator's outputs.

Every loss is a :class:`LossPair`: ``d_parts(real_out, fake_out, ...)`` gives the
discriminator's loss on real and on fake outputs, ``d`` their sum, and
``g(fake_out, ...)`` the generator's loss. Outputs are raw, unbounded scores
(logits for the BCE forms): no loss here applies a sigmoid and takes a log of it,
so every form is finite for logits of any magnitude.

Targets (``real_target``, ``fake_target``) are floats or 0-d tensors, so label
smoothing can differ per ensemble member. One-sided label smoothing
(Salimans et al., 2016) is ``real_target=0.9``; the generator's target stays 1.

``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample).

Patch discriminators (PatchGAN, Isola et al., 2017) return several scores per
sample, ``[B, ...]``. As in pix2pix, CycleGAN and TF-GAN, the loss is taken on
every score and then averaged: ``"mean"`` is the mean over all B x P patch
losses, ``"none"`` each sample's mean over its patches. (Averaging a sample's
scores first and then taking the loss agrees only for the linear losses;
:func:`on_sample_means` builds that variant when it is what you want.)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Target = float | Tensor

__all__ = ["LossPair", "minimax", "non_saturating", "wasserstein", "hinge", "least_squares", "get", "with_targets",
           "bce", "LOSSES", "bce_with_logits", "rpgan", "ragan", "RELATIVISTIC", "top_k_mask", "top_k_count", "top_k"]


def _identity(out: Any) -> Any:
    return out


class LossPair(NamedTuple):
    """A discriminator loss and a generator loss on D's outputs.

    ``threshold`` is the output value that separates "judged real" from "judged
    fake", used for D's accuracy metrics.
    """

    name: str
    d_parts: Callable[..., tuple[Tensor, Tensor]]
    g: Callable[..., Tensor]
    threshold: float
    hparams: dict[str, float] = {}
    """Extra hyperparameters (name -> default) that ``GAN`` keeps in the state and
    passes to ``d_parts`` and ``g`` as keyword arguments (e.g. a mixing weight)."""
    takes_labels: bool = False
    """The loss reads class labels: ``d_parts(..., real_labels=[B], fake_labels=[B])``
    and ``g(..., fake_labels=[B])`` (ACGAN's auxiliary classifier)."""
    scores: Callable[[Any], Tensor] = _identity
    """D's adversarial scores [B] from D's output (the output itself, or the score
    part of a (scores, class logits) pair); penalties and accuracies use these."""
    g_needs_real: bool = False
    """``g`` compares the fake outputs with D's outputs on real data and takes
    them as ``g(fake_out, real_out=...)`` (the relativistic losses)."""
    targets: Mapping[str, float | Tensor] = {"real_label": 1.0, "fake_label": 0.0, "g_target": 1.0}
    """The default targets ``GAN`` keeps per member as hyperparameters
    ``real_label``, ``fake_label``, ``g_target`` (read by the BCE and
    least-squares forms; :func:`with_targets`)."""

    def d(self, real_out: Tensor, fake_out: Tensor, **kw) -> Tensor:
        """The discriminator's total loss: real part + fake part."""
        r, f = self.d_parts(real_out, fake_out, **kw)
        return r + f


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _per_sample(x: Tensor) -> Tensor:
    """Per-score losses ``[B, ...]`` as one value per sample [B]: the mean over its
    scores (a patch D's patches). Losses go through this after, not before, the
    nonlinearity (see the module docstring)."""
    return x.reshape(x.shape[0], -1).mean(1) if x.dim() > 1 else x


def _per_row(target: Target, out: Tensor) -> Target:
    """A per-sample target [B] aligned with outputs [B, ...] (trailing axes added);
    floats and 0-d targets as they are."""
    if isinstance(target, Tensor) and 0 < target.dim() < out.dim():
        return target.reshape(*target.shape, *(1,) * (out.dim() - target.dim()))
    return target


def bce_with_logits(logits: Tensor, target: Target) -> Tensor:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against ``target``.

    ``softplus(x) - t*x`` equals ``-t log s(x) - (1-t) log(1-s(x))`` exactly and
    never evaluates ``log(sigmoid(x))``, which underflows to ``-inf`` for
    ``x < -104`` in float32.
    """
    return F.softplus(logits) - target * logits


# -- minimax / non-saturating (Goodfellow et al., 2014) ----------------------------


def _bce_d_parts(real_out, fake_out, *, real_target: Target = 1.0, fake_target: Target = 0.0, reduction="mean"):
    r = _per_sample(bce_with_logits(real_out, _per_row(real_target, real_out)))
    f = _per_sample(bce_with_logits(fake_out, _per_row(fake_target, fake_out)))
    return _reduce(r, reduction), _reduce(f, reduction)


def _minimax_g(fake_out: Tensor, *, reduction: str = "mean", **_) -> Tensor:
    """G minimises log(1 - D(G(z))) = -softplus(logit): saturates when D wins."""
    return _reduce(_per_sample(-F.softplus(fake_out)), reduction)


def _non_saturating_g(fake_out: Tensor, *, g_target: Target = 1.0, reduction: str = "mean", **_) -> Tensor:
    """G minimises -log D(G(z)) = BCE(logit, 1) = softplus(-logit)."""
    return _reduce(_per_sample(bce_with_logits(fake_out, _per_row(g_target, fake_out))), reduction)


minimax = LossPair("minimax", _bce_d_parts, _minimax_g, 0.0)
"""The original saturating game (Goodfellow et al., 2014, eq. 1).

D: BCE(real, real_target) + BCE(fake, fake_target); G: log(1 - sigmoid(fake)).
"""

non_saturating = LossPair("non_saturating", _bce_d_parts, _non_saturating_g, 0.0)
"""The non-saturating heuristic (Goodfellow et al., 2014, sec. 3).

D as in :data:`minimax`; G: BCE(fake, 1) = -log sigmoid(fake). Equal to
``torch.nn.BCEWithLogitsLoss`` with the same targets.
"""


# -- Wasserstein (Arjovsky et al., 2017) ------------------------------------------


def _wasserstein_d_parts(real_out, fake_out, *, reduction="mean", **_):
    return _reduce(-_per_sample(real_out), reduction), _reduce(_per_sample(fake_out), reduction)


def _wasserstein_g(fake_out, *, reduction="mean", **_):
    return _reduce(-_per_sample(fake_out), reduction)


wasserstein = LossPair("wasserstein", _wasserstein_d_parts, _wasserstein_g, 0.0)
"""WGAN critic loss (Arjovsky et al., 2017): D: E[f(fake)] - E[f(real)]; G: -E[f(fake)].

Targets do not apply and are ignored. Needs a Lipschitz constraint on the
critic: ``penalties.weight_clip`` (WGAN) or ``penalties.gradient_penalty`` (WGAN-GP).
"""


# -- hinge (Lim & Ye, 2017; Miyato et al., 2018) -----------------------------------


def _hinge_d_parts(real_out, fake_out, *, reduction="mean", **_):
    r = _per_sample(F.relu(1.0 - real_out))
    f = _per_sample(F.relu(1.0 + fake_out))
    return _reduce(r, reduction), _reduce(f, reduction)


hinge = LossPair("hinge", _hinge_d_parts, _wasserstein_g, 0.0)
"""Hinge loss (Geometric GAN, Lim & Ye 2017; used by SNGAN, Miyato et al. 2018).

D: E[relu(1 - real)] + E[relu(1 + fake)]; G: -E[fake]. Zero for D once every
real output is >= 1 and every fake output <= -1. Targets are ignored.
"""


# -- least squares (Mao et al., 2017) -----------------------------------------------


def _ls_d_parts(real_out, fake_out, *, real_target: Target = 1.0, fake_target: Target = 0.0, reduction="mean"):
    r = _per_sample(0.5 * torch.square(real_out - _per_row(real_target, real_out)))
    f = _per_sample(0.5 * torch.square(fake_out - _per_row(fake_target, fake_out)))
    return _reduce(r, reduction), _reduce(f, reduction)


def _ls_g(fake_out, *, g_target: Target = 1.0, reduction="mean", **_):
    return _reduce(_per_sample(0.5 * torch.square(fake_out - _per_row(g_target, fake_out))), reduction)


least_squares = LossPair("least_squares", _ls_d_parts, _ls_g, 0.5)
"""LSGAN (Mao et al., 2017) with the a-b-c = 0-1-1 coding.

D: 0.5 E[(real - b)^2] + 0.5 E[(fake - a)^2]; G: 0.5 E[(fake - c)^2], with
b = ``real_target``, a = ``fake_target``, c = ``g_target``. Accuracy threshold 0.5
assumes the default targets.
"""

# -- relativistic (Jolicoeur-Martineau, 2018) ----------------------------------------


def _need_real(real_out: Tensor | None, name: str) -> Tensor:
    if real_out is None:
        raise ValueError(f"{name}'s generator loss compares fake with real outputs: "
                         "pass real_out= (D's outputs on a real batch)")
    return _rows(real_out)


def _rows(x: Tensor) -> Tensor:
    """Outputs [B] / [B, 1] / [B, ...] as [B, P]: P scores per sample."""
    return x.reshape(x.shape[0], -1)


def _check_paired(real: Tensor, fake: Tensor, name: str) -> None:
    if real.shape[0] != fake.shape[0]:
        raise ValueError(f"{name} pairs real sample i with fake sample i: batch sizes differ "
                         f"({real.shape[0]} real, {fake.shape[0]} fake)")
    if real.shape != fake.shape:
        raise ValueError(f"{name} pairs real and fake scores patch by patch: "
                         f"D gave {real.shape[1]} scores per real sample but {fake.shape[1]} per fake one")


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` to round-off for any x. ``F.softplus`` returns x itself
    above its threshold 20, off by up to exp(-20) = 2e-9: a float64 comparison
    with the loss's definition then fails at 1e-10 (found under random hypothesis seeds)."""
    return -F.logsigmoid(-x)


def _rp_d_parts(real_out, fake_out, *, reduction="mean", **_):
    r, f = _rows(real_out), _rows(fake_out)
    _check_paired(r, f, "rpgan")
    # -log sigmoid(r - f) = softplus(f - r): stable for any magnitude. The loss
    # does not separate into a real and a fake part; it is reported half in each.
    half = _per_sample(0.5 * _softplus(f - r))
    return _reduce(half, reduction), _reduce(half, reduction)


def _rp_g(fake_out, *, real_out: Tensor | None = None, reduction="mean", **_):
    r, f = _need_real(real_out, "rpgan"), _rows(fake_out)
    _check_paired(r, f, "rpgan")
    return _reduce(_per_sample(_softplus(r - f)), reduction)


rpgan = LossPair("rpgan", _rp_d_parts, _rp_g, 0.0, g_needs_real=True)
"""Relativistic pairing GAN (RSGAN; Jolicoeur-Martineau 2018, eq. 8; the loss of
R3GAN, Huang et al. 2024): with real and fake samples paired by index,

D: ``E[softplus(D(fake) - D(real))]`` = ``-E[log sigmoid(D(real) - D(fake))]``;
G: ``E[softplus(D(real) - D(fake))]``.

D judges how much more real each real sample looks than its fake partner.
``d_parts`` returns the loss split evenly between its two parts (it does not
separate); ``g`` needs ``real_out=``, D's outputs on a real batch of the same
size. Targets do not apply and are ignored.
"""


def _ra_d_parts(real_out, fake_out, *, reduction="mean", **_):
    r, f = _rows(real_out), _rows(fake_out)
    return (_reduce(_per_sample(_softplus(-(r - f.mean()))), reduction),
            _reduce(_per_sample(_softplus(f - r.mean())), reduction))


def _ra_g(fake_out, *, real_out: Tensor | None = None, reduction="mean", **_):
    r, f = _need_real(real_out, "ragan"), _rows(fake_out)
    _check_paired(r, f, "ragan")
    # Both terms of the symmetric game; "none" gives their sum per index i.
    return _reduce(_per_sample(_softplus(-(f - r.mean())) + _softplus(r - f.mean())), reduction)


ragan = LossPair("ragan", _ra_d_parts, _ra_g, 0.0, g_needs_real=True)
"""Relativistic average GAN (RaSGAN; Jolicoeur-Martineau 2018, eq. 11-12): each
sample is compared with the mean output on the other kind,

D: ``E_r[softplus(-(D(r) - E_f[D(f)]))] + E_f[softplus(D(f) - E_r[D(r)])]``;
G: ``E_f[softplus(-(D(f) - E_r[D(r)]))] + E_r[softplus(D(r) - E_f[D(f)])]``.

The real term of G's loss depends on G through the mean fake output, so G learns
from real data too. ``g`` needs ``real_out=`` of the same batch size.
"""

LOSSES: dict[str, LossPair] = {
    lp.name: lp for lp in (minimax, non_saturating, wasserstein, hinge, least_squares)
}
RELATIVISTIC: dict[str, LossPair] = {lp.name: lp for lp in (rpgan, ragan)}
"""The relativistic losses: their ``g`` also takes D's outputs on real data."""

_ALIASES = {"bce": non_saturating, "ns": non_saturating, "wgan": wasserstein, "lsgan": least_squares,
            "ls": least_squares}


def get(loss: str | LossPair) -> LossPair:
    """A :class:`LossPair` by name (or itself). Unknown names raise ``ValueError``."""
    if isinstance(loss, LossPair):
        return loss
    if isinstance(loss, str):
        key = loss.lower().replace("-", "_")
        if key in LOSSES:
            return LOSSES[key]
        if key in RELATIVISTIC:
            return RELATIVISTIC[key]
        if key in _ALIASES:
            return _ALIASES[key]
        if key == "acgan":
            return acgan()
    raise ValueError(
        f"unknown loss {loss!r}: expected one of {sorted(LOSSES) + sorted(RELATIVISTIC)} "
        f"(aliases {sorted(_ALIASES)}), 'acgan', or a ganfn.losses.LossPair"
    )


def with_targets(loss: str | LossPair, *, real_label: float | Tensor | None = None,
                 fake_label: float | Tensor | None = None, g_target: float | Tensor | None = None) -> LossPair:
    """``loss`` with its own targets (``None`` keeps the loss's): ``real_label=0.9``
    is one-sided label smoothing (Salimans et al., 2016). A ``GAN`` keeps them per
    member as hyperparameters of the same names."""
    lp = get(loss)
    given = {"real_label": real_label, "fake_label": fake_label, "g_target": g_target}
    return lp._replace(targets={**lp.targets, **{k: v for k, v in given.items() if v is not None}})


def bce(*, real_label: float | Tensor = 1.0, fake_label: float | Tensor = 0.0,
        g_target: float | Tensor = 1.0) -> LossPair:
    """The non-saturating BCE loss with its targets, e.g. ``bce(real_label=0.9)``."""
    return with_targets(non_saturating, real_label=real_label, fake_label=fake_label, g_target=g_target)


# -- per-member mixtures (for sweeps over the loss) ---------------------------------


def mixture(a: str | LossPair, b: str | LossPair, weight: float = 0.5) -> LossPair:
    """``(1 - w) * a + w * b`` for D and for G, with ``w`` the hyperparameter
    ``loss_mix`` (default ``weight``) kept in the training state.

    Because ``w`` lives in ``state.hparams``, stacked ensemble members can each
    carry their own weight: ``w = 0`` is exactly ``a`` and ``w = 1`` exactly ``b``
    in value (both parts are always computed), so a sweep over
    ``loss_mix in [0, 1]`` is a sweep over the loss choice. Both losses must take
    D outputs of the same shape (every loss here does). Targets are passed to
    both (the Wasserstein and hinge losses ignore them). D's accuracy metrics
    use ``a``'s threshold.
    """
    a, b = get(a), get(b)
    if a.g_needs_real or b.g_needs_real:
        raise ValueError("mixture: relativistic losses (rpgan, ragan) cannot be mixed; use one of them alone")
    if a.hparams or b.hparams:
        raise ValueError("mixture: nested loss hyperparameters are not supported; mix two plain losses")
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"mixture weight must be in [0, 1], got {weight!r}")

    def d_parts(real_out, fake_out, *, loss_mix: Target = weight, **kw):
        ra, fa = a.d_parts(real_out, fake_out, **kw)
        rb, fb = b.d_parts(real_out, fake_out, **kw)
        w = torch.as_tensor(loss_mix, device=ra.device).to(ra.dtype)
        return torch.lerp(ra, rb, w), torch.lerp(fa, fb, w)

    def g(fake_out, *, loss_mix: Target = weight, **kw):
        la, lb = a.g(fake_out, **kw), b.g(fake_out, **kw)
        return torch.lerp(la, lb, torch.as_tensor(loss_mix, device=la.device).to(la.dtype))

    return LossPair(f"mixture({a.name},{b.name})", d_parts, g, a.threshold, {"loss_mix": float(weight)})
__all__ += ["mixture"]


def on_sample_means(loss: str | LossPair) -> LossPair:
    """``loss`` applied to each sample's mean score: a patch D's outputs
    [B, ...] are averaged per sample to [B] first, and the loss is taken on
    those. The library's default (and pix2pix's, CycleGAN's, TF-GAN's) is the
    other order, the loss on every patch and then the mean; the two agree only
    for the linear losses (``wasserstein``). Outputs [B] / [B, 1] give the same
    values either way. The result keeps ``loss``'s name, so decision thresholds
    and set-up checks treat it as ``loss``. Not for losses that read class
    logits (ACGAN)."""
    base = get(loss)
    if base.takes_labels:
        raise ValueError(f"on_sample_means: {base.name} reads D's class logits; average only plain score outputs")

    def means(out: Tensor | None) -> Tensor | None:
        return None if out is None else _per_sample(out)

    def d_parts(real_out, fake_out, **kw):
        return base.d_parts(means(real_out), means(fake_out), **kw)

    def g(fake_out, *, real_out: Tensor | None = None, **kw):
        return base.g(means(fake_out), **({"real_out": means(real_out)} if base.g_needs_real else {}), **kw)

    return base._replace(d_parts=d_parts, g=g)


__all__ += ["on_sample_means"]


# -- ACGAN's auxiliary classifier (Odena et al., 2017) -----------------------------


def _scores_of_pair(out: tuple[Tensor, Tensor]) -> Tensor:
    return out[0]


def _class_loss(logits: Tensor, labels: Tensor, reduction: str) -> Tensor:
    return _reduce(F.cross_entropy(logits.reshape(labels.shape[0], -1), labels, reduction="none"), reduction)


def acgan(base: str | LossPair = "non_saturating", d_weight: float = 1.0, g_weight: float = 1.0) -> LossPair:
    """ACGAN (Odena et al. 2017, "Conditional image synthesis with auxiliary classifier GANs").

    D returns ``(scores [B], class logits [B, K])`` (e.g. ``ganfn.models.ACGANDiscriminator``).
    The adversarial part is ``base`` on the scores; the auxiliary part is the
    cross-entropy of the class logits against the labels. As in the paper, D
    minimises both parts on real *and* generated samples (``L_S + L_C`` maximised),
    and G minimises its adversarial loss plus the class loss on its samples
    (``L_C - L_S`` maximised):

    - D: ``base.d(real, fake) + d_weight * (CE(real_logits, real_labels) + CE(fake_logits, fake_labels))``
      (each class term added to its side: ``d_parts`` returns real and fake parts);
    - G: ``base.g(fake) + g_weight * CE(fake_logits, fake_labels)``.

    The weights are hyperparameters ``acgan_d_weight`` / ``acgan_g_weight`` kept
    in the training state, so stacked members can each carry their own.
    """
    base = get(base)
    if base.hparams or base.takes_labels or base.g_needs_real:
        raise ValueError("acgan: the base loss must be a plain loss (no hyperparameters, labels or real outputs in "
                         f"G's loss), got {base.name}")
    for name, w in (("d_weight", d_weight), ("g_weight", g_weight)):
        if not isinstance(w, (int, float)) or not 0.0 <= float(w) < float("inf"):
            raise ValueError(f"acgan {name} must be a finite number >= 0, got {w!r}")

    def d_parts(real_out, fake_out, *, real_labels: Tensor, fake_labels: Tensor, acgan_d_weight: Target = d_weight,
                acgan_g_weight: Target = g_weight, reduction: str = "mean", **kw):
        r, f = base.d_parts(real_out[0], fake_out[0], reduction=reduction, **kw)
        w = torch.as_tensor(acgan_d_weight, dtype=r.dtype, device=r.device)
        return (r + w * _class_loss(real_out[1], real_labels, reduction),
                f + w * _class_loss(fake_out[1], fake_labels, reduction))

    def g(fake_out, *, fake_labels: Tensor, acgan_d_weight: Target = d_weight, acgan_g_weight: Target = g_weight,
          reduction: str = "mean", **kw):
        adv = base.g(fake_out[0], reduction=reduction, **kw)
        return adv + (torch.as_tensor(acgan_g_weight, dtype=adv.dtype, device=adv.device)
                      * _class_loss(fake_out[1], fake_labels, reduction))

    hp = {"acgan_d_weight": float(d_weight), "acgan_g_weight": float(g_weight)}
    return LossPair(f"acgan({base.name})", d_parts, g, base.threshold, hp, True, _scores_of_pair)


__all__ += ["acgan"]


# -- top-k training of G (Sinha et al., 2020) ---------------------------------------


def top_k_mask(scores: Tensor, k: int | Tensor) -> Tensor:
    """A [B] 0/1 mask (``scores``' dtype) of the ``k`` samples with the highest
    ``scores`` [B] (ties go to the lower index). ``k`` may be a 0-d tensor (one per
    ensemble member): the mask is computed from ranks, with no data-dependent shape."""
    s = _per_sample(scores.detach())
    rank = torch.argsort(torch.argsort(-s, stable=True), stable=True)
    return (rank < torch.as_tensor(k, device=s.device)).to(s.dtype)


def top_k(per_sample_g_loss: Tensor, fake_scores: Tensor, k: int | Tensor) -> Tensor:
    """G's loss averaged over the ``k`` fakes D scores highest only (Sinha et al.,
    2020, "Top-k Training of GANs"): the fakes D finds least realistic give
    gradients that point away from the data, so they are left out.

    ``per_sample_g_loss`` [B] is ``loss.g(fake_out, reduction="none")`` and
    ``fake_scores`` [B] D's outputs on the same fakes.
    """
    m = top_k_mask(fake_scores, k).to(per_sample_g_loss.dtype)
    return (per_sample_g_loss * m).sum() / m.sum().clamp(min=1)


def top_k_count(step: int | Tensor, batch_size: int, *, steps_per_epoch: int, gamma: float | Tensor = 0.99,
                min_fraction: float | Tensor = 0.5) -> Tensor:
    """``k`` for top-k training at ``step``: ``max(gamma ** epoch * B, min_fraction * B)``
    rounded up, with ``epoch = step // steps_per_epoch`` (the paper's schedule:
    all samples at first, decaying by ``gamma = 0.99`` per epoch to a floor ``nu = 0.5``).
    A 0-d int64 tensor; pure, valid under vmap and compile."""
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
    epoch = torch.div(torch.as_tensor(step), steps_per_epoch, rounding_mode="floor").to(torch.float64)
    frac = torch.maximum(torch.as_tensor(gamma, dtype=torch.float64) ** epoch,
                         torch.as_tensor(min_fraction, dtype=torch.float64))
    return torch.ceil(frac * batch_size - 1e-9).clamp(1, batch_size).to(torch.int64)
