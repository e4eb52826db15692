"""Conditional figures: intra-class FD and class accuracy (ganfn.metrics.conditional)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn.metrics as M
from ganfn import data as gdata

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    return M.lenet_extractor("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def clusters(k: int, n: int, d: int, seed: int, spread: float = 5.0):
    g = torch.Generator().manual_seed(seed)
    # Well-separated centres (>= 2 * spread apart on the first axis): rotating the labels must move every class.
    centers = spread * torch.randn(k, d, generator=g, dtype=torch.float64)
    centers[:, 0] = 2 * spread * torch.arange(k, dtype=torch.float64)
    y = torch.arange(n) % k
    return centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y


@given(k=st.integers(2, 5), d=st.integers(1, 4), seed=st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_intra_fd_sees_labels_that_overall_fd_cannot(k, d, seed):
    real, y = clusters(k, 60 * k, d, seed)
    fake, yf = clusters(k, 60 * k, d, seed)  # the same set, correctly labelled
    mean, per = M.intra_class_frechet_distance(fake, yf, real, y)
    assert per.shape == (k,) and float(mean) == pytest.approx(0.0, abs=1e-9)
    # The same samples with the labels rotated: the overall FD is unchanged, the intra-class one is large.
    rotated = (yf + 1) % k
    bad, _ = M.intra_class_frechet_distance(fake, rotated, real, y)
    assert float(M.frechet_distance(fake, real)) == pytest.approx(0.0, abs=1e-9)
    assert float(bad) > 1.0


def test_class_accuracy_counts_argmax_hits():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert float(M.class_accuracy(probs, torch.tensor([0, 1, 1, 1]))) == pytest.approx(0.75)
    assert float(M.class_accuracy(probs.log(), torch.tensor([1, 0, 1, 0]))) == pytest.approx(0.0)


def test_real_digits_score_high_and_mislabelled_ones_low(lenet):
    x, y = gdata.digits("test", labels=True)
    good = M.evaluate_conditional_images(x, y, x, y, lenet)
    assert set(good) == {"intra-FD-LeNet(digits)", "class-acc-LeNet(digits)"}
    assert good["class-acc-LeNet(digits)"] > 0.95 and good["intra-FD-LeNet(digits)"] < 1e-6
    bad = M.evaluate_conditional_images(x, (y + 3) % 10, x, y, lenet)
    assert bad["class-acc-LeNet(digits)"] < 0.1 and bad["intra-FD-LeNet(digits)"] > 1.0
    # Train digits against held-out ones: a real, non-zero but small figure.
    xt, yt = gdata.digits("train", labels=True)
    train = M.evaluate_conditional_images(xt, yt, lenet(x), y, lenet)
    assert 0 < train["intra-FD-LeNet(digits)"] < 0.2 * bad["intra-FD-LeNet(digits)"]


def test_stacked_equals_each_member(lenet):
    x, y = gdata.digits("test", labels=True)
    g = torch.Generator().manual_seed(0)
    fake = torch.stack([x, (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)])
    stacked = M.evaluate_stacked_conditional_images(fake, y, x, y, lenet)
    for i in range(2):
        single = M.evaluate_conditional_images(fake[i], y, x, y, lenet)
        for k, v in single.items():
            assert float(stacked[k][i]) == pytest.approx(v, rel=1e-6, abs=1e-9)


def test_inception_names_have_no_class_accuracy():
    ext = M.FunctionExtractor(lambda im: (im.flatten(1).double(), torch.ones(im.shape[0], 3) / 3), "inc",
                              kind="inception")
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 2
    out = M.evaluate_conditional_images(x, y, x, y, ext)
    assert set(out) == {"intra-FID"}


def test_bad_labels_rejected():
    f = torch.randn(6, 2, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match="int64"):
        M.intra_class_frechet_distance(f, y.float(), f, y)
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        M.class_accuracy(torch.randn(6, 3), y[:5])
    with pytest.raises(ValueError, match="class 2 has 1 generated"):
        M.intra_class_frechet_distance(f, torch.tensor([0, 0, 1, 1, 2, 1]), f, y)
