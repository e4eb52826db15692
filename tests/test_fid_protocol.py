"""FID as pytorch-fid computes it, with one weights file for both; KID as torch-fidelity draws it.

No real Inception weights are available offline, so the weights file is a
FID-Inception network with random weights saved in pytorch-fid's format;
pytorch-fid is made to read that file instead of downloading its own.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ganfn import metrics as M
from ganfn.metrics import fid_protocol as FID
from ganfn.metrics.inception import quantize

torch.set_num_threads(1)
pfid_inception = pytest.importorskip("pytorch_fid.inception")
pfid_score = pytest.importorskip("pytorch_fid.fid_score")


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """A random FID-Inception state dict in pytorch-fid's file format."""
    torch.manual_seed(0)  # test fixture only: the library never reads the global RNG
    net = pfid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    # Random weights shrink the signal layer by layer until every image gives the
    # same features. Calibrating the batch-norm statistics on random images keeps
    # each layer at unit scale, so the features depend on the input.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        net.train()(torch.randn(3, 3, 299, 299))
    sd = net.state_dict()
    path = tmp_path_factory.mktemp("fidw") / "pt_inception-random.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def pytorch_fid_model(fid_weights):
    original = pfid_inception.load_state_dict_from_url
    pfid_inception.load_state_dict_from_url = lambda *a, **k: torch.load(fid_weights, weights_only=True)
    try:
        model = pfid_inception.InceptionV3([pfid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfid_inception.load_state_dict_from_url = original
    return model


def _png_folder(root, images):
    """Save float images [N, C, H, W] in [-1, 1] as PNGs the way torchvision.utils.save_image does."""
    root.mkdir()
    files = []
    for i, img in enumerate(quantize(images)):
        arr = img.permute(1, 2, 0).numpy()
        path = root / f"{i:03d}.png"
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
        files.append(str(path))
    return files


@pytest.mark.slow
def test_features_stats_and_fid_equal_pytorch_fid(tmp_path, fid_weights, pytorch_fid_model):
    g = torch.Generator().manual_seed(1)
    fake = torch.rand(5, 3, 24, 24, generator=g) * 2 - 1  # generated floats: quantised like a PNG
    real = (torch.rand(6, 1, 20, 20, generator=g) * 2 - 1)  # greyscale: repeated to RGB like convert("RGB")
    fake_files = _png_folder(tmp_path / "fake", fake)
    real_files = _png_folder(tmp_path / "real", real)
    ext = M.inception_extractor(fid_weights)

    theirs_fake = pfid_score.get_activations(fake_files, pytorch_fid_model, batch_size=5, dims=2048, device="cpu")
    ours_fake = ext(fake).features
    np.testing.assert_allclose(ours_fake.numpy(), theirs_fake, rtol=1e-4, atol=1e-5)

    mu_t, s_t = pfid_score.calculate_activation_statistics(real_files, pytorch_fid_model, batch_size=6, device="cpu")
    ours_real = FID.fid_stats(real, ext)
    assert ours_real.n == 6 and ours_real.mu.dtype == torch.float64
    np.testing.assert_allclose(ours_real.mu.numpy(), mu_t, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours_real.sigma.numpy(), s_t, rtol=1e-3, atol=1e-6)

    mu_f, s_f = pfid_score.calculate_activation_statistics(fake_files, pytorch_fid_model, batch_size=5, device="cpu")
    theirs = pfid_score.calculate_frechet_distance(mu_f, s_f, mu_t, s_t)
    ours = FID.fid(fake, ours_real, ext)
    assert ours["n"] == 5 and ours["n_ref"] == 6
    assert ours["FID"] == pytest.approx(theirs, rel=1e-4)

    # The uint8 step matters: the unquantised float path gives other features.
    x = (fake + 1) / 2
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        unquantised = ext.net(x)
    assert not torch.allclose(unquantised, ours_fake, rtol=1e-6, atol=1e-7)


@given(st.integers(2, 6), st.integers(0, 1000))
def test_fd_formula_equals_pytorch_fid(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3 * d, d, generator=g, dtype=torch.float64)
    b = torch.randn(3 * d, d, generator=g, dtype=torch.float64) * 2 + 1
    sa, sb = M.feature_stats(a), M.feature_stats(b)
    theirs = pfid_score.calculate_frechet_distance(sa[0].numpy(), sa[1].numpy(), sb[0].numpy(), sb[1].numpy())
    assert float(M.frechet_distance_from_stats(*sa, *sb)) == pytest.approx(theirs, rel=1e-8, abs=1e-9)


def test_npz_round_trips_through_pytorch_fid_reader(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    stats = FID.FIDStats(*M.feature_stats(x), 40)
    path = FID.save_stats(tmp_path / "ref.npz", stats)
    # pytorch-fid's own reader of a statistics path (model unused for .npz files).
    mu, sigma = pfid_score.compute_statistics_of_path(str(path), None, 50, 2048, "cpu")
    np.testing.assert_array_equal(mu, stats.mu.numpy())
    np.testing.assert_array_equal(sigma, stats.sigma.numpy())
    back = FID.load_stats(path)
    assert back.n == 40 and torch.equal(back.mu, stats.mu) and torch.equal(back.sigma, stats.sigma)
    # A file pytorch-fid wrote (no "n"): read, n unknown.
    np.savez_compressed(tmp_path / "theirs.npz", mu=mu, sigma=sigma)
    assert FID.load_stats(tmp_path / "theirs.npz").n is None


def test_stats_files_reject_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        FID.load_stats(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="expected 'mu' and 'sigma'"):
        FID.load_stats(tmp_path / "other.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"mu must be \[d\] and sigma \[d, d\]"):
        FID.load_stats(tmp_path / "shape.npz")
    with pytest.raises(ValueError, match=r"\.npz"):
        FID.save_stats(tmp_path / "x.txt", FID.FIDStats(torch.zeros(2), torch.eye(2), 2))


def test_fid_names_other_features_honestly_and_checks_dims():
    ext = M.FunctionExtractor(lambda im: im.flatten(1).double(), "pixels")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, 1, 2, 2, generator=g), torch.rand(12, 1, 2, 2, generator=g)
    out = FID.fid(a, b, ext)
    assert set(out) == {"FD-pixels", "n", "n_ref"} and out["n"] == 10 and out["n_ref"] == 12
    assert out["FD-pixels"] == pytest.approx(float(M.frechet_distance(a.flatten(1), b.flatten(1))))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        FID.fid(a, FID.FIDStats(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), 5), ext)


@given(st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=1, max_size=50))
def test_quantize_is_save_image(values):
    # The rule restated below is torchvision.utils.save_image's.
    x = torch.tensor(values).reshape(1, 1, 1, -1)
    ref = ((x + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    assert torch.equal(quantize(x), ref)
    assert torch.equal(quantize(ref), ref)  # uint8 passes through
    with pytest.raises(TypeError, match="uint8 or floating point"):
        quantize(torch.zeros(1, 1, 1, 1, dtype=torch.int32))


def test_kid_equals_torch_fidelity():
    tf_kid = pytest.importorskip("torch_fidelity.metric_kid")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 16, generator=g, dtype=torch.float64)
    y = torch.randn(50, 16, generator=g, dtype=torch.float64) + 0.3
    theirs = tf_kid.kid_features_to_metric(x, y, kid_subsets=7, kid_subset_size=40, verbose=False)
    mean, std = M.kernel_inception_distance(x, y, subsets=7, subset_size=40)
    assert float(mean) == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert float(std) == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-8)
    # A different seed gives different subsets (the comparison can fail).
    other, _ = M.kernel_inception_distance(x, y, subsets=7, subset_size=40, generator=1)
    assert not math.isclose(float(other), float(mean), rel_tol=1e-6)


@pytest.mark.slow
def test_cli_eval_with_fid_weights_caches_reference_stats(tmp_path, fid_weights, capsys):
    from ganfn import cli

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(folder), "--image-size", "8", "--model", "mlp", "--steps", "2",
                     "--batch-size", "4", "--data-workers", "0", "--flip", "--no-progress", "--run-dir", str(run)]) == 0
    stats = tmp_path / "ref.npz"
    argv = ["eval", str(run), "--fid-weights", str(fid_weights), "--fid-ref-stats", str(stats), "--n-eval", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "FID " in out and "n 3" in out and "n_ref 6" in out and "KID " in out
    mu, sigma = pfid_score.compute_statistics_of_path(str(stats), None, 50, 2048, "cpu")  # pytorch-fid reads it
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    before = stats.stat().st_mtime_ns
    assert cli.main(argv) == 0  # the second eval reads the cached statistics
    assert stats.stat().st_mtime_ns == before
    assert capsys.readouterr().out.split("FID ")[1][:8] == out.split("FID ")[1][:8]
    with pytest.raises(SystemExit):
        cli.main(["eval", str(run), "--fid-weights", str(tmp_path / "missing.pth")])
    assert "Inception weights not found" in capsys.readouterr().err
