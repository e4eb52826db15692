"""Fashion-MNIST as a benchmark: the IDX reader on files the test writes, and the FD-LeNet(fashion-mnist) evaluator."""

import pytest
import torch

from ganfn import data, metrics
from ganfn import presets as P

torch.set_num_threads(1)


@pytest.fixture
def fashion_root(fake_data_root):
    """Debian's file names, gzipped (tests/conftest.py)."""
    return fake_data_root / "fashion-mnist"


def test_reads_debian_layout(fashion_root):
    x, y = data.fashion_mnist(fashion_root, "train", labels=True)
    assert x.shape == (120, 1, 28, 28) and y.shape == (120,) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() == 1
    assert data.fashion_mnist(fashion_root, "all").shape[0] == 160


def test_lenet_for_fashion_is_cached_with_a_checksum(fashion_root, tmp_path):
    ext = metrics.lenet_extractor("fashion-mnist", root=fashion_root, cache_dir=tmp_path, epochs=2)
    assert ext.name == "LeNet(fashion-mnist)"
    cached = list(tmp_path.glob("lenet-fashion-mnist-*.pt"))
    assert len(cached) == 1 and cached[0].with_name(cached[0].name + ".sha256").is_file()
    again = metrics.lenet_extractor("fashion-mnist", root=fashion_root, cache_dir=tmp_path, epochs=2)
    x = data.fashion_mnist(fashion_root, "test")
    assert torch.equal(ext(x).features, again(x).features)
    cached[0].write_bytes(cached[0].read_bytes()[:-1] + b"x")  # corrupt: refused, not used
    with pytest.raises(metrics.CacheChecksumError, match="corrupted"):
        metrics.lenet_extractor("fashion-mnist", root=fashion_root, cache_dir=tmp_path, epochs=2)
    with pytest.raises(ValueError, match="root= names the Fashion-MNIST files"):
        metrics.lenet_extractor("digits", root=fashion_root)


def test_fashion_evaluator_reports_fd_lenet_with_sample_count(fashion_root, tmp_path, monkeypatch):
    monkeypatch.setenv("GANFN_CACHE", str(tmp_path))
    cfg = P.Config(data="fashion_mnist", data_root=str(fashion_root), n_eval=30)
    ev = P.make_evaluator(cfg)
    assert ev.primary == "FD-LeNet(fashion-mnist)" and not ev.higher_is_better
    real = data.fashion_mnist(fashion_root, "test")
    figs = ev.fn(real[:30])
    noise = ev.fn(torch.rand(30, 1, 28, 28) * 2 - 1)
    assert figs["n"] == 30 and figs["n_ref"] == 40
    assert figs["FD-LeNet(fashion-mnist)"] < noise["FD-LeNet(fashion-mnist)"]


@pytest.mark.system_data
@pytest.mark.skipif(not data.roots.fashion_mnist_root().is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_package_files_when_present():
    x, y = data.fashion_mnist(split="test", labels=True)
    assert x.shape == (10_000, 1, 28, 28) and sorted(y.unique().tolist()) == list(range(10))
