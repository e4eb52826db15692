"""ganfn.labels: the label distribution of a conditional GAN, its draws and checks."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfn import labels as L


@given(k=st.integers(2, 12), n=st.integers(1, 3), b=st.integers(1, 64), seed=st.integers(0, 2**31))
def test_uniform_draws_are_in_range_and_reproducible(k, n, b, seed):
    spec = L.class_labels(k)
    y = L.draw_labels(spec, torch.Generator().manual_seed(seed), n, b)
    assert y.dtype == torch.int64 and y.shape == (n, b) and int(y.min()) >= 0 and int(y.max()) < k
    assert torch.equal(y, L.draw_labels(spec, torch.Generator().manual_seed(seed), n, b))


def test_class_frequencies_are_followed():
    spec = L.class_labels(3, [2.0, 0.0, 6.0])
    assert torch.allclose(spec.probs, torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64))
    y = L.draw_labels(spec, torch.Generator().manual_seed(0), 2, 4000)
    counts = torch.bincount(y.flatten(), minlength=3).double() / y.numel()
    assert counts[1] == 0 and abs(float(counts[0]) - 0.25) < 0.02


@pytest.mark.parametrize("k, probs, match", [(1, None, "num_classes"), (2.0, None, "num_classes"), (True, None, "num_classes"),
                                             (3, [1.0, 1.0], "shape"), (2, [1.0, -1.0], "non-negative"),
                                             (2, [0.0, 0.0], "not all zero"), (2, [float("nan"), 1.0], "finite")])
def test_bad_specs_rejected(k, probs, match):
    with pytest.raises(ValueError, match=match):
        L.class_labels(k, probs)


def test_check_labels_catches_each_mistake():
    L.check_labels(torch.tensor([0, 2, 1]), 3, (3,), "labels")  # fine
    with pytest.raises(TypeError, match="float32.*long"):
        L.check_labels(torch.tensor([0.0, 1.0, 1.0]), 3, (3,), "labels")
    with pytest.raises(TypeError, match="int64"):
        L.check_labels([0, 1, 2], 3, (3,), "labels")
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        L.check_labels(torch.tensor([[0, 1, 2]]), 3, (3,), "labels")
    with pytest.raises(ValueError, match=r"\[0, 3\].*num_classes=3"):
        L.check_labels(torch.tensor([0, 3, 1]), 3, (3,), "real labels")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        L.check_labels(torch.tensor([0, -1, 1]), 3, (3,), "real labels")
    # Under a transform only metadata is checked (the values are not readable).
    torch.func.vmap(lambda y: L.check_labels(y, 3, (2,), "labels") or y)(torch.tensor([[0, 5], [1, 2]]))


def test_class_rows():
    assert L.class_rows(3, 2).tolist() == [0, 0, 1, 1, 2, 2]
    assert L.rows_for(64, 10) == 7 and L.rows_for(5, 10) == 1
