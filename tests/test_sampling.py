"""ganfn.sampling: the truncation trick's resampled truncated normal."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfn import sampling
from ganfn.testing import strategies as gst

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


@given(gst.seeds(), shapes, st.floats(0.05, 3.0))
def test_every_value_within_threshold_and_a_seed_fixes_the_draw(seed, shape, t):
    z = sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, t)
    assert z.shape == shape and z.dtype == torch.float32
    assert (z.abs() <= t).all()
    assert torch.equal(z, sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, t))


@given(gst.seeds(), shapes)
def test_no_threshold_is_plain_randn(seed, shape):
    ref = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, None), ref)
    assert torch.equal(sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, math.inf), ref)


def test_values_inside_the_threshold_are_kept_and_the_distribution_is_the_truncated_normal():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    z = sampling.truncated_normal(g, (20000,), 1.0)
    keep = ref.abs() <= 1.0
    assert torch.equal(z[keep], ref[keep])  # resampling touches only the rejected entries
    # variance of N(0, 1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1)
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    var = 1 - 2 * phi / math.erf(1 / math.sqrt(2))
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - var) < 0.01


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "0.5"])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        sampling.truncated_normal(torch.Generator(), (2,), bad)
    with pytest.raises(TypeError, match="torch.Generator"):
        sampling.truncated_normal(0, (2,), 1.0)
