"""Invariants of losses and penalties, checked on generated logits, critics and inputs."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .checks import assert_trees_equal

__all__ = ["assert_loss_invariants", "assert_penalty_invariants"]


# -- losses ------------------------------------------------------------------------------------


def _as_loss(loss: Any) -> Any:
    if isinstance(loss, str):
        from ganfn import losses

        return losses.get(loss)
    return loss


def assert_loss_invariants(loss: Any, real_logits: Tensor | None = None, fake_logits: Tensor | None = None, *,
                           d_kwargs: dict | None = None, g_kwargs: dict | None = None,
                           dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64)) -> None:
    """Assert the basic invariants of a loss pair (``ganfn.losses.LossPair``, a
    name, or any object with ``d_parts(real, fake, **d_kwargs) -> (real_part,
    fake_part)``, ``g(fake, **g_kwargs)`` and a ``threshold``).

    1. D's and G's losses and their gradients w.r.t. the logits are finite at
       every logit in ``strategies.EXTREME_LOGITS`` (up to ``±1e4``), in each of
       ``dtypes``, and on ``real_logits`` / ``fake_logits`` if given (e.g. from
       ``strategies.logits()``).
    2. Direction: on the wrong side of ``threshold`` (a real output judged fake,
       a fake output judged real), raising a real logit never increases D's
       real part, lowering a fake logit never increases D's fake part, and
       raising a fake logit never increases G's loss (gradient signs).
    3. Strict improvement: for margins m in (0.5, 2, 10), D's real part at
       ``threshold + m`` is below its value at ``threshold - m``, D's fake part
       at ``threshold - m`` below that at ``threshold + m``, and G's loss at
       ``threshold + m`` below that at ``threshold - m``.
    """
    from .strategies import EXTREME_LOGITS

    loss = _as_loss(loss)
    dk, gk = dict(d_kwargs or {}), dict(g_kwargs or {})
    name = getattr(loss, "name", type(loss).__name__)
    thr = float(getattr(loss, "threshold", 0.0))

    def parts(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r, f = loss.d_parts(real, fake, **dk)
        return r, f, loss.g(fake, **gk)

    def check(real: Tensor, fake: Tensor, where: str) -> None:
        _check_logits(parts, name, thr, real, fake, where)

    for dtype in dtypes:
        for v in EXTREME_LOGITS:
            x = torch.tensor([v], dtype=dtype)
            check(x, x, f"at logit {v!r} ({dtype})")
        grid = torch.tensor(EXTREME_LOGITS, dtype=dtype)
        check(grid, grid.flip(0), f"on a batch of extreme logits ({dtype})")
        _check_margins(parts, name, thr, dtype)
    if real_logits is not None or fake_logits is not None:
        r = real_logits if real_logits is not None else fake_logits
        f = fake_logits if fake_logits is not None else real_logits
        assert r is not None and f is not None
        check(r, f, "on the given logits")


def _check_logits(parts: Callable, name: str, thr: float, real: Tensor, fake: Tensor, where: str) -> None:
    """Finite losses and gradients at these logits, and gradient signs on the wrong side of ``thr``."""
    real = real.detach().clone().requires_grad_(True)
    fake = fake.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        r, f, g = parts(real, fake)
        for label, v in (("D's loss on real", r), ("D's loss on fake", f), ("G's loss", g)):
            if not bool(torch.isfinite(v).all()):
                raise AssertionError(f"loss {name!r}: {label} is {v.detach().tolist()} (not finite) {where}; "
                                     "compute BCE from logits with softplus, never log(sigmoid(x))")
        gr, = torch.autograd.grad(r.sum(), real, allow_unused=True)
        gf, = torch.autograd.grad(f.sum(), fake, allow_unused=True)
        gg, = torch.autograd.grad(g.sum(), fake, allow_unused=True)
    for label, gv in (("D's real loss w.r.t. real logits", gr), ("D's fake loss w.r.t. fake logits", gf),
                      ("G's loss w.r.t. fake logits", gg)):
        if gv is not None and not bool(torch.isfinite(gv).all()):
            raise AssertionError(f"loss {name!r}: the gradient of {label} is not finite {where}: {gv.tolist()}")
    # Direction on the wrong side of the threshold (per-sample gradients of a
    # mean/sum keep their sign): (gradient, logits, wrong side, bad sign, message).
    x_r, x_f = real.detach().reshape(real.shape[0], -1).mean(1), fake.detach().reshape(fake.shape[0], -1).mean(1)
    cases = ((gr, x_r, x_r < thr, 1,
              "D's loss rises when a real logit below the threshold {thr} rises (at real logit {x!r})"),
             (gf, x_f, x_f > thr, -1,
              "D's loss rises when a fake logit above the threshold {thr} falls (at fake logit {x!r})"),
             (gg, x_f, x_f < thr, 1,
              "G's loss rises when a fake logit below the threshold {thr} rises (at fake logit {x!r})"))
    for gv, x, wrong, sign, msg in cases:
        if gv is None:
            continue
        bad = wrong & (gv.reshape(gv.shape[0], -1).sum(1) * sign > 0)
        if bool(bad.any()):
            raise AssertionError(f"loss {name!r}: " + msg.format(thr=thr, x=x[bad][0].item()) + f" {where}")


def _check_margins(parts: Callable, name: str, thr: float, dtype: torch.dtype) -> None:
    """Each loss strictly improves across the threshold by margins 0.5, 2 and 10."""
    with torch.no_grad():
        for m in (0.5, 2.0, 10.0):
            hi, lo = torch.tensor([thr + m], dtype=dtype), torch.tensor([thr - m], dtype=dtype)
            mid = torch.tensor([thr], dtype=dtype)
            r_hi, _, _ = parts(hi, mid)
            r_lo, _, _ = parts(lo, mid)
            _, f_lo, g_lo = parts(mid, lo)
            _, f_hi, g_hi = parts(mid, hi)
            if not bool(r_hi < r_lo):
                raise AssertionError(f"loss {name!r}: D's loss on real does not fall when the real logit rises from "
                                     f"{thr - m} to {thr + m} ({r_lo.item():.4g} -> {r_hi.item():.4g}, {dtype})")
            if not bool(f_lo < f_hi):
                raise AssertionError(f"loss {name!r}: D's loss on fake does not fall when the fake logit falls from "
                                     f"{thr + m} to {thr - m} ({f_hi.item():.4g} -> {f_lo.item():.4g}, {dtype})")
            if not bool(g_hi < g_lo):
                raise AssertionError(f"loss {name!r}: G's loss does not fall when the fake logit rises from "
                                     f"{thr - m} to {thr + m} ({g_lo.item():.4g} -> {g_hi.item():.4g}, {dtype})")


# -- penalties ----------------------------------------------------------------------------------


def _as_penalty(penalty: Any) -> Any:
    if isinstance(penalty, str):
        from ganfn import penalties

        return penalties.get(penalty)
    return penalty


def assert_penalty_invariants(penalty: Any, *, target: str | None = None, sample_shape: Sequence[int] = (3,),
                              batch_size: int = 6, seed: int = 0, weight: float | None = None) -> None:
    """Assert the invariants of a D penalty (``ganfn.penalties.Penalty``, a name,
    or an object with ``term(d_fn, real, fake, eps, weight)`` and/or
    ``project(d_params, weight)``), in float64.

    For a loss term, on random critics and inputs drawn from ``seed``:

    - the value is a finite, non-negative 0-d tensor;
    - it is zero where the penalty's target holds: ``target="lipschitz"`` (the
      gradient penalty: a linear critic ``w.x + b`` with ``||w|| = 1``) or
      ``target="flat"`` (R1/R2: a constant critic); by default ``"lipschitz"``
      for penalties that take interpolation weights, else ``"flat"``;
    - it is per-sample: the penalty of a batch equals the mean of the
      penalties of its samples taken one at a time (one gradient norm over the
      whole batch fails this).

    For a projection (``weight_clip``): every projected parameter lies within
    ``[-weight, weight]``, parameters already inside are unchanged, and
    projecting twice equals projecting once.
    """
    pen = _as_penalty(penalty)
    name = getattr(pen, "name", type(pen).__name__)
    term, project = getattr(pen, "term", None), getattr(pen, "project", None)
    if term is None and project is None:
        raise ValueError(f"penalty {name!r} has neither a term nor a projection to check")
    w = torch.tensor(float(pen.weight if weight is None else weight), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    if term is not None:
        if target is None:
            target = "lipschitz" if getattr(pen, "needs_eps", False) else "flat"
        if target not in ("lipschitz", "flat"):
            raise ValueError(f"target must be 'lipschitz' or 'flat', got {target!r}")
        _check_term(term, name, w, target, tuple(sample_shape), batch_size, gen)
    if project is not None:
        _check_projection(project, name, w, name == "weight_clip" or getattr(pen, "weight_key", "") == "clip_value",
                          gen)


def _check_term(term: Callable, name: str, w: Tensor, target: str, sample_shape: tuple[int, ...], B: int,
                gen: torch.Generator) -> None:
    """A penalty term is finite, >= 0, per-sample, and zero where its target holds."""
    dim = int(math.prod(sample_shape))

    def randn(*s: Any) -> Tensor:  # a size: ints, or () for a 0-d tensor
        return torch.randn(*s, generator=gen, dtype=torch.float64)

    def mlp_critic() -> Callable[[Tensor], Tensor]:
        W1, b1, w2 = randn(dim, 16), randn(16), randn(16) / 4
        return lambda x: torch.tanh(x.reshape(x.shape[0], -1) @ W1 + b1) @ w2

    def value(d_fn, real, fake, eps) -> Tensor:
        v = term(d_fn, real, fake, eps, w)
        if not isinstance(v, Tensor) or v.dim() != 0:
            raise AssertionError(f"penalty {name!r} must return a 0-d tensor, got {v!r}")
        return v.detach()

    for _ in range(3):
        d_fn = mlp_critic()
        real, fake = randn(B, *sample_shape), randn(B, *sample_shape) * 2
        eps = torch.rand(B, generator=gen, dtype=torch.float64)
        v = value(d_fn, real, fake, eps)
        if not bool(torch.isfinite(v)) or v.item() < 0:
            raise AssertionError(f"penalty {name!r} is {v.item()!r} on a random critic (must be finite and >= 0)")
        singles = torch.stack([value(d_fn, real[i:i + 1], fake[i:i + 1], eps[i:i + 1]) for i in range(B)])
        if not torch.allclose(v, singles.mean(), rtol=1e-6, atol=1e-10):
            raise AssertionError(
                f"penalty {name!r} is not per-sample: on a batch of {B} it is {v.item():.6g}, but the mean of the "
                f"{B} single-sample penalties is {singles.mean().item():.6g}; take each sample's input-gradient "
                "norm separately (norm over dim 1 of the [B, -1] gradient), not one norm over the whole batch")
    if target == "lipschitz":
        u = randn(dim)
        u = u / u.norm()
        b = randn(())
        d_fn = lambda x: x.reshape(x.shape[0], -1) @ u + b
        what = "a linear critic with a unit-norm weight (1-Lipschitz)"
    else:
        zero, b = torch.zeros(dim, dtype=torch.float64), randn(())
        d_fn = lambda x: x.reshape(x.shape[0], -1) @ zero + b
        what = "a constant critic"
    real, fake = randn(B, *sample_shape), randn(B, *sample_shape) * 3
    eps = torch.rand(B, generator=gen, dtype=torch.float64)
    v = value(d_fn, real, fake, eps)
    if abs(v.item()) > 1e-8 * max(1.0, w.item()):
        raise AssertionError(f"penalty {name!r} is {v.item():.6g} on {what}, where it must be zero")


def _check_projection(project: Callable, name: str, w: Tensor, is_clip: bool, gen: torch.Generator) -> None:
    """A projection keeps the names, is idempotent and (for clipping) bounds every parameter."""
    c = w.item()
    params = {"a.weight": torch.randn(4, 5, generator=gen, dtype=torch.float64) * 3 * c,
              "a.bias": torch.randn(4, generator=gen, dtype=torch.float64) * 3 * c}
    out = project(params, w)
    if set(out) != set(params):
        raise AssertionError(f"projection {name!r} changed the parameter names: {sorted(out)} vs {sorted(params)}")
    if is_clip:
        for k, v in out.items():
            if bool((v.abs() > c).any()):
                raise AssertionError(f"projection {name!r} left {k} outside [-{c}, {c}] (max |x| = "
                                     f"{v.abs().max().item():.4g})")
        inside = {k: v.clamp(-c / 2, c / 2) for k, v in params.items()}
        try:
            assert_trees_equal(inside, project(inside, w), "parameters already inside the bound")
        except AssertionError as e:
            raise AssertionError(f"projection {name!r} changed parameters that were already inside [-{c}, {c}]: "
                                 f"{e}") from None
    try:
        assert_trees_equal(out, project(out, w), "projected parameters")
    except AssertionError as e:
        raise AssertionError(f"projection {name!r} is not idempotent: {e}") from None
