"""Hypothesis strategies for property tests of GAN training code.

Every strategy here produces valid inputs for ganfn's pure functions (and for
your own losses, penalties and models):

- :func:`logits` / :func:`logit_pairs`: discriminator outputs, finite but of any
  magnitude, extremes such as ``±1e4`` included on purpose (a loss written as
  ``log(sigmoid(x))`` overflows there).
- :func:`batches`: batches of images or vectors of a given sample shape;
  :func:`class_labels` and :func:`labelled_batches`: int64 labels and
  ``(images, labels)`` pairs for class-conditional GANs.
- :func:`learning_rates`, :func:`betas`, :func:`penalty_weights`,
  :func:`label_smoothing`, :func:`optimizer_hparams`: hyperparameters within
  their valid ranges.
- :func:`seeds` and :func:`train_states`: whole training states of a given
  :class:`ganfn.GAN` from ``gan.init(seed)``.

Tensors that could be large (batches, weight vectors) are drawn from a
generated seed with an explicit ``torch.Generator``: hypothesis explores the
seed and the shape, and a failing example is reproducible from its printout.

Requires the ``test`` extra (``pip install 'ganfn[test]'``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor

__all__ = [
    "EXTREME_LOGITS",
    "logits",
    "logit_pairs",
    "batches",
    "class_labels",
    "labelled_batches",
    "seeds",
    "learning_rates",
    "betas",
    "penalty_weights",
    "label_smoothing",
    "optimizer_hparams",
    "train_states",
]

EXTREME_LOGITS: tuple[float, ...] = (-1e4, -1e3, -200.0, -104.0, -30.0, -1e-30, 0.0, 1e-30, 30.0, 104.0, 200.0, 1e3,
                                     1e4)
"""Logits where naive losses break: ``exp`` overflows past ~88 (float32), and
``sigmoid`` underflows to exactly 0 below about -104, so ``log(sigmoid(x))`` is -inf."""


def _scalar_logits(max_magnitude: float) -> st.SearchStrategy[float]:
    # Mixed on purpose: mostly ordinary values, often the extremes themselves.
    extremes = [x for x in EXTREME_LOGITS if abs(x) <= max_magnitude] + [max_magnitude, -max_magnitude]
    return st.one_of(
        st.sampled_from(extremes),
        st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False, width=32),
        st.floats(-max_magnitude, max_magnitude, allow_nan=False, allow_infinity=False, width=32),
    )


@st.composite
def logits(
    draw: st.DrawFn,
    *,
    min_size: int = 1,
    max_size: int = 16,
    max_magnitude: float = 1e4,
    dtype: torch.dtype = torch.float32,
    column: bool | None = None,
) -> Tensor:
    """A batch of discriminator outputs: ``[B]`` or ``[B, 1]`` finite values.

    Values range over ``[-max_magnitude, max_magnitude]`` and include the
    :data:`EXTREME_LOGITS` often. ``column=None`` draws either layout.
    """
    n = draw(st.integers(min_size, max_size))
    vals = draw(st.lists(_scalar_logits(max_magnitude), min_size=n, max_size=n))
    t = torch.tensor(vals, dtype=dtype)
    col = draw(st.booleans()) if column is None else column
    return t.reshape(n, 1) if col else t


@st.composite
def logit_pairs(draw: st.DrawFn, *, same_size: bool = False, **kw: Any) -> tuple[Tensor, Tensor]:
    """``(real_out, fake_out)``: D's outputs on a real and a fake batch (see :func:`logits`)."""
    real = draw(logits(**kw))
    if same_size:
        fake = draw(logits(**{**kw, "min_size": real.shape[0], "max_size": real.shape[0]}))
    else:
        fake = draw(logits(**kw))
    return real, fake


def seeds(max_value: int = 2**31 - 1) -> st.SearchStrategy[int]:
    """Integer seeds for ``gan.init`` and ``torch.Generator().manual_seed``."""
    return st.integers(0, max_value)


def _shape(x: Sequence[int] | st.SearchStrategy) -> st.SearchStrategy:
    return x if isinstance(x, st.SearchStrategy) else st.just(tuple(int(d) for d in x))


@st.composite
def batches(
    draw: st.DrawFn,
    sample_shape: Sequence[int] | st.SearchStrategy[tuple[int, ...]],
    *,
    min_batch: int = 1,
    max_batch: int = 8,
    batch_size: int | None = None,
    scale: float | st.SearchStrategy[float] = 1.0,
    dtype: torch.dtype = torch.float32,
    kind: str = "normal",
) -> Tensor:
    """A batch ``[B, *sample_shape]``.

    ``kind="normal"``: Gaussian values times ``scale`` (vectors, latents);
    ``kind="image"``: values in ``[-1, 1]`` (images as ganfn's data loaders
    return them). ``sample_shape`` may itself be a strategy, e.g.
    ``st.tuples(st.integers(1, 3), st.just(8), st.just(8))`` for CHW images.
    Values come from a drawn seed, so large batches stay cheap to generate.
    """
    shape = draw(_shape(sample_shape))
    B = batch_size if batch_size is not None else draw(st.integers(min_batch, max_batch))
    s = draw(scale) if isinstance(scale, st.SearchStrategy) else scale
    g = torch.Generator().manual_seed(draw(seeds()))
    if kind == "normal":
        x = torch.randn(B, *shape, generator=g, dtype=torch.float64) * s
    elif kind == "image":
        x = torch.rand(B, *shape, generator=g, dtype=torch.float64) * 2 - 1
    else:
        raise ValueError(f"kind must be 'normal' or 'image', got {kind!r}")
    return x.to(dtype)


def class_labels(num_classes: int, batch_size: int) -> st.SearchStrategy[Tensor]:
    """Int64 class labels ``[batch_size]`` in ``[0, num_classes)`` (shrinking towards class 0)."""
    return st.lists(st.integers(0, num_classes - 1), min_size=batch_size, max_size=batch_size).map(
        lambda ys: torch.tensor(ys, dtype=torch.int64).reshape(batch_size))


@st.composite
def labelled_batches(
    draw: st.DrawFn,
    sample_shape: Sequence[int] | st.SearchStrategy[tuple[int, ...]],
    num_classes: int | st.SearchStrategy[int],
    **kw: Any,
) -> tuple[Tensor, Tensor]:
    """An ``(images [B, *sample_shape], labels int64 [B])`` pair: the real batch
    of a class-conditional GAN. ``kw`` as for :func:`batches`."""
    x = draw(batches(sample_shape, **kw))
    k = draw(num_classes) if isinstance(num_classes, st.SearchStrategy) else num_classes
    return x, draw(class_labels(k, x.shape[0]))


def learning_rates(min_value: float = 1e-5, max_value: float = 1e-1) -> st.SearchStrategy[float]:
    """Learning rates, spread evenly in log scale over ``[min_value, max_value]``."""
    if not 0 < min_value <= max_value:
        raise ValueError(f"need 0 < min_value <= max_value, got {min_value}, {max_value}")
    lo, hi = math.log10(min_value), math.log10(max_value)
    return st.floats(lo, hi).map(lambda e: float(min(max(10.0**e, min_value), max_value)))


def betas(
    b1: tuple[float, float] = (0.0, 0.99), b2: tuple[float, float] = (0.9, 0.9999)
) -> st.SearchStrategy[tuple[float, float]]:
    """Adam ``(beta1, beta2)`` pairs; the default ranges cover GAN practice
    (0.0 and 0.5 for beta1 are common) and keep beta2 < 1."""
    return st.tuples(st.floats(*b1), st.floats(*b2))


def penalty_weights(max_value: float = 100.0, *, allow_zero: bool = True) -> st.SearchStrategy[float]:
    """Penalty weights (gradient penalty lambda, R1 gamma) in ``[0, max_value]``."""
    return st.floats(0.0 if allow_zero else 1e-6, max_value, allow_nan=False)


def label_smoothing(min_value: float = 0.5, max_value: float = 1.0) -> st.SearchStrategy[float]:
    """Real-label targets for one-sided smoothing: 1.0 (none) down to ``min_value``
    (0.9 is Salimans et al.'s choice; tutorials use values as low as 0.5)."""
    return st.one_of(st.sampled_from([1.0, 0.9]), st.floats(min_value, max_value))


_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@st.composite
def optimizer_hparams(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """Valid keyword arguments for ``ganfn.optim.<name>`` (``sgd``, ``adam``,
    ``adamw``, ``rmsprop``), spanning the options (momentum, nesterov, dampening,
    weight decay, centered, ...). The same keys as ``torch.optim``'s constructor
    except ``betas`` (a tuple in both)."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {_OPTIMIZERS}")
    wd = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.1)))
    if name == "sgd":
        nesterov = draw(st.booleans())
        momentum = draw(st.floats(0.1, 0.99) if nesterov else st.one_of(st.just(0.0), st.floats(0.0, 0.99)))
        dampening = 0.0 if nesterov else draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9)))
        return {"lr": draw(learning_rates()), "momentum": momentum, "dampening": dampening, "weight_decay": wd,
                "nesterov": nesterov}
    if name in ("adam", "adamw"):
        return {"lr": draw(learning_rates()), "betas": draw(betas()), "eps": draw(st.sampled_from([1e-8, 1e-6, 1e-3])),
                "weight_decay": wd}
    return {
        "lr": draw(learning_rates(1e-5, 1e-2)),
        "alpha": draw(st.floats(0.5, 0.999)),
        "eps": draw(st.sampled_from([1e-8, 1e-6, 1e-3])),
        "weight_decay": wd,
        "momentum": draw(st.one_of(st.just(0.0), st.floats(0.0, 0.95))),
        "centered": draw(st.booleans()),
    }


def train_states(
    gan: Any, seed: st.SearchStrategy[int] | None = None, **hparams: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Whole training states ``gan.init(seed, **hparams)`` for the given ``GAN``.

    ``hparams`` maps per-state hyperparameter names (``lr_d``, ``gp_weight``,
    ``real_label``, ...) to strategies for their values::

        train_states(gan, lr_d=learning_rates(), real_label=label_smoothing())
    """
    names = sorted(hparams)
    return st.builds(
        lambda s, vals: gan.init(s, **dict(zip(names, vals, strict=True))),
        seed if seed is not None else seeds(),
        st.tuples(*[hparams[k] for k in names]),
    )
