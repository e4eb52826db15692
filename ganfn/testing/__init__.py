"""Property testing for GAN training code: hypothesis strategies and checks.

Use them on ganfn's own functions or on your own generator, discriminator,
loss and penalty::

    from hypothesis import given
    from ganfn.testing import strategies as gst, assert_pure, assert_loss_invariants

    @given(gst.logit_pairs())
    def test_my_loss(pair):
        assert_loss_invariants(my_loss, *pair)

    def test_step_is_pure():
        state = gan.init(0)
        noise = gan.draw_noise(torch.Generator().manual_seed(0), 16)
        assert_pure(gan.train_step, state, real, noise)

:mod:`ganfn.testing.checks` (imported here) needs only torch;
:mod:`ganfn.testing.strategies` needs hypothesis (``pip install 'ganfn[test]'``)
and is loaded on first use of ``ganfn.testing.strategies``.
"""
from __future__ import annotations

import importlib
from typing import Any

from .checks import (
    assert_accumulation_equivalent,
    assert_grads_isolated,
    assert_pure,
    assert_trees_close,
    assert_trees_equal,
    assert_vmap_equivalent,
)
from .invariants import assert_loss_invariants, assert_penalty_invariants

__all__ = [
    "strategies",
    "assert_pure",
    "assert_grads_isolated",
    "assert_accumulation_equivalent",
    "assert_vmap_equivalent",
    "assert_loss_invariants",
    "assert_penalty_invariants",
    "assert_trees_close",
    "assert_trees_equal",
]


def __getattr__(name: str) -> Any:
    if name == "strategies":
        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
