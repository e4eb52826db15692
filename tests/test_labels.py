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


@pytest.mark.parametrize("k, probs, match",
                         [(1, None, "num_classes"), (2.0, None, "num_classes"), (True, None, "num_classes"),
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


def test_how_each_setup_passes_labels():
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 2])
    none, cls = L.class_labels(None), L.class_labels(3)
    assert isinstance(none, L.NoLabels) and none.num_classes is None
    assert none.split(x) == (x, ()) and none.join(x, ()) is x and none.args(None, 3) == () and none.rows(5) is None
    assert none.draw(torch.Generator(), 2, 3) == () and none.probe(2, None) == ()
    xs, (ys,) = cls.split((x, y))
    assert xs is x and ys is y and cls.join(x, (y,)) == (x, y)
    assert cls.args(y, 3) == (y,) and cls.probe(2, None)[0].tolist() == [0, 0]
    assert cls.rows(7).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    (d,) = cls.draw(torch.Generator().manual_seed(0), 2, 5)
    assert d.shape == (2, 5)


def test_label_passing_mistakes_are_named():
    none, cls = L.class_labels(None), L.class_labels(3)
    with pytest.raises(TypeError, match="unconditional.*pair"):
        none.split((torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64)))
    with pytest.raises(ValueError, match="unconditional"):
        none.args(torch.zeros(2, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match=r"\(images, labels\) pair, got a tensor"):
        cls.split(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="pass the classes"):
        cls.args(None, 2)
    with pytest.raises(ValueError, match="values in"):
        cls.args(torch.tensor([0, 3]), 2)
    with pytest.raises(ValueError, match="class_probs needs num_classes"):
        L.class_labels(None, [1.0, 1.0])
