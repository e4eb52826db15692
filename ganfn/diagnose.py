"""Checks and readings of a discriminator's outputs that a loss alone cannot give.

Two pure functions, used by :class:`ganfn.GAN`:

- :func:`check_discriminator` catches the most common silent failure of a GAN
  copied from a tutorial: a discriminator that ends in ``nn.Sigmoid()`` trained
  with a loss that takes raw scores (logits). ganfn's losses apply the sigmoid
  themselves (``softplus(x) - t·x``), so a second sigmoid squeezes D's outputs
  into (0, 1): D can never call a sample fake with confidence, its accuracy on
  real data reads 1.00 and G's loss sticks near log 2.
- :func:`d_accuracy` measures D's accuracy against the decision boundary of the
  loss it is trained with (which moves with soft labels), not a fixed 0.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["SCORE_LOSSES", "SHIFT_INVARIANT", "trailing_sigmoid", "check_discriminator", "decision_threshold",
           "d_accuracy"]

SCORE_LOSSES = ("minimax", "non_saturating", "wasserstein", "hinge")
"""Losses that take D's raw, unbounded scores (logits for the first two)."""

_PROBE_SCALES = (1.0, 10.0, 100.0, 1000.0)


def trailing_sigmoid(module: nn.Module) -> bool:
    """Whether ``module`` is ``nn.Sigmoid`` or a (nested) ``nn.Sequential`` whose last layer is."""
    while isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[-1]
    return isinstance(module, nn.Sigmoid)


def _looks_like_probabilities(d_fn: Callable[[Tensor], Tensor], sample: Tensor) -> bool:
    """True when D's outputs stay within [0, 1] on inputs scaled up to 1000x.

    A D that outputs raw scores is (nearly) positively homogeneous in its input
    for large inputs (ReLU/LeakyReLU nets, linear last layer), so its outputs
    leave [0, 1]; a D that ends in a sigmoid never does. Constant outputs (a
    zero-initialised last layer) prove nothing and are not flagged.
    """
    gen = torch.Generator().manual_seed(0)
    base = torch.randn((8, *sample.shape[1:]), generator=gen, dtype=torch.float32).to(sample)
    outs = []
    with torch.no_grad():
        for s in _PROBE_SCALES:
            out = d_fn(torch.cat([sample, base * s])).detach().float()
            if not torch.isfinite(out).all():
                return False
            outs.append(out.reshape(-1))
    o = torch.cat(outs)
    return bool((o >= 0).all() and (o <= 1).all() and o.max() > o.min())


def check_discriminator(discriminator: nn.Module, d_fn: Callable[[Tensor], Tensor], sample: Tensor,
                        loss_name: str) -> None:
    """Raise ``ValueError`` if D outputs probabilities but ``loss_name`` takes raw scores.

    Args:
        discriminator: D's module (inspected for a trailing ``nn.Sigmoid``).
        d_fn: ``x [N, *sample] -> scores [N, ...]``, D in eval mode.
        sample: a batch [B, *sample] D can take (G's output).
        loss_name: the :class:`ganfn.losses.LossPair` name; only the losses in
            :data:`SCORE_LOSSES` are checked.
    """
    if loss_name not in SCORE_LOSSES:
        return
    fix = (f"ganfn's {loss_name!r} loss takes D's raw scores (logits) and applies the sigmoid itself, "
           "stably. Remove the final nn.Sigmoid() (or torch.sigmoid) from D")
    if trailing_sigmoid(discriminator):
        raise ValueError(f"the discriminator ends in nn.Sigmoid(): {fix}; otherwise D cannot learn and "
                         "training silently produces garbage.")
    if _looks_like_probabilities(d_fn, sample):
        raise ValueError(f"the discriminator's outputs all lie in [0, 1], even for inputs scaled up 1000x, as if it "
                         f"applied a sigmoid: {fix}. (If D really outputs unbounded scores, rescale its last layer.)")


# Losses blind to a constant shift of D's scores (Arjovsky et al. 2017; Jolicoeur-Martineau 2018).
SHIFT_INVARIANT = ("wasserstein", "rpgan", "ragan")


def decision_threshold(loss_name: str, real_target: Tensor | float, fake_target: Tensor | float,
                       out_real: Tensor, out_fake: Tensor) -> Tensor | float | None:
    """The output value that separates "judged real" from "judged fake" under a loss.

    - ``minimax`` / ``non_saturating``: D's optimum is the target mix, so the
      boundary is ``logit((real_target + fake_target) / 2)`` (0 for 1/0 labels,
      about -1.1 for the soft real label 0.5).
    - ``least_squares``: ``(real_target + fake_target) / 2``.
    - ``hinge``: 0, the middle of the margins at +-1.
    - :data:`SHIFT_INVARIANT` losses (``wasserstein``, ``rpgan``, ``ragan``):
      None. Their scores have no fixed origin (the loss is blind to a constant
      shift), so no fixed boundary applies; :func:`d_accuracy` ranks pairs instead.
    - other losses: None (the caller uses the loss's own ``threshold``).
    """
    if loss_name in ("minimax", "non_saturating"):
        mid = (real_target + fake_target) / 2
        mid = mid if isinstance(mid, Tensor) else torch.tensor(mid, dtype=torch.float64, device=out_real.device)
        return torch.logit(mid, eps=1e-6)
    if loss_name == "least_squares":
        return (real_target + fake_target) / 2
    if loss_name == "hinge":
        return 0.0
    return None


def d_accuracy(loss, out_real: Tensor, out_fake: Tensor, real_target: Tensor | float,
               fake_target: Tensor | float) -> tuple[Tensor, Tensor]:
    """D's accuracy on real and on fake samples (two 0-d tensors).

    ``out_*`` are D's outputs [B] / [B, 1], or [B, ...] for a patch D: each
    patch is judged, as each patch carries its own loss (``ganfn.losses``), so
    the accuracy is the fraction of patches judged right. A score counts as
    judged real when it is above :func:`decision_threshold` for ``loss`` (a
    :class:`ganfn.losses.LossPair`).
    """
    r, f = _scores(out_real), _scores(out_fake)
    if loss.name in SHIFT_INVARIANT and r.shape == f.shape:
        # No fixed boundary applies to a critic: count the pairs it ranks right,
        # real_i above fake_i. Per-sample, so equal shards of a data-parallel run
        # average to the one-process figure.
        ranked = (r > f).mean(dtype=torch.promote_types(r.dtype, torch.float32))
        return ranked, ranked
    thr = decision_threshold(loss.name, real_target, fake_target, r, f)
    thr = loss.threshold if thr is None else thr
    dtype = torch.promote_types(r.dtype, torch.float32)
    return (r > thr).mean(dtype=dtype), (f < thr).mean(dtype=dtype)


def _scores(out: Tensor) -> Tensor:
    """Every detached score (a patch D's patches, sample by sample) as one vector."""
    return out.detach().reshape(-1)
