"""FD-RandConv (ganfn.metrics.random_features), the folder evaluator and the protocol card."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ganfn import data as D
from ganfn import metrics
from ganfn import presets as P
from ganfn.metrics.card import ProtocolCard, weights_hash
from ganfn.presets_folder import folder_evaluator

torch.set_num_threads(1)


def _blobs(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth images in [-1, 1]: a Gaussian blob at a random place (structure noise lacks)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * size
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    d2 = (yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2
    return (torch.exp(-d2 / (2 * (size / 6) ** 2)) * 2 - 1)[:, None]


@given(st.integers(1, 5), st.sampled_from([1, 3]), st.integers(4, 40))
def test_extractor_shapes_and_uint8_equals_float(n, c, size):
    ext = metrics.random_conv_extractor()
    x8 = torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(size), dtype=torch.uint8)
    f = ext(x8).features
    assert f.shape == (n, 112) and torch.isfinite(f).all()
    assert torch.allclose(f, ext(D.to_unit_range(x8)).features)
    grey = D.to_unit_range(x8[:, :1])
    # grey == RGB with equal channels
    assert torch.allclose(ext(grey).features, ext(grey.expand(-1, 3, -1, -1)).features)


def test_extractor_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="1 or 3"):
        metrics.random_conv_extractor()(torch.zeros(2, 2, 8, 8))


def test_weights_are_fixed_by_the_seed_and_hashed():
    a, b, other = metrics.random_conv_extractor(0), metrics.random_conv_extractor(0), metrics.random_conv_extractor(1)
    assert a.weights_sha256 == b.weights_sha256 != other.weights_sha256
    changed = dict(a.params)
    changed["conv0.bias"] = changed["conv0.bias"].clone()
    changed["conv0.bias"][0] += 1e-7
    assert weights_hash(changed) != a.weights_sha256  # one value changed: another hash
    renamed = {("x" + k): v for k, v in a.params.items()}
    assert weights_hash(renamed) != a.weights_sha256


def test_folder_figure_is_lower_for_real_than_noise_and_deterministic():
    real = _blobs(200, 16, 0)
    ev = folder_evaluator(real, 100, "blobs")
    same_kind = ev.fn(_blobs(100, 16, 1))
    noise = ev.fn(torch.rand(100, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1)
    assert same_kind["FD-RandConv"] < noise["FD-RandConv"] / 10
    assert ev.fn(_blobs(100, 16, 1)) == same_kind  # the same figure twice
    assert folder_evaluator(real, 100, "blobs").fn(_blobs(100, 16, 1)) == same_kind  # and from a new evaluator
    card = ev.card
    assert (card.figure, card.n_generated, card.n_reference) == ("FD-RandConv", 100, 200)
    assert card.weights_sha256 == metrics.random_conv_extractor().weights_sha256


def test_folder_evaluator_reads_an_image_source_and_needs_two_images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    src = D.images_source(tmp_path, 8, workers=0)
    ev = folder_evaluator(src, 6, str(tmp_path))
    assert ev.card.n_reference == 5 and "3x8x8" in ev.card.reference
    figs = ev.fn(torch.rand(6, 3, 8, 8) * 2 - 1)
    assert math.isfinite(figs["FD-RandConv"]) and figs["n"] == 6
    with pytest.raises(ValueError, match=">= 2 reference images"):
        folder_evaluator(D.images_source(tmp_path, 8, workers=0, max_images=1), 6, str(tmp_path))


def test_card_line_names_every_field():
    card = ProtocolCard("FD-X", "net Y", "ab" * 32, "bilinear to 9x9", 50, None, "split Z")
    line = card.line()
    for part in ("FD-X", "net Y", "abababab", "bilinear to 9x9", "50 generated", "? reference", "split Z"):
        assert part in line
    assert card._replace(n_generated=7).line() != line


def test_digits_evaluator_carries_the_lenet_card(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFN_CACHE", str(tmp_path))
    ev = P.make_evaluator(P.Config(data="digits"), 50)
    ext = metrics.lenet_extractor("digits", cache_dir=tmp_path)
    assert ev.card.figure == "FD-LeNet(digits)" and ev.card.n_reference == 397 and ev.card.n_generated == 50
    assert ev.card.weights_sha256 == weights_hash(ext.params) and "test split" in ev.card.reference
    assert P.make_evaluator(P.Config(data="ring8")).card is None  # mode coverage has no extractor
